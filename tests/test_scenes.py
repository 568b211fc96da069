from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import label

from qsave.scenes import (
    _CLASHES,
    BACKGROUNDS,
    CAMERAS,
    DrawnScene,
    MotionParams,
    ObjectGroup,
    SceneSpec,
    caption,
    describe,
    render,
    sample_scene,
)


def _scene(direction="left", count=1, shape="circle", camera="static camera"):
    return SceneSpec((ObjectGroup(count, "red", shape, direction),), "grey studio", camera)


def _object_mask(spec: SceneSpec, seed: int = 0) -> np.ndarray:
    """Pixels where the objects are: the render minus the same render with the objects faded out."""
    drawn = DrawnScene.from_spec(spec)
    motion = MotionParams.steady(24)
    frames = render(drawn, motion, 128, 128, np.random.default_rng(seed))
    hidden = replace(drawn, groups=tuple(replace(g, opacity=0.0) for g in drawn.groups))
    empty = render(hidden, motion, 128, 128, np.random.default_rng(seed))
    return np.abs(frames - empty).sum(axis=-1) > 0.3


def test_prompt_grammar_is_small_and_regular():
    spec = SceneSpec(
        (ObjectGroup(2, "red", "circle", "left"), ObjectGroup(1, "yellow", "square", "up")),
        "blue sky",
        "static camera",
    )
    assert describe(spec) == (
        "two red circles moving left and one yellow square moving up over a blue sky background, "
        "static camera"
    )


def test_sampled_scenes_avoid_low_contrast_colours_and_caption_matches_a_faithful_render():
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = sample_scene(rng)
        assert spec.background in BACKGROUNDS
        assert all(g.color not in _CLASHES[spec.background] for g in spec.groups)
        assert caption(DrawnScene.from_spec(spec)) == describe(spec)


def test_render_is_float_frames_in_range_and_deterministic_for_a_seed():
    drawn = DrawnScene.from_spec(sample_scene(np.random.default_rng(1)))
    a = render(drawn, MotionParams.steady(24), 128, 96, np.random.default_rng(5))
    b = render(drawn, MotionParams.steady(24), 128, 96, np.random.default_rng(5))
    assert a.shape == (24, 96, 128, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("direction", "axis", "sign"), [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)]
)
@pytest.mark.parametrize("camera", ["static camera", "camera panning left", "camera panning right"])
def test_objects_move_in_the_prompted_direction_on_screen(direction, axis, sign, camera):
    mask = _object_mask(_scene(direction, camera=camera))
    start = np.argwhere(mask[0]).mean(axis=0)
    end = np.argwhere(mask[-1]).mean(axis=0)
    assert sign * (end[axis] - start[axis]) > 10.0
    if axis == 0:  # vertical motion drifts sideways on screen by the camera pan, and only by it
        assert abs(end[1] - start[1] + CAMERAS[camera] * 23) < 3.0
    else:
        assert abs(end[0] - start[0]) < 3.0


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_the_prompted_number_of_objects_is_drawn(count, shape):
    mask = _object_mask(_scene("up", count=count, shape=shape))
    _, components = label(mask[12])
    assert components == count
