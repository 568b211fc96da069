"""Attribution reasons: why a dimension was rated Bad–Fair.

The Q-Save paper's own list is not public; this one follows the artefacts named in AIGV quality work
(VBench, EvalCrafter, VideoScore) and is what the synthetic corpus renders. Codes are stable
identifiers written into manifests and model answers; add a reason by appending a :class:`Reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Reason:
    code: str
    dimension: str
    description: str


TAXONOMY: Final[tuple[Reason, ...]] = (
    # Visual quality: what a single frame shows.
    Reason("blur", "vq", "soft, out-of-focus or smeared detail"),
    Reason("noise", "vq", "grain or sensor-like noise over the image"),
    Reason("compression_blocks", "vq", "blocky compression artefacts and banding"),
    Reason("low_detail", "vq", "flat, posterised surfaces with few distinct tones"),
    Reason("color_distortion", "vq", "wrong or shifted colours, colour casts"),
    Reason("exposure", "vq", "over- or under-exposed, washed-out or crushed tones"),
    Reason("structural_deformation", "vq", "malformed objects or broken shapes within a frame"),
    # Motion quality: what only shows across frames.
    Reason("jitter", "mq", "shaky, jumping object or camera position between frames"),
    Reason("flicker", "mq", "brightness or colour pulsing from frame to frame"),
    Reason("freeze_stutter", "mq", "frames that freeze, repeat or skip"),
    Reason("unnatural_motion", "mq", "motion that breaks physics or moves implausibly"),
    Reason("morphing", "mq", "objects that change shape or size while they move"),
    Reason("speed_inconsistency", "mq", "motion that speeds up and slows down erratically"),
    # Text-video alignment: what the prompt asked for and the video does not show.
    Reason("missing_object", "ta", "an object named in the prompt does not appear"),
    Reason("wrong_color", "ta", "an object has a different colour than the prompt says"),
    Reason("wrong_shape", "ta", "an object has a different shape or kind than the prompt says"),
    Reason("wrong_count", "ta", "the number of objects differs from the prompt"),
    Reason("wrong_direction", "ta", "an object moves in a different direction or way than the prompt says"),
    Reason("wrong_scene", "ta", "the background, scene or style differs from the prompt"),
)

_BY_CODE: Final = {r.code: r for r in TAXONOMY}


def reasons_for(dimension: str) -> tuple[Reason, ...]:
    """The reasons of one dimension, in taxonomy order."""
    return tuple(r for r in TAXONOMY if r.dimension == dimension)


def codes_for(dimension: str) -> tuple[str, ...]:
    return tuple(r.code for r in reasons_for(dimension))


def get_reason(code: str) -> Reason:
    try:
        return _BY_CODE[code]
    except KeyError as exc:
        raise KeyError(f"unknown reason code {code!r}; known: {', '.join(_BY_CODE)}") from exc


def is_known(code: str, dimension: str | None = None) -> bool:
    reason = _BY_CODE.get(code)
    return reason is not None and (dimension is None or reason.dimension == dimension)
