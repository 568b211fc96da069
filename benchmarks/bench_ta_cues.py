"""Can the prompt-free TA cues be read from the decoded clips? Pixel readings of the drifted direction and
colour against the cues as drawn, and what a per-token filter bank pooled by its mean reads of them.

    .venv/bin/python benchmarks/bench_ta_cues.py [--n 1200] [--json]

``bench_ta_ceiling.py`` gives what a *perfect* prompt-free perception of each cue is worth (a motion off the
four axes, an in-between colour); ``bench_tower_probe.py`` what the frozen tower holds of them. This asks
what lies between: how well plain image processing reads two of them from the SlowFast clips the model sees
(the benchmark corpus of ``bench_learning.py``, train and test clips, seed 0):

- ``direction, centroid track``: the clip's fast pathway (every frame, 64 px) minus its per-pixel median
  over time (the background, when the camera is static), the centroid of the pixels that differ by more
  than ``FOREGROUND`` per frame, a line fitted to its track, and the track's angle from the nearest axis
  (0–1) — a global reading across all frames;
- ``colour, chromaticity``: the slow pathway's foreground (the same background, upsampled), eroded to the
  objects' interiors, its median chromaticity ``rgb / (r + g + b)`` (blind to the objects' shading) and its
  distance from the nearest palette colour's chromaticity;
- ``direction, pooled token energies``: per 16-px token of each temporal patch's frame difference, the
  energies of linear filters — colour-weighted ramps (the change of the token's first moment) and Gabor
  quadrature pairs at 8 and 16 px, in four orientations — averaged over tokens, as uniform attention would
  read them; boosted trees, 5-fold cross-validated over all clips, map them to the cue.

The two pixel readings take the clips with a static camera and one object group (a pan moves the
background, a second group its own way). Each row gives SRCC with the cue as drawn over its clips (the cue
is 0 where the artefact is absent) and within the clips that have the artefact.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ta_ceiling import PROMPT_FREE_CUES, boosted_trees, off_axis, prompt_free_cues

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.metrics import spearman

FOREGROUND = 0.25
"""Summed |RGB − background| above which a pixel is foreground (frames in [0, 1])."""
TOKEN = 16
ORIENTATIONS = np.radians([0.0, 45.0, 90.0, 135.0])


def centroid_direction(fast: NDArray[np.uint8]) -> float:
    """Off-axis angle of the foreground centroid's track over the fast pathway's ``(T, H, W, 3)`` frames."""
    frames = fast.astype(np.float32) / 255.0
    mask = np.abs(frames - np.median(frames, 0)).sum(-1) > FOREGROUND
    rows, cols = np.mgrid[: mask.shape[1], : mask.shape[2]]
    mass = mask.sum((1, 2))
    seen = mass > 5
    if seen.sum() < 4:
        return 0.0
    t = np.arange(len(frames))[seen]
    cx = (mask * cols).sum((1, 2))[seen] / mass[seen]
    cy = (mask * rows).sum((1, 2))[seen] / mass[seen]
    vx, vy = float(np.polyfit(t, cx, 1)[0]), -float(np.polyfit(t, cy, 1)[0])
    return off_axis(float(np.degrees(np.arctan2(vy, vx))))


def chromaticity_colour(slow: NDArray[np.uint8], fast: NDArray[np.uint8]) -> float:
    """Distance of the slow pathway's foreground median chromaticity from the palette's nearest one."""
    from scipy.ndimage import binary_erosion

    from qsave.scenes import COLORS

    frames = slow.astype(np.float32) / 255.0
    scale = frames.shape[1] // fast.shape[1]
    background = np.kron(np.median(fast.astype(np.float32) / 255.0, 0), np.ones((scale, scale, 1)))
    mask = np.abs(frames - background).sum(-1) > FOREGROUND
    if mask.sum() < 20:
        return 0.0
    interior = np.stack([binary_erosion(m, iterations=2) for m in mask])
    pixels = frames[interior] if interior.sum() >= 10 else frames[mask]
    chroma = np.median(pixels / (pixels.sum(-1, keepdims=True) + 1e-3), 0)
    palette = np.asarray(list(COLORS.values()))
    palette /= palette.sum(-1, keepdims=True)
    return float(np.min(np.linalg.norm(palette - chroma, axis=1)))


def token_filters() -> NDArray[np.float64]:
    """``(20, 16, 16)``: four ramps, then Gabor (even, odd) pairs at 8 and 16 px, four orientations each."""
    c = np.arange(TOKEN) - (TOKEN - 1) / 2.0
    xx, yy = np.meshgrid(c, c)
    along = [xx * np.cos(t) - yy * np.sin(t) for t in ORIENTATIONS]
    envelope = np.exp(-(xx**2 + yy**2) / (2.0 * (TOKEN / 4.0) ** 2))
    filters = [u / np.linalg.norm(u) for u in along]
    for wavelength in (8.0, 16.0):
        for u in along:
            even = envelope * np.cos(2.0 * np.pi * u / wavelength)
            odd = envelope * np.sin(2.0 * np.pi * u / wavelength)
            filters += [(even - even.mean()) / np.linalg.norm(even - even.mean()), odd / np.linalg.norm(odd)]
    return np.stack(filters)


def token_energies(frames: NDArray[np.uint8], filters: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(12,)``: per filter group and orientation, the mean over tokens of the energy of each temporal
    patch's frame difference, summed over the colour channels."""
    f = frames.astype(np.float32) / 255.0
    diff = f[1::2] - f[0::2]
    pairs, h, w, _ = diff.shape
    tokens = diff.reshape(pairs, h // TOKEN, TOKEN, w // TOKEN, TOKEN, 3).transpose(0, 1, 3, 5, 2, 4)
    response = np.einsum("...cij,kij->...ck", tokens.reshape(-1, 3, TOKEN, TOKEN), filters)
    ramp = np.abs(response[..., :4])
    gabor = np.sqrt(response[..., 4::2] ** 2 + response[..., 5::2] ** 2)  # (tokens, 3, 8)
    energy = np.concatenate([ramp, gabor], axis=-1).sum(1)
    return np.asarray(energy.mean(0), dtype=np.float64)


def cross_validated(x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.float64]:
    """Out-of-fold predictions of ``y`` from ``x`` (boosted trees, 5 folds)."""
    from sklearn.model_selection import KFold

    out = np.zeros(len(y))
    for train, test in KFold(5, shuffle=True, random_state=0).split(x):
        out[test] = boosted_trees().fit(x[train], y[train]).predict(x[test])
    return out


def agreement(reading: Sequence[float], cue: Sequence[float]) -> dict[str, float | int]:
    """SRCC of a reading with the cue over all its clips and within the clips that have the artefact."""
    r, c = np.asarray(reading), np.asarray(cue)
    has = c > 0
    return {
        "clips": len(c),
        "srcc": round(spearman(r, c), 3),
        "with_artefact": int(has.sum()),
        "srcc_within": round(spearman(r[has], c[has]), 3),
    }


def main() -> None:
    from bench_learning import corpus

    from qsave.manifest import read_manifest
    from qsave.preprocess import load_clip
    from qsave.synthetic import MANIFEST_NAME, SynthConfig, corpus_rows
    from qsave.training import load_examples

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips (70/15/15 prompt split)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()

    dataset, table = corpus(args.work, args.n, 0)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    plans = {plan.video_id: plan for plan in corpus_rows(SynthConfig(n=args.n, seed=0))[0]}
    direction, colour = PROMPT_FREE_CUES.index("direction"), PROMPT_FREE_CUES.index("colour")
    filters = token_filters()
    simple: list[tuple[float, float, float, float]] = []
    energies, all_directions = [], []
    for split in ("train", "test"):
        for example in load_examples(manifest, table, split)[0]:
            plan = plans[str(example.row["video_id"])]
            cues = prompt_free_cues(plan)
            clip = load_clip(example.clip_path)
            energies.append(
                np.concatenate([token_energies(p.frames, filters) for p in (clip.slow, clip.fast)])
            )
            all_directions.append(cues[direction])
            if plan.drawn.camera == "static camera" and len(plan.drawn.groups) == 1:
                simple.append(
                    (
                        centroid_direction(clip.fast.frames),
                        cues[direction],
                        chromaticity_colour(clip.slow.frames, clip.fast.frames),
                        cues[colour],
                    )
                )
    readings = np.asarray(simple)
    y = np.asarray(all_directions)
    result = {
        "direction, centroid track": agreement(readings[:, 0], readings[:, 1]),
        "colour, chromaticity": agreement(readings[:, 2], readings[:, 3]),
        "direction, pooled token energies": agreement(cross_validated(np.stack(energies), y), y),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"prompt-free TA cues read from the decoded clips (benchmark corpus, {args.n} clips, train + test)")
    print(f"{'reading':<34} {'clips':>5}  {'SRCC':>6}  {'within (clips)':>14}")
    for name, r in result.items():
        within = f"{r['srcc_within']:.2f} ({r['with_artefact']})"
        print(f"{name:<34} {r['clips']:>5}  {r['srcc']:>6.2f}  {within:>14}")


if __name__ == "__main__":
    main()
