"""How much TA lies in one comparison: is the colour the prompt names present in the clip?

TA needs the model to bind the prompt's words to what it sees (``docs/learning.md``). This measures one
such binding outside the model, from the same pixels the tiny model's front end reads: the slow pathway's
frames of each clip (:mod:`qsave.slowfast` ``LOCAL_SAMPLER``: 4 frames of 128×128) are averaged over
square patches of ``--patches`` pixels (16: the front end's patch; 32: one merged visual token; 1: every
pixel), and for each colour of :data:`qsave.scenes.COLORS` the clip gets the smallest RGB distance of a
patch to it and the share of patches within ``--radius`` of it. Two sets of features per clip:

* **with the prompt**: those two numbers for the colour of each object group the prompt names (the
  comparison), the number of groups, the background word, and the strongest colour the prompt does not
  name;
* **without the prompt's colours**: only the last three — what a model reads when it ignores which colour
  was asked for (the prompt-free cues the feature baseline and the tiny model find).

Gradient-boosted trees fit on the train clips' TA MOS predict the held-out clips'; printed per patch size:
held-out TA SRCC with and without the comparison.

``--tokens`` then asks where in the tiny model that colour survives. The freshly built tiny model's
projector is calibrated on the first 200 training clips (as stage 1 does); for each merged visual token
of the first 600 training clips the label is "≥ 10 % of its 32×32 px (both frames) within ``--radius`` of
the colour", and a ridge readout fit on three quarters of the tokens scores the rest (ROC AUC per colour)
from: the 16-px patch colour means the front end's first three filters compute (12 numbers per token),
the same through 1,024 random ReLU features (what a nonlinear colour detector could reach), the
projector's normalised input (the merger's LayerNorm), and the language model's input (the merger's
output). Last, the best a binding head could read from the language model's input: per clip, for each
colour the prompt names, the largest readout score over the clip's tokens; the smallest of those over the
prompt's colours, against the clips' TA MOS (SRCC).

    .venv/bin/python benchmarks/bench_colour_binding.py                  # patches 32 16 8 4 1 (~4 min)
    .venv/bin/python benchmarks/bench_colour_binding.py --patches 16 --radius 0.2
    .venv/bin/python benchmarks/bench_colour_binding.py --patches 16 --tokens   # + the in-model readout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from bench_captions import attributes, groups  # same folder: the caption grammar's parts
from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.manifest import read_manifest
from qsave.preprocess import load_clip
from qsave.scenes import BACKGROUNDS, COLORS
from qsave.synthetic import MANIFEST_NAME

NAMES = list(COLORS)
PALETTE = np.array([COLORS[c] for c in NAMES])
WITH_PROMPT = ("dist0", "share0", "dist1", "share1", "groups", "background", "other_share", "other_dist")
WITHOUT_PROMPT = ("groups", "background", "other_share", "other_dist")


def asked_colours(prompt: str) -> list[str]:
    """The colour of each object group the prompt asks for."""
    return [words[1] for words in groups(prompt)]


def patch_colours(frames: np.ndarray, patch: int) -> np.ndarray:
    """``(patches, 3)`` mean RGB in [0, 1] of the ``patch``-px squares of ``(T, H, W, 3)`` uint8 frames."""
    t, h, w, _ = frames.shape
    x = frames[:, : h // patch * patch, : w // patch * patch].astype(np.float64) / 255.0
    return x.reshape(t, h // patch, patch, w // patch, patch, 3).mean(axis=(2, 4)).reshape(-1, 3)


def clip_features(prompt: str, frames: np.ndarray, patch: int, radius: float) -> dict[str, float]:
    distance = np.linalg.norm(patch_colours(frames, patch)[:, None, :] - PALETTE[None], axis=-1)
    nearest, share = distance.min(axis=0), (distance < radius).mean(axis=0)
    asked = asked_colours(prompt)
    features: dict[str, float] = {
        "groups": float(len(asked)),
        "background": float(BACKGROUNDS.index(attributes(prompt)["background"])),
    }
    for k in range(2):
        index = NAMES.index(asked[k]) if k < len(asked) else None
        features[f"dist{k}"] = float(nearest[index]) if index is not None else float("nan")
        features[f"share{k}"] = float(share[index]) if index is not None else float("nan")
    others = [i for i, name in enumerate(NAMES) if name not in asked]
    features["other_share"] = float(share[others].max())
    features["other_dist"] = float(nearest[others].min())
    return features


def token_presence(clip: Any, radius: float) -> np.ndarray:
    """``(tokens, colours)``: share of each merged visual token's pixels near each colour, in the processor's
    token order (slow then fast pathway; per pair of frames, 32-px blocks row by row)."""
    shares = []
    for pathway in (clip.slow, clip.fast):
        near = np.linalg.norm(pathway.frames[..., None, :] / 255.0 - PALETTE, axis=-1) < radius
        t, h, w = near.shape[:3]
        blocks = near[: t - t % 2].reshape(t // 2, 2, h // 32, 32, w // 32, 32, len(NAMES))
        shares.append(blocks.mean(axis=(1, 3, 5)).reshape(-1, len(NAMES)))
    return np.concatenate(shares)


def ridge_scores(x: np.ndarray, y: np.ndarray, fit: np.ndarray, lam: float) -> np.ndarray:
    """Scores of a ridge readout of ``y`` from standardised ``x``, fit on the rows where ``fit``."""
    mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-9
    z = (x - mean) / std
    gram = z[fit].T @ z[fit] + lam * fit.sum() * np.eye(z.shape[1])
    return np.asarray(z @ np.linalg.solve(gram, z[fit].T @ (y[fit] - y[fit].mean(axis=0))))


def one_unit_per_colour(means: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Per-token scores of one logistic unit per colour on each 16-px patch's three colour means (a
    half-space: what one GELU unit of the front end could compute), the largest of the token's 4 patches."""
    from sklearn.linear_model import LogisticRegression

    patches = means.reshape(-1, 3)
    scores = np.empty(labels.shape)
    for k in range(len(NAMES)):
        target = np.repeat(labels[:, k], 4)
        unit = LogisticRegression(C=10.0, max_iter=2000).fit(
            patches[np.repeat(fit, 4)], target[np.repeat(fit, 4)]
        )
        scores[:, k] = unit.decision_function(patches).reshape(-1, 4).max(axis=1)
    return scores


def token_readout(
    dataset: Path, table: Path, radius: float, clips: int = 600, calibration: int = 200
) -> dict[str, Any]:
    """Presence AUC per colour at four places of the tiny model, and the binding readout's TA SRCC."""
    import torch
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from qsave.modeling import TinyModelConfig, tiny_model_path
    from qsave.training import (
        LoraSettings,
        SupervisedCollator,
        SupervisedDataset,
        load_examples,
        load_for_training,
        profile_settings,
    )
    from qsave.vision_init import calibrate_projector

    examples, _ = load_examples(read_manifest(dataset / MANIFEST_NAME), table)
    items = SupervisedDataset(examples[:clips], 0.0, 0)
    model, processor = load_for_training(
        str(tiny_model_path(TinyModelConfig())), profile_settings("local"), LoraSettings()
    )
    collate = SupervisedCollator(processor, 0.3)
    batches = [collate([items[i] for i in range(s, min(s + 8, clips))]) for s in range(0, clips, 8)]
    calibrate_projector(model, batches[: calibration // 8])
    visual = model.model.visual
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        visual.patch_embed.register_forward_hook(lambda _m, _a, o: seen.__setitem__("patch", o)),
        visual.merger.norm.register_forward_hook(lambda _m, _a, o: seen.__setitem__("norm", o)),
        visual.merger.register_forward_hook(lambda _m, _a, o: seen.__setitem__("merged", o)),
    ]
    places: dict[str, list[np.ndarray]] = {"colour_means": [], "projector_input": [], "language_input": []}
    presence, per_clip = [], []
    with torch.no_grad():
        for batch in batches:
            visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
            hidden = int(seen["patch"].shape[-1])
            places["colour_means"].append(
                seen["patch"].reshape(-1, 4, hidden)[:, :, :3].reshape(-1, 12).numpy()
            )
            places["projector_input"].append(seen["norm"].reshape(-1, 4 * hidden).numpy())
            places["language_input"].append(seen["merged"].numpy())
    for hook in hooks:
        hook.remove()
    for i in range(clips):
        shares = token_presence(items[i]["clip"], radius)
        presence.append(shares)
        per_clip.append(len(shares))
    labels = np.concatenate(presence) > 0.1
    fit = np.arange(len(labels)) < int(0.75 * len(labels))
    features = {name: np.concatenate(parts).astype(np.float64) for name, parts in places.items()}
    means = features["colour_means"]
    random = np.random.default_rng(0).standard_normal((12, 1024)) / 3
    standard = (means - means[fit].mean(axis=0)) / means[fit].std(axis=0)
    features = {
        "colour_means": means,
        "colour_means_random_features": np.maximum(standard @ random, 0.0),
        "projector_input": features["projector_input"],
        "language_input": features["language_input"],
    }
    scores = {
        name: ridge_scores(x, labels.astype(np.float64), fit, 1e-3 if "random" in name else 1e-2)
        for name, x in features.items()
    }
    scores["one_unit_per_colour"] = one_unit_per_colour(means, labels, fit)
    result: dict[str, Any] = {"auc": {}, "binding_readout_ta_srcc": {}}
    for name, score in scores.items():
        result["auc"][name] = {
            c: round(float(roc_auc_score(labels[~fit, k], score[~fit, k])), 2) for k, c in enumerate(NAMES)
        }
    bounds = np.cumsum([0, *per_clip])
    held_out = [i for i in range(clips) if bounds[i] >= fit.sum()]
    mos = [items[i]["mos"][2] for i in held_out]
    for name in ("language_input", "one_unit_per_colour"):
        found = []
        for i in held_out:
            block = scores[name][bounds[i] : bounds[i + 1]]
            found.append(min(block[:, NAMES.index(c)].max() for c in asked_colours(items[i]["prompt"])))
        result["binding_readout_ta_srcc"][name] = round(float(spearmanr(found, mos)[0]), 3)
    result["binding_readout_clips"] = len(held_out)
    return result


def main() -> None:
    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.ensemble import HistGradientBoostingRegressor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="clips of the corpus (seed 0)")
    parser.add_argument("--patches", type=int, nargs="+", default=[32, 16, 8, 4, 1], help="patch sizes, px")
    parser.add_argument("--radius", type=float, default=0.25, help="RGB distance counted as 'this colour'")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tokens", action="store_true", help="also the in-model readout (see above)")
    args = parser.parse_args()

    dataset, table = corpus(args.work, args.n, 0)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    clips = pd.read_parquet(table).set_index("video_id")["clip_path"]
    paths = [Path(p) if Path(p).is_absolute() else table.parent / p for p in clips.loc[manifest["video_id"]]]
    frames = [load_clip(p).slow.frames for p in paths]
    train = (manifest["split"] == "train").to_numpy()
    held_out = (manifest["split"] == args.split).to_numpy()
    mos = manifest["mos_ta"].to_numpy()
    result: dict[str, Any] = {"clips": int(held_out.sum()), "radius": args.radius, "ta_srcc": {}}
    for patch in args.patches:
        table_ = pd.DataFrame(
            [clip_features(p, f, patch, args.radius) for p, f in zip(manifest["prompt"], frames, strict=True)]
        )
        srcc = {}
        for name, columns in (("with_prompt", WITH_PROMPT), ("without_prompt", WITHOUT_PROMPT)):
            x = table_[list(columns)].to_numpy()
            trees = HistGradientBoostingRegressor(random_state=0).fit(x[train], mos[train])
            srcc[name] = round(float(spearmanr(trees.predict(x[held_out]), mos[held_out])[0]), 3)
        result["ta_srcc"][str(patch)] = srcc
        print(
            f"{patch:>2}-px patches: held-out TA SRCC {srcc['with_prompt']:.3f} with the prompt's colours, "
            f"{srcc['without_prompt']:.3f} without",
            flush=True,
        )
    if args.tokens:
        readout = token_readout(dataset, table, args.radius)
        for place, auc in readout["auc"].items():
            print(f"presence AUC at {place}: " + " ".join(f"{c} {v:.2f}" for c, v in auc.items()))
        for place, srcc in readout["binding_readout_ta_srcc"].items():
            print(
                f"binding readout from {place}: TA SRCC {srcc:.3f} ({readout['binding_readout_clips']} clips)"
            )
        result["tokens"] = readout
    print(json.dumps(result))


if __name__ == "__main__":
    main()
