"""Prompt-conditioned procedural scenes: the vocabulary, the prompt grammar and the renderer.

A :class:`SceneSpec` is what a prompt asks for: one or two groups of objects (count, colour, shape,
motion direction) over a background, filmed with a camera motion. :func:`describe` turns a spec into its
prompt, e.g. ``"two red circles moving left over a blue sky background, static camera"``; the vocabulary
is small and regular on purpose so a tiny model can learn it.

A :class:`DrawnScene` is what is actually rendered. It starts as the prompt's spec and may deviate from
it continuously (a colour drifted toward another, a shape blended into another, a rotated motion
direction, a faded group, a background mixed with another) — that is how text-video misalignment is
made. :class:`MotionParams` carries the per-frame motion of the clip (path progress, camera shake, size
and shape morphing). :func:`render` draws a clip as float32 frames ``(T, H, W, 3)`` in ``[0, 1]``, with
numpy broadcasting over all frames at once; objects are signed-distance shapes with soft edges, shading
and a rim, over textured backgrounds that pan with the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

COLORS: Final[dict[str, tuple[float, float, float]]] = {
    "red": (0.86, 0.14, 0.14),
    "green": (0.16, 0.72, 0.22),
    "blue": (0.14, 0.28, 0.92),
    "yellow": (0.96, 0.86, 0.12),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.58, 0.20, 0.78),
    "orange": (0.98, 0.52, 0.08),
}
SHAPES: Final = ("circle", "square", "triangle")
COUNT_WORDS: Final = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
MAX_PROMPT_COUNT: Final = 3
"""Prompts ask for one to three objects per group; a drawn scene may show up to five."""
DIRECTIONS: Final = {"right": 0.0, "up": 90.0, "left": 180.0, "down": 270.0}
"""Motion directions as screen angles in degrees (counter-clockwise, 0 = right)."""
BACKGROUNDS: Final = ("blue sky", "green meadow", "night sky", "sandy desert", "grey studio")
CAMERAS: Final = {"static camera": 0.0, "camera panning left": -1.0, "camera panning right": 1.0}
"""Camera motions and their pan speed in pixels per frame (the view moves; content moves the other way)."""
_CLASHES: Final = {
    "blue sky": ("blue", "white"),
    "green meadow": ("green",),
    "night sky": ("purple", "blue"),
    "sandy desert": ("yellow", "orange"),
    "grey studio": ("white",),
}
"""Object colours a prompt never puts on a background (too little contrast to see them)."""
_RADIUS_BY_COUNT: Final = {1: 14.0, 2: 12.0, 3: 10.5, 4: 9.5, 5: 8.5}
_SHAKE_LIMIT: Final = 12
"""Largest camera-shake offset in pixels; the background canvas carries this margin."""


@dataclass(frozen=True)
class ObjectGroup:
    count: int
    color: str
    shape: str
    direction: str


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt asks for."""

    groups: tuple[ObjectGroup, ...]
    background: str
    camera: str


@dataclass(frozen=True)
class DrawnGroup:
    """One group of objects as rendered: continuous attributes, so deviations can be graded."""

    count: int
    rgb: tuple[float, float, float]
    shape_weights: tuple[float, ...]
    """Blend weights over :data:`SHAPES` of the signed-distance shape (sums to 1)."""
    angle: float
    """Motion direction in degrees (counter-clockwise, 0 = right)."""
    opacity: float = 1.0


@dataclass(frozen=True)
class DrawnScene:
    """What is actually rendered; :meth:`from_spec` gives the faithful rendering of a prompt."""

    groups: tuple[DrawnGroup, ...]
    background: str
    camera: str
    background_mix: tuple[str, float] | None = None
    """Another background blended in with this weight (a wrong scene), or None."""

    @classmethod
    def from_spec(cls, spec: SceneSpec) -> DrawnScene:
        groups = tuple(
            DrawnGroup(
                count=g.count,
                rgb=COLORS[g.color],
                shape_weights=tuple(1.0 if s == g.shape else 0.0 for s in SHAPES),
                angle=DIRECTIONS[g.direction],
            )
            for g in spec.groups
        )
        return cls(groups=groups, background=spec.background, camera=spec.camera)


@dataclass(frozen=True)
class MotionParams:
    """Per-frame motion of a clip; :meth:`steady` is smooth, artefact-free motion."""

    progress: np.ndarray
    """(T,) how far along its path each object is, in frames (steady: 0, 1, …, T-1)."""
    shake: np.ndarray
    """(T, 2) integer camera-shake offsets (x, y) in pixels, within ±12."""
    size_scale: np.ndarray
    """(T,) object size multiplier."""
    morph: np.ndarray
    """(T,) blend weight toward the next shape in :data:`SHAPES` (shape morphing over time)."""

    @classmethod
    def steady(cls, num_frames: int) -> MotionParams:
        return cls(
            progress=np.arange(num_frames, dtype=np.float64),
            shake=np.zeros((num_frames, 2), dtype=np.int64),
            size_scale=np.ones(num_frames),
            morph=np.zeros(num_frames),
        )


def _plural(shape: str, count: int) -> str:
    return shape if count == 1 else f"{shape}s"


def phrase_group(count: int, color: str, shape: str, direction: str) -> str:
    return f"{COUNT_WORDS[count]} {color} {_plural(shape, count)} moving {direction}"


def describe(spec: SceneSpec) -> str:
    """The prompt of a scene spec."""
    phrases = " and ".join(phrase_group(g.count, g.color, g.shape, g.direction) for g in spec.groups)
    return f"{phrases} over a {spec.background} background, {spec.camera}"


def nearest_color(rgb: tuple[float, float, float]) -> str:
    target = np.asarray(rgb)
    return min(COLORS, key=lambda name: float(np.sum((np.asarray(COLORS[name]) - target) ** 2)))


def nearest_direction(angle: float) -> str:
    def gap(name: str) -> float:
        return abs((DIRECTIONS[name] - angle + 180.0) % 360.0 - 180.0)

    return min(DIRECTIONS, key=gap)


def caption(drawn: DrawnScene) -> str:
    """A content description of what is rendered (in the prompt's vocabulary), not of its quality.

    Graded attributes are named by their nearest vocabulary word; a group drawn at less than half
    opacity is not described, and a background mixed at least half with another is named by that one.
    """
    visible = [g for g in drawn.groups if g.opacity >= 0.5]
    background = drawn.background
    if drawn.background_mix is not None and drawn.background_mix[1] >= 0.5:
        background = drawn.background_mix[0]
    if not visible:
        return f"no objects over a {background} background, {drawn.camera}"
    phrases = " and ".join(
        phrase_group(
            g.count,
            nearest_color(g.rgb),
            SHAPES[int(np.argmax(g.shape_weights))],
            nearest_direction(g.angle),
        )
        for g in visible
    )
    return f"{phrases} over a {background} background, {drawn.camera}"


def sample_scene(rng: np.random.Generator, two_group_probability: float = 0.35) -> SceneSpec:
    """A random prompt spec: one group (or, sometimes, a second group of one object)."""
    background = str(rng.choice(BACKGROUNDS))
    colors = [c for c in COLORS if c not in _CLASHES[background]]
    first_color = str(rng.choice(colors))
    groups = [
        ObjectGroup(
            count=int(rng.integers(1, MAX_PROMPT_COUNT + 1)),
            color=first_color,
            shape=str(rng.choice(SHAPES)),
            direction=str(rng.choice(list(DIRECTIONS))),
        )
    ]
    if rng.random() < two_group_probability:
        groups.append(
            ObjectGroup(
                count=1,
                color=str(rng.choice([c for c in colors if c != first_color])),
                shape=str(rng.choice(SHAPES)),
                direction=str(rng.choice(list(DIRECTIONS))),
            )
        )
    return SceneSpec(groups=tuple(groups), background=background, camera=str(rng.choice(list(CAMERAS))))


# --- backgrounds -----------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-range smooth noise with features about ``scale`` pixels wide."""
    from scipy.ndimage import gaussian_filter

    field_ = gaussian_filter(rng.standard_normal(shape), sigma=scale, mode="wrap")
    field_ -= field_.mean()
    return field_ / (np.abs(field_).max() + 1e-9)


def _vertical(h: int, w: int, top: tuple[float, ...], bottom: tuple[float, ...]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top) + t * np.asarray(bottom), (h, w, 3)).copy()


def _background(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured (h, w, 3) canvas for a background name."""
    ys = np.arange(h)[:, None]
    xs = np.arange(w)[None, :]
    grain = 0.025 * rng.standard_normal((h, w, 1))
    if name == "blue sky":
        img = _vertical(h, w, (0.35, 0.58, 0.92), (0.70, 0.84, 0.98))
        clouds = np.clip(_smooth_noise(rng, (h, w), 7.0) * 2.2 - 0.3, 0.0, 1.0)[..., None]
        img = img * (1 - clouds) + 0.97 * clouds
    elif name == "green meadow":
        horizon = int(h * 0.32)
        img = _vertical(h, w, (0.62, 0.80, 0.95), (0.62, 0.80, 0.95))
        grass = _vertical(h - horizon, w, (0.30, 0.55, 0.20), (0.12, 0.38, 0.10))
        blades = 0.10 * np.sin(xs * 1.7 + 3.0 * np.sin(ys[horizon:] * 0.3))[..., None]
        img[horizon:] = grass + blades + 0.06 * _smooth_noise(rng, (h - horizon, w), 3.0)[..., None]
    elif name == "night sky":
        img = _vertical(h, w, (0.02, 0.03, 0.10), (0.08, 0.08, 0.22))
        stars = (rng.random((h, w)) > 0.985).astype(np.float64)[..., None]
        img = img * (1 - stars) + stars * rng.uniform(0.6, 1.0, (h, w, 1))
    elif name == "sandy desert":
        horizon = int(h * 0.38)
        img = _vertical(h, w, (0.95, 0.75, 0.45), (0.98, 0.88, 0.70))
        dunes = 0.07 * np.sin(xs * 0.09 + ys * 0.21 + 2.0 * _smooth_noise(rng, (h, w), 9.0))
        sand = _vertical(h - horizon, w, (0.84, 0.68, 0.42), (0.72, 0.55, 0.32))
        img[horizon:] = sand + dunes[horizon:, :, None]
    elif name == "grey studio":
        img = _vertical(h, w, (0.42, 0.42, 0.44), (0.58, 0.58, 0.60))
        checker = (((xs // 12) + (ys // 12)) % 2).astype(np.float64)[..., None]
        floor = int(h * 0.55)
        img[floor:] = img[floor:] * (0.85 + 0.25 * checker[floor:])
    else:
        raise ValueError(f"unknown background {name!r}; known: {', '.join(BACKGROUNDS)}")
    return np.clip(img + grain, 0.0, 1.0)


# --- shapes ----------------------------------------------------------------------------------------


def _sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in radii) to a unit shape centred at the origin; ``v`` points down."""
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        qx = np.abs(u) - 0.86
        qy = np.abs(v) - 0.86
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0.0)
    if shape == "triangle":
        # Equilateral triangle pointing up (after Inigo Quilez's exact 2-D distance functions).
        k = math.sqrt(3.0)
        r = 1.1
        px = np.abs(u) - r
        py = -v + r / k
        fold = px + k * py > 0.0
        px, py = np.where(fold, (px - k * py) / 2.0, px), np.where(fold, (-k * px - py) / 2.0, py)
        px = px - np.clip(px, -2.0 * r, 0.0)
        return -np.sqrt(px * px + py * py) * np.sign(py)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def morph_target(weights: tuple[float, ...]) -> int:
    """The index of the shape a group morphs toward: the one after its dominant shape."""
    return (int(np.argmax(weights)) + 1) % len(SHAPES)


# --- rendering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placement:
    """Screen trajectory of one object: centre (T, 2) and radius (T,)."""

    centre: np.ndarray
    radius: np.ndarray


def _placements(
    drawn: DrawnScene,
    motion: MotionParams,
    camera: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> list[list[_Placement]]:
    """Where each object of each group is in every frame; ``camera`` is the (T, 2) view offset."""
    mid = (len(motion.progress) - 1) / 2.0
    anchors = [(0.5, 0.5)] if len(drawn.groups) == 1 else [(0.5, 0.34), (0.5, 0.70)]
    out = []
    for group, anchor in zip(drawn.groups, anchors):
        angle = math.radians(group.angle)
        direction = np.array([math.cos(angle), -math.sin(angle)])
        across = np.array([-direction[1], direction[0]])
        radius = _RADIUS_BY_COUNT[min(max(group.count, 1), max(_RADIUS_BY_COUNT))]
        speed = rng.uniform(2.0, 2.8)
        centre = np.array([anchor[0] * width, anchor[1] * height]) + rng.uniform(-8.0, 8.0, 2)
        path = speed * (motion.progress - mid)[:, None] * direction[None, :]
        placements = []
        for i in range(group.count):
            offset = (i - (group.count - 1) / 2.0) * 2.6 * radius * across
            placements.append(_Placement(centre + offset + path - camera, radius * motion.size_scale))
        out.append(placements)
    return out


_SHAPE_EXTENT: Final = 1.3
"""Every shape (and any blend of them) lies within this many radii of its centre."""


def _patch_origins(centre: np.ndarray, size: int, limit: int) -> np.ndarray:
    """(T,) top-left corner of a ``size`` patch around each centre, kept inside ``[0, limit)``.

    A clamped patch still holds every visible pixel of the object: it covers the frame's edge strip.
    """
    return np.clip(np.floor(centre).astype(np.int64) - size // 2, 0, limit - size)


def _draw_object(frames: np.ndarray, group: DrawnGroup, place: _Placement, morph: np.ndarray) -> None:
    """Composite one object into ``frames`` (T, H, W, 3), working on a patch around it per frame."""
    num_frames, height, width = frames.shape[:3]
    size = min(2 * math.ceil(_SHAPE_EXTENT * float(place.radius.max()) + 1.0) + 2, height, width)
    rows = _patch_origins(place.centre[:, 1], size, height)[:, None] + np.arange(size)
    cols = _patch_origins(place.centre[:, 0], size, width)[:, None] + np.arange(size)
    r = place.radius[:, None, None]
    u = (cols[:, None, :] + 0.5 - place.centre[:, 0, None, None]) / r
    v = (rows[:, :, None] + 0.5 - place.centre[:, 1, None, None]) / r
    weights = np.asarray(group.shape_weights, dtype=np.float64)
    per_frame = (1.0 - morph)[:, None] * weights[None, :]
    per_frame[:, morph_target(group.shape_weights)] += morph
    dist = np.zeros(np.broadcast_shapes(u.shape, v.shape))
    for k, shape in enumerate(SHAPES):
        if np.any(per_frame[:, k] > 0.0):
            dist += per_frame[:, k, None, None] * _sdf(shape, u, v)
    dist_px = dist * r
    alpha = np.clip(0.5 - dist_px, 0.0, 1.0) * group.opacity
    shade = 0.80 + 0.20 * np.clip(0.5 - 0.35 * (u + v), 0.0, 1.0)
    shade *= 1.0 - 0.35 * np.clip(1.0 - np.abs(dist_px + 1.5), 0.0, 1.0)
    highlight = 0.35 * np.exp(-((u + 0.35) ** 2 + (v + 0.35) ** 2) / 0.06)
    colour = np.clip(np.asarray(group.rgb) * shade[..., None] + highlight[..., None], 0.0, 1.0)
    index = (np.arange(num_frames)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = frames[index]
    frames[index] = patch + alpha[..., None] * (colour - patch)


def render(
    drawn: DrawnScene,
    motion: MotionParams,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render a clip as float32 frames ``(T, H, W, 3)`` in ``[0, 1]``."""
    num_frames = len(motion.progress)
    pan = abs(CAMERAS[drawn.camera])
    margin = math.ceil(pan * num_frames / 2.0) + _SHAKE_LIMIT + 1
    canvas_h, canvas_w = height + 2 * _SHAKE_LIMIT + 2, width + 2 * margin
    canvas = _background(drawn.background, canvas_h, canvas_w, rng)
    if drawn.background_mix is not None:
        other, weight = drawn.background_mix
        canvas = (1.0 - weight) * canvas + weight * _background(other, canvas_h, canvas_w, rng)
    t = np.arange(num_frames, dtype=np.float64)
    pan_x = np.floor(CAMERAS[drawn.camera] * (t - (num_frames - 1) / 2.0)).astype(np.int64)
    camera = np.stack([pan_x, np.zeros_like(pan_x)], axis=1) + motion.shake
    x0 = margin + camera[:, 0]
    y0 = _SHAKE_LIMIT + 1 + camera[:, 1]
    frames = np.stack([canvas[y : y + height, x : x + width] for x, y in zip(x0, y0)])
    placements_by_group = _placements(drawn, motion, camera.astype(np.float64), width, height, rng)
    for group, placements in zip(drawn.groups, placements_by_group):
        if group.opacity <= 0.0:
            continue
        for place in placements:
            _draw_object(frames, group, place, motion.morph)
    return np.clip(frames, 0.0, 1.0).astype(np.float32)
