import numpy as np
import pytest

from qsave.artefacts import (
    ARTEFACTS,
    artefact_codes,
    degrade_frames,
    deviate_scene,
    impairment,
    motion_params,
    true_scores,
)
from qsave.scenes import DrawnScene, ObjectGroup, SceneSpec, caption, describe, render
from qsave.schema import REASON_DIMENSIONS
from qsave.taxonomy import is_known

SPEC = SceneSpec(
    (ObjectGroup(2, "red", "circle", "left"), ObjectGroup(1, "yellow", "square", "up")),
    "grey studio",
    "static camera",
)


def _clip(severities: dict[str, float], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    drawn = deviate_scene(DrawnScene.from_spec(SPEC), severities, rng)
    frames = render(drawn, motion_params(severities, 24, rng), 128, 128, rng)
    return degrade_frames(frames, severities, rng)


def _laplacian_energy(frames: np.ndarray) -> float:
    g = frames.mean(axis=-1)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return float((lap**2).mean())


def _frame_change_variation(frames: np.ndarray) -> float:
    """Std over time of the mean absolute frame difference: steady motion keeps it flat."""
    change = np.abs(np.diff(frames.mean(axis=-1), axis=0)).mean(axis=(1, 2))
    return float(change.std())


def _blockiness(frames: np.ndarray) -> float:
    """Mean jump across 8-px block borders relative to the jump inside blocks."""
    g = frames.mean(axis=-1)
    jumps = np.abs(np.diff(g, axis=2)).mean(axis=(0, 1))
    border = jumps[7::8].mean()
    inside = np.delete(jumps, np.arange(7, len(jumps), 8)).mean()
    return float(border / inside)


def test_every_artefact_is_a_taxonomy_reason_and_each_dimension_has_at_least_three():
    for artefact in ARTEFACTS:
        assert is_known(artefact.code, artefact.dimension)
        assert 0.0 < artefact.weight <= 1.0
    for dim in REASON_DIMENSIONS:
        assert len(artefact_codes(dim)) >= 3


def test_blur_lowers_and_noise_raises_laplacian_energy_with_severity():
    clean = _laplacian_energy(_clip({}))
    blurred = [_laplacian_energy(_clip({"blur": s})) for s in (0.2, 0.6, 1.0)]
    noisy = [_laplacian_energy(_clip({"noise": s})) for s in (0.2, 0.6, 1.0)]
    assert clean > blurred[0] > blurred[1] > blurred[2]
    assert clean < noisy[0] < noisy[1] < noisy[2]


def test_compression_makes_block_borders_stand_out():
    assert _blockiness(_clip({"compression_blocks": 0.8})) > 1.5 * _blockiness(_clip({}))


@pytest.mark.parametrize("code", ["jitter", "flicker", "freeze_stutter", "morphing", "speed_inconsistency"])
def test_motion_artefacts_make_frame_changes_irregular(code):
    steady = _frame_change_variation(_clip({}))
    assert _frame_change_variation(_clip({code: 0.7})) > 3 * steady


def test_exposure_and_colour_distortion_shift_the_image_statistics():
    clean = _clip({})
    assert abs(_clip({"exposure": 0.9}).mean() - clean.mean()) > 0.1
    colour_shift = np.abs(_clip({"color_distortion": 0.9}).mean(axis=(0, 1, 2)) - clean.mean(axis=(0, 1, 2)))
    assert colour_shift.max() > 0.05


def test_low_detail_posterises_to_few_tones():
    tones = len(np.unique(np.round(_clip({"low_detail": 1.0})[0] * 255)))
    assert tones <= 3**3 < len(np.unique(np.round(_clip({})[0] * 255)))


def test_alignment_artefacts_change_what_the_caption_says():
    prompt = describe(SPEC)
    rng = np.random.default_rng(0)
    faithful = DrawnScene.from_spec(SPEC)
    assert caption(deviate_scene(faithful, {}, rng)) == prompt
    expectations = {
        "wrong_color": "two red",
        "wrong_shape": "circles",
        "wrong_direction": "circles moving left",
        "missing_object": "yellow square",
        "wrong_scene": "grey studio",
    }
    for code, phrase in expectations.items():
        text = caption(deviate_scene(faithful, {code: 1.0}, rng))
        assert phrase in prompt and phrase not in text, (code, text)
    assert "two red" not in caption(deviate_scene(faithful, {"wrong_count": 0.5}, rng))
    assert deviate_scene(faithful, {"wrong_direction": 1.0}, rng).groups[0].angle == 0.0


def test_true_quality_follows_the_documented_formula():
    rng = np.random.default_rng(0)
    clean = true_scores({}, rng)
    assert clean["vq"] == clean["mq"] == clean["ta"] == 5.0
    assert impairment({"blur": 0.5, "noise": 0.5}, "vq") == pytest.approx(
        1 - (1 - 0.85 * 0.5) * (1 - 0.75 * 0.5)
    )
    assert impairment({"blur": 0.5}, "mq") == 0.0
    scores = [true_scores({"jitter": s}, rng)["mq"] for s in (0.1, 0.5, 1.0)]
    assert scores[0] > scores[1] > scores[2] >= 1.0
    worst = true_scores({c.code: 1.0 for c in ARTEFACTS}, rng)
    assert all(1.0 <= worst[d] <= 2.0 for d in ("vq", "mq", "ta", "overall"))


def test_bad_severities_are_rejected_with_the_code_named():
    with pytest.raises(ValueError, match="sharpness"):
        impairment({"sharpness": 0.5}, "vq")
    with pytest.raises(ValueError, match="blur"):
        degrade_frames(np.zeros((2, 16, 16, 3), np.float32), {"blur": 1.5}, np.random.default_rng(0))


def test_morphing_changes_object_size_over_time():
    def red_area(frames: np.ndarray) -> np.ndarray:
        r, g, b = frames[..., 0], frames[..., 1], frames[..., 2]
        return ((r > 0.55) & (g < 0.35) & (b < 0.35)).sum(axis=(1, 2))

    assert red_area(_clip({"morphing": 0.8})).std() > 5 * red_area(_clip({})).std() + 10
