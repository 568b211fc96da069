"""SlowFast frame sampling for Qwen3-VL: which frames, at what size, for how many visual tokens.

A clip is sampled in a window (its start, up to ``max_duration_s``) at a target rate (8 fps, as in
Q-Save). From those sampled frames two *pathways* are built, each fed to the model as its own video
segment:

- **fast**: every sampled frame, at low resolution;
- **slow**: a few of them (``slow_frames``, default 4) at high resolution.

Qwen3-VL fuses two consecutive frames into one temporal patch, so both pathways are made of adjacent
*pairs*: pair k is sampled frames (2k, 2k+1), one sampling interval apart, and every pathway has an even
frame count. The slow pathway takes whole pairs spread evenly over the window, so its patches see motion
too. Sizes keep the source's aspect ratio, snap to multiples of 32 (patch 16 × spatial merge 2) and never
upscale; the fast long side is at most ``fast_long_side / slow_long_side`` of the slow one, so a source
smaller than the slow target still gets a proportionally cheaper fast pathway. A segment of T frames at
H×W costs ⌈T/2⌉·(H/32)·(W/32) visual tokens.

**Token budget** (``max_visual_tokens``, both segments together). When the plan exceeds it, the sampler
in turn (1) lowers the fast pathway's long side in steps of 32 down to ``fast_min_long_side``, (2) keeps
fewer fast pairs, spread evenly (pairs stay adjacent frames), down to one, (3) as a last resort lowers the
slow pathway's long side, then the fast one's, down to 32. A config whose budget cannot hold even one
token per pair is rejected when it is built.

**Timestamps** are ``source_index / source_fps`` in seconds — what the Qwen3-VL processor computes from
``VideoMetadata(fps=source_fps, frames_indices=source_indices)``. With variable frame rate sources the
rate is the container's average (``VideoInfo.fps``), so indices and times are approximate to one frame.

**Decoding**: one :func:`qsave.video.read_frames` pass decodes the union of both pathways' frames at
the slow size; fast frames are downscaled from those in memory (measured faster than two decode passes,
see ``benchmarks/README.md``). :func:`sample_uniform` is the Qwen3-VL default path kept for comparison:
every sampled frame at the slow resolution, no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from qsave.versioning import config_hash
from qsave.video import DecodeLimits, VideoInfo, probe, read_frames

if TYPE_CHECKING:
    import os

SAMPLER_VERSION = 1
"""Bumped whenever the sampling algorithm changes, so cached clips made by an older one are not reused."""

PATCH_FACTOR = 32
"""Qwen3-VL's spatial token size in pixels: patch size 16 × spatial merge 2."""

TEMPORAL_PATCH = 2
"""Frames fused into one temporal patch by Qwen3-VL."""


@dataclass(frozen=True)
class SamplerConfig:
    """Every knob of the SlowFast sampler. Defaults are the production sizes for Qwen3-VL-8B.

    The fast pathway's default long side (160) gives each fast frame about 1/8 of a slow frame's
    tokens, the fast/slow capacity ratio of SlowFast networks (β = 1/8); see :data:`LOCAL_SAMPLER` for
    the small sizes used with the tiny local model.
    """

    fps: float = 8.0
    """Target sampling rate; a source slower than this is sampled at its own rate (no duplicates)."""
    max_duration_s: float = 10.0
    """Window length: the clip from its start, up to this many seconds."""
    slow_frames: int = 4
    """Frames in the slow pathway (even: ``slow_frames / 2`` adjacent pairs)."""
    slow_long_side: int = 448
    """Target long side of slow frames in pixels (snapped to a multiple of 32, never above the source)."""
    fast_long_side: int = 160
    """Target long side of fast frames in pixels (snapped to a multiple of 32, never above the source)."""
    fast_min_long_side: int = 96
    """The budget may lower the fast long side down to this before it drops fast pairs."""
    max_visual_tokens: int = 1536
    """Budget for both segments together (slow + fast visual tokens)."""

    def __post_init__(self) -> None:
        problems = []
        if not (self.fps > 0 and math.isfinite(self.fps)):
            problems.append(f"fps must be positive, got {self.fps}")
        if not (self.max_duration_s > 0 and math.isfinite(self.max_duration_s)):
            problems.append(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.slow_frames < TEMPORAL_PATCH or self.slow_frames % TEMPORAL_PATCH:
            problems.append(
                f"slow_frames must be a positive even number (whole pairs), got {self.slow_frames}"
            )
        for name in ("slow_long_side", "fast_long_side", "fast_min_long_side"):
            if getattr(self, name) < PATCH_FACTOR:
                problems.append(f"{name} must be at least {PATCH_FACTOR}, got {getattr(self, name)}")
        if self.fast_long_side > self.slow_long_side:
            problems.append(
                f"fast_long_side ({self.fast_long_side}) must not exceed "
                f"slow_long_side ({self.slow_long_side})"
            )
        if self.fast_min_long_side > self.fast_long_side:
            problems.append(
                f"fast_min_long_side ({self.fast_min_long_side}) must not exceed "
                f"fast_long_side ({self.fast_long_side})"
            )
        least = self.slow_frames // TEMPORAL_PATCH + 1
        if self.max_visual_tokens < least:
            problems.append(
                f"max_visual_tokens ({self.max_visual_tokens}) cannot hold one token per slow pair plus one "
                f"fast pair: raise it to at least {least}"
            )
        if problems:
            raise ValueError("invalid SamplerConfig: " + "; ".join(problems))

    def fingerprint(self) -> str:
        """Short hash of this config and the sampler version: the cache key's config part."""
        return config_hash({"sampler_version": SAMPLER_VERSION, "config": self})


LOCAL_SAMPLER = SamplerConfig(
    slow_long_side=128, fast_long_side=64, fast_min_long_side=64, max_visual_tokens=256
)
"""Small sizes for the tiny local model and CI (8 frames of 128×128 → 64 visual tokens uniformly)."""


def snap_size(width: int, height: int, long_side: int, multiple: int = PATCH_FACTOR) -> tuple[int, int]:
    """``(width, height)`` with the long side near ``long_side``, aspect kept, both multiples of ``multiple``.

    The long side is ``min(long_side, source long side)`` rounded to the nearest multiple (never below
    one multiple); the short side is scaled by the same factor and rounded the same way. Works for
    landscape, portrait, square and odd sizes.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot size frames of {width}×{height}: both sides must be positive")
    src_long, src_short = max(width, height), min(width, height)
    target = min(long_side, src_long)
    new_long = max(multiple, round(target / multiple) * multiple)
    new_short = max(multiple, round(src_short * new_long / src_long / multiple) * multiple)
    return (new_long, new_short) if width >= height else (new_short, new_long)


def segment_tokens(num_frames: int, width: int, height: int) -> int:
    """Qwen3-VL visual tokens of one video segment: ⌈T/2⌉·(H/32)·(W/32)."""
    if width % PATCH_FACTOR or height % PATCH_FACTOR:
        raise ValueError(f"frame size {width}×{height} is not a multiple of {PATCH_FACTOR}")
    return math.ceil(num_frames / TEMPORAL_PATCH) * (height // PATCH_FACTOR) * (width // PATCH_FACTOR)


def window_frames(num_frames: int, source_fps: float, cfg: SamplerConfig) -> int:
    """Source frames in the window: the first ``max_duration_s`` seconds, or the whole clip."""
    return min(num_frames, max(1, math.floor(cfg.max_duration_s * source_fps + 1e-6)))


def sample_indices(num_frames: int, source_fps: float, cfg: SamplerConfig) -> tuple[np.ndarray, float]:
    """Source frame indices sampled at the target rate in the window, and the rate actually used.

    Sample k is the source frame nearest to time k / rate, where rate = min(cfg.fps, source_fps); the
    window is the first ``max_duration_s`` seconds (or the whole clip). The count is made even (whole
    pairs) by dropping the last sample; a one-frame clip gives that frame twice.
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample a clip with {num_frames} frames")
    if not (source_fps > 0 and math.isfinite(source_fps)):
        raise ValueError(f"cannot sample a clip with frame rate {source_fps}")
    window = window_frames(num_frames, source_fps, cfg)
    rate = min(cfg.fps, source_fps)
    count = math.floor((window - 1) * rate / source_fps + 1e-6) + 1
    indices = np.floor(np.arange(count) * source_fps / rate + 0.5).astype(np.int64)
    indices = np.unique(np.minimum(indices, window - 1))
    if len(indices) == 1:
        return np.repeat(indices, TEMPORAL_PATCH), rate
    return indices[: len(indices) - len(indices) % TEMPORAL_PATCH], rate


def spread_pairs(num_pairs: int, keep: int) -> np.ndarray:
    """Indices of ``keep`` of ``num_pairs`` pairs, evenly spread (centred in equal parts of the window)."""
    keep = min(keep, num_pairs)
    return np.floor((2 * np.arange(keep) + 1) * num_pairs / (2 * keep)).astype(np.int64)


def pair_frames(indices: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The frames of the chosen pairs: pair k is ``indices[2k], indices[2k+1]``."""
    return np.stack([indices[TEMPORAL_PATCH * pairs], indices[TEMPORAL_PATCH * pairs + 1]], axis=1).reshape(
        -1
    )


@dataclass(frozen=True)
class PathwayPlan:
    """What one pathway will hold, before decoding."""

    source_indices: np.ndarray
    width: int
    height: int

    @property
    def tokens(self) -> int:
        return segment_tokens(len(self.source_indices), self.width, self.height)


@dataclass(frozen=True)
class SamplingPlan:
    """Both pathways' frames and sizes for one clip, within the token budget."""

    slow: PathwayPlan
    fast: PathwayPlan
    rate: float
    """Sampling rate used (frames per second, ≤ cfg.fps)."""
    window_s: float
    """Seconds covered by the sampled frames' window."""

    @property
    def tokens(self) -> int:
        return self.slow.tokens + self.fast.tokens


def plan_sampling(
    num_frames: int, source_fps: float, width: int, height: int, cfg: SamplerConfig
) -> SamplingPlan:
    """Choose both pathways' frames and sizes for a clip, applying the budget policy (module doc)."""
    indices, rate = sample_indices(num_frames, source_fps, cfg)
    num_pairs = len(indices) // TEMPORAL_PATCH
    slow_idx = pair_frames(indices, spread_pairs(num_pairs, cfg.slow_frames // TEMPORAL_PATCH))
    window_s = window_frames(num_frames, source_fps, cfg) / source_fps
    slow_long, fast_long, fast_pairs = cfg.slow_long_side, cfg.fast_long_side, num_pairs
    fast_scale = cfg.fast_long_side / cfg.slow_long_side

    def build() -> SamplingPlan:
        fast_idx = (
            indices if fast_pairs == num_pairs else pair_frames(indices, spread_pairs(num_pairs, fast_pairs))
        )
        sw, sh = snap_size(width, height, slow_long)
        fw, fh = snap_size(width, height, min(fast_long, round(fast_scale * max(sw, sh))))
        return SamplingPlan(PathwayPlan(slow_idx, sw, sh), PathwayPlan(fast_idx, fw, fh), rate, window_s)

    plan = build()
    while plan.tokens > cfg.max_visual_tokens and fast_long - PATCH_FACTOR >= cfg.fast_min_long_side:
        fast_long -= PATCH_FACTOR
        plan = build()
    if plan.tokens > cfg.max_visual_tokens:
        per_pair = plan.fast.tokens // num_pairs
        fast_pairs = max(1, min(num_pairs, (cfg.max_visual_tokens - plan.slow.tokens) // per_pair))
        plan = build()
    while plan.tokens > cfg.max_visual_tokens and max(slow_long, fast_long) > PATCH_FACTOR:
        if slow_long > PATCH_FACTOR:
            slow_long = max(PATCH_FACTOR, min(slow_long, max(width, height)) - PATCH_FACTOR)
        else:
            fast_long = max(PATCH_FACTOR, min(fast_long, max(width, height)) - PATCH_FACTOR)
        plan = build()
    return plan


@dataclass
class Pathway:
    """One video segment for the model.

    ``frames`` is (T, H, W, 3) uint8 RGB with T even; ``source_indices`` are the frames' indices in the
    decoded source video and ``timestamps`` their times in seconds (``source_indices / source_fps``).
    To hand it to the Qwen3-VL processor: ``videos=[frames]`` with
    ``VideoMetadata(total_num_frames=info.num_frames, fps=source_fps, frames_indices=source_indices)``,
    ``do_resize=False``, ``do_sample_frames=False``; it then costs exactly ``tokens`` visual tokens.
    """

    frames: np.ndarray
    source_indices: np.ndarray
    timestamps: np.ndarray
    source_fps: float
    fps: float
    """Effective rate: frames per second of window covered (T / window_s)."""
    tokens: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass
class SlowFastClip:
    """A clip sampled into its two segments (slow first, then fast) with the probed source info."""

    slow: Pathway
    fast: Pathway
    info: VideoInfo
    window_s: float
    config_fingerprint: str = field(default="")

    @property
    def tokens(self) -> int:
        return self.slow.tokens + self.fast.tokens


def _pathway(frames: np.ndarray, plan: PathwayPlan, source_fps: float, window_s: float) -> Pathway:
    indices = np.asarray(plan.source_indices, dtype=np.int64)
    return Pathway(
        frames=frames,
        source_indices=indices,
        timestamps=indices / source_fps,
        source_fps=source_fps,
        fps=len(indices) / window_s,
        tokens=plan.tokens,
    )


def downscale(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (N, H, W, 3) uint8 frames to ``width``×``height`` (antialiased bilinear); no-op if equal."""
    if frames.shape[1:3] == (height, width):
        return frames
    from PIL import Image

    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    return out


def sample_clip(
    path: str | os.PathLike[str], cfg: SamplerConfig | None = None, limits: DecodeLimits | None = None
) -> SlowFastClip:
    """Probe and decode a clip into its slow and fast pathways (one decode pass; see module doc).

    Raises :class:`qsave.video.VideoError` (naming the file and a reason code) when the file cannot be
    probed or decoded within ``limits``.
    """
    cfg = cfg or SamplerConfig()
    limits = limits or DecodeLimits()
    info = probe(path, limits)
    plan = plan_sampling(info.num_frames, info.fps, info.width, info.height, cfg)
    union = np.union1d(plan.slow.source_indices, plan.fast.source_indices)
    decoded = read_frames(path, union.tolist(), size=(plan.slow.width, plan.slow.height), limits=limits)
    position = {int(idx): row for row, idx in enumerate(union)}
    slow = decoded[[position[int(i)] for i in plan.slow.source_indices]]
    fast = downscale(
        decoded[[position[int(i)] for i in plan.fast.source_indices]], plan.fast.width, plan.fast.height
    )
    return SlowFastClip(
        slow=_pathway(slow, plan.slow, info.fps, plan.window_s),
        fast=_pathway(fast, plan.fast, info.fps, plan.window_s),
        info=info,
        window_s=plan.window_s,
        config_fingerprint=cfg.fingerprint(),
    )


def plan_uniform(
    num_frames: int, source_fps: float, width: int, height: int, cfg: SamplerConfig
) -> PathwayPlan:
    """The uniform path's plan: every sampled frame at the slow resolution, no budget."""
    indices, _ = sample_indices(num_frames, source_fps, cfg)
    w, h = snap_size(width, height, cfg.slow_long_side)
    return PathwayPlan(indices, w, h)


def sample_uniform(
    path: str | os.PathLike[str], cfg: SamplerConfig | None = None, limits: DecodeLimits | None = None
) -> Pathway:
    """The Qwen3-VL default path, for comparison: all frames sampled at ``cfg.fps`` at the slow size."""
    cfg = cfg or SamplerConfig()
    limits = limits or DecodeLimits()
    info = probe(path, limits)
    plan = plan_uniform(info.num_frames, info.fps, info.width, info.height, cfg)
    frames = read_frames(path, plan.source_indices.tolist(), size=(plan.width, plan.height), limits=limits)
    window_s = window_frames(info.num_frames, info.fps, cfg) / info.fps
    return _pathway(frames, plan, info.fps, window_s)
