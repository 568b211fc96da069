"""Artefacts with graded severity, and the true quality they imply.

Every artefact is a reason code of :mod:`qsave.taxonomy` with a severity in ``[0, 1]`` (0 = absent,
1 = as bad as it gets). They act at three stages of rendering a clip:

- **scene** (text-video alignment): :func:`deviate_scene` turns the prompt's spec into a drawn scene
  that deviates from it — ``wrong_color`` drifts the colour toward another by the severity,
  ``wrong_shape`` blends the shape into another, ``wrong_direction`` rotates the motion by
  ``180° × severity``, ``missing_object`` fades a group to opacity ``1 − severity``, ``wrong_count``
  adds or removes one object (severity 0.5) or two (severity 1.0), ``wrong_scene`` mixes in another
  background.
- **motion** (motion quality): :func:`motion_params` gives per-frame motion — ``jitter`` shakes the
  camera (σ = 3.5 px × severity), ``speed_inconsistency`` makes the speed erratic, ``morphing``
  pulses the objects' size and shape.
- **frames** (visual quality, plus the frame-level motion artefacts): :func:`degrade_frames` —
  ``flicker`` (per-frame gain and tint), ``freeze_stutter`` (held frames that then jump),
  ``exposure`` (over or under), ``color_distortion`` (over-saturation, hue rotation up to 45°, a
  colour cast), ``low_detail`` (posterisation), ``blur`` (Gaussian, σ = 0.4 + 2.6 × severity px),
  ``noise`` (temporal Gaussian), ``compression_blocks`` (8×8 DCT quantisation), in that order.

**True quality** per dimension (:func:`true_scores`): each artefact ``a`` has a weight ``w_a`` (the
share of quality it removes at full severity); the dimension's impairment is
``I_d = 1 − Π_a (1 − w_a · s_a)`` over its artefacts, and ``true_d = 5 − 4 · I_d`` (1–5). Overall is
``0.75 · (0.35 vq + 0.30 mq + 0.35 ta) + 0.25 · min(vq, mq, ta) + ε``, ``ε ~ N(0, 0.15)``, clipped to
1–5: a weighted mean that one bad dimension drags down, plus the raters' own overall judgement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from qsave.scenes import BACKGROUNDS, COLORS, SHAPES, DrawnScene, MotionParams, nearest_color
from qsave.schema import REASON_DIMENSIONS, SCORE_MAX, SCORE_MIN
from qsave.taxonomy import get_reason


@dataclass(frozen=True)
class Artefact:
    code: str
    """A :mod:`qsave.taxonomy` reason code."""
    weight: float
    """Share of the dimension's quality removed at severity 1."""

    @property
    def dimension(self) -> str:
        return get_reason(self.code).dimension


ARTEFACTS: Final[tuple[Artefact, ...]] = (
    Artefact("blur", 0.85),
    Artefact("noise", 0.75),
    Artefact("compression_blocks", 0.80),
    Artefact("color_distortion", 0.70),
    Artefact("exposure", 0.70),
    Artefact("low_detail", 0.65),
    Artefact("jitter", 0.85),
    Artefact("flicker", 0.75),
    Artefact("freeze_stutter", 0.80),
    Artefact("morphing", 0.75),
    Artefact("speed_inconsistency", 0.65),
    Artefact("missing_object", 0.95),
    Artefact("wrong_color", 0.80),
    Artefact("wrong_shape", 0.80),
    Artefact("wrong_count", 0.80),
    Artefact("wrong_direction", 0.75),
    Artefact("wrong_scene", 0.70),
)
"""Every artefact the corpus renders, each a taxonomy reason."""

_BY_CODE: Final = {a.code: a for a in ARTEFACTS}

OVERALL_WEIGHTS: Final = {"vq": 0.35, "mq": 0.30, "ta": 0.35}
OVERALL_MIN_SHARE: Final = 0.25


def artefact_codes(dimension: str) -> tuple[str, ...]:
    """The artefact codes the corpus renders for one dimension, in :data:`ARTEFACTS` order."""
    return tuple(a.code for a in ARTEFACTS if a.dimension == dimension)


def _check(severities: Mapping[str, float]) -> None:
    for code, severity in severities.items():
        if code not in _BY_CODE:
            raise ValueError(f"unknown artefact {code!r}; known: {', '.join(_BY_CODE)}")
        if not 0.0 <= severity <= 1.0:
            raise ValueError(f"artefact {code!r} has severity {severity}; severities lie in [0, 1]")


def snap_severity(code: str, severity: float) -> float:
    """The severity an artefact actually renders: ``wrong_count`` is discrete (0.5: ±1, 1.0: ±2)."""
    if code == "wrong_count":
        return 0.5 if severity < 0.75 else 1.0
    return severity


# --- true quality ----------------------------------------------------------------------------------


def impairment(severities: Mapping[str, float], dimension: str) -> float:
    """``1 − Π (1 − w_a · s_a)`` over the dimension's artefacts (0 = unimpaired)."""
    _check(severities)
    kept = 1.0
    for code, severity in severities.items():
        artefact = _BY_CODE[code]
        if artefact.dimension == dimension:
            kept *= 1.0 - artefact.weight * severity
    return 1.0 - kept


def true_scores(severities: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
    """True quality per dimension (1–5) from artefact severities; see the module docstring."""
    scores = {d: SCORE_MAX - (SCORE_MAX - SCORE_MIN) * impairment(severities, d) for d in REASON_DIMENSIONS}
    mean = sum(OVERALL_WEIGHTS[d] * scores[d] for d in REASON_DIMENSIONS)
    overall = (1.0 - OVERALL_MIN_SHARE) * mean + OVERALL_MIN_SHARE * min(scores.values())
    scores["overall"] = float(np.clip(overall + rng.normal(0.0, 0.15), SCORE_MIN, SCORE_MAX))
    return scores


# --- scene stage: text-video alignment -------------------------------------------------------------


def deviate_scene(drawn: DrawnScene, severities: Mapping[str, float], rng: np.random.Generator) -> DrawnScene:
    """Apply the alignment artefacts to a drawn scene (the first group is the one that deviates)."""
    _check(severities)
    groups = list(drawn.groups)
    first = groups[0]
    if s := severities.get("wrong_color", 0.0):
        own = nearest_color(first.rgb)
        other = np.asarray(COLORS[str(rng.choice([c for c in COLORS if c != own]))])
        rgb = (1.0 - s) * np.asarray(first.rgb) + s * other
        first = replace(first, rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])))
    if s := severities.get("wrong_shape", 0.0):
        own_index = int(np.argmax(first.shape_weights))
        other_index = int(rng.choice([i for i in range(len(SHAPES)) if i != own_index]))
        weights = [(1.0 - s) * w for w in first.shape_weights]
        weights[other_index] += s
        first = replace(first, shape_weights=tuple(weights))
    if s := severities.get("wrong_direction", 0.0):
        first = replace(first, angle=(first.angle + float(rng.choice([-1.0, 1.0])) * 180.0 * s) % 360.0)
    if s := severities.get("wrong_count", 0.0):
        delta = 1 if s < 0.75 else 2
        fewer = first.count - delta >= 1 and rng.random() < 0.5
        first = replace(first, count=first.count - delta if fewer else first.count + delta)
    groups[0] = first
    if s := severities.get("missing_object", 0.0):
        target = len(groups) - 1
        groups[target] = replace(groups[target], opacity=1.0 - s)
    background_mix = drawn.background_mix
    if s := severities.get("wrong_scene", 0.0):
        other_background = str(rng.choice([b for b in BACKGROUNDS if b != drawn.background]))
        background_mix = (other_background, s)
    return replace(drawn, groups=tuple(groups), background_mix=background_mix)


# --- motion stage ----------------------------------------------------------------------------------


def motion_params(severities: Mapping[str, float], num_frames: int, rng: np.random.Generator) -> MotionParams:
    """Per-frame motion with the motion artefacts rendered in the scene (jitter, speed, morphing)."""
    _check(severities)
    steady = MotionParams.steady(num_frames)
    progress, shake, size_scale, morph = steady.progress, steady.shake, steady.size_scale, steady.morph
    if s := severities.get("jitter", 0.0):
        shake = np.clip(np.round(rng.normal(0.0, 3.5 * s, (num_frames, 2))), -12, 12).astype(np.int64)
    if s := severities.get("speed_inconsistency", 0.0):
        steps = np.exp(rng.normal(0.0, 1.4 * s, num_frames - 1))
        progress = np.concatenate([[0.0], np.cumsum(steps)])
        progress *= (num_frames - 1) / progress[-1]
    if s := severities.get("morphing", 0.0):
        t = np.arange(num_frames, dtype=np.float64)
        period = rng.uniform(6.0, 12.0)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        size_scale = 1.0 + 0.45 * s * np.sin(2.0 * math.pi * t / period + phase)
        morph = 0.85 * s * (0.5 - 0.5 * np.cos(2.0 * math.pi * t / (1.5 * period) + phase))
    return MotionParams(progress=progress, shake=shake, size_scale=size_scale, morph=morph)


# --- frame stage -----------------------------------------------------------------------------------


def _hue_rotation(degrees: float) -> np.ndarray:
    """A 3×3 matrix rotating RGB about the grey axis (Rodrigues' formula)."""
    a = math.radians(degrees)
    k = np.full(3, 1.0 / math.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return math.cos(a) * np.eye(3) + math.sin(a) * cross + (1.0 - math.cos(a)) * np.outer(k, k)


def _block_dct_quantise(frames: np.ndarray, step: float) -> np.ndarray:
    """JPEG-like 8×8 DCT quantisation (DC kept finer than AC); sizes must be multiples of 8."""
    from scipy.fft import dctn, idctn

    t, h, w, c = frames.shape
    blocks = frames.reshape(t, h // 8, 8, w // 8, 8, c)
    coeffs = dctn(blocks, axes=(2, 4), norm="ortho")
    ramp = 1.0 + np.add.outer(np.arange(8), np.arange(8)) / 4.0
    steps = step * ramp
    steps[0, 0] = step / 2.0
    shaped = steps[None, None, :, None, :, None]
    coeffs = np.round(coeffs / shaped) * shaped
    return idctn(coeffs, axes=(2, 4), norm="ortho").reshape(t, h, w, c)


def degrade_frames(
    frames: np.ndarray, severities: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Apply the frame-level artefacts to float frames ``(T, H, W, 3)`` in ``[0, 1]``."""
    from scipy.ndimage import gaussian_filter

    _check(severities)
    out: np.ndarray = frames.astype(np.float32, copy=True)
    num_frames = len(out)
    if s := severities.get("flicker", 0.0):
        gain = 1.0 + 0.35 * s * rng.standard_normal(num_frames)
        tint = 1.0 + 0.08 * s * rng.standard_normal((num_frames, 3))
        out *= (gain[:, None] * tint)[:, None, None, :].astype(np.float32)
    if s := severities.get("freeze_stutter", 0.0):
        index = np.arange(num_frames)
        hold = rng.random(num_frames) < 0.15 + 0.6 * s
        hold[0] = False
        for i in range(1, num_frames):
            if hold[i]:
                index[i] = index[i - 1]
        out = out[index]
    if s := severities.get("exposure", 0.0):
        if rng.random() < 0.5:
            out = out * (1.0 + 1.3 * s) + 0.15 * s
        else:
            out = np.clip(out * (1.0 - 0.65 * s), 0.0, 1.0) ** (1.0 + 0.8 * s)
    if s := severities.get("color_distortion", 0.0):
        sign = float(rng.choice([-1.0, 1.0]))
        matrix = _hue_rotation(sign * 45.0 * s).astype(np.float32)
        cast = (0.22 * s * rng.uniform(-1.0, 1.0, 3)).astype(np.float32)
        grey = out.mean(axis=-1, keepdims=True)
        saturated = grey + (1.0 + 0.8 * s) * (out - grey)
        out = saturated @ matrix.T + cast
    out = np.clip(out, 0.0, 1.0)
    if s := severities.get("low_detail", 0.0):
        levels = max(2, round(3 + 29 * (1.0 - s) ** 2))
        out = np.round(out * (levels - 1)) / (levels - 1)
    if s := severities.get("blur", 0.0):
        sigma = 0.4 + 2.6 * s
        out = gaussian_filter(out, sigma=(0.0, sigma, sigma, 0.0), mode="nearest")
    if s := severities.get("noise", 0.0):
        out = out + rng.normal(0.0, 0.02 + 0.13 * s, out.shape).astype(np.float32)
    if s := severities.get("compression_blocks", 0.0):
        out = _block_dct_quantise(np.clip(out, 0.0, 1.0), 0.04 + 0.5 * s)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
