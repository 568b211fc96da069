"""How strong is the hand-crafted feature floor? The pipeline's boosted baseline beside ridge.

On the cached synthetic corpus of ``bench_learning.py`` (same ``--work``, ``--n``, ``--corpus-seed``,
``--held-out``; by default the pipeline's), extract the 15 features of :mod:`qsave.baseline` once, fit per
dimension on the train split the pipeline's :class:`qsave.baseline.BaselineModel` with (a) gradient-boosted
trees (the default, the nonlinear reading the issue's "feature baseline" used) and (b) closed-form ridge,
and print held-out SRCC of both side by side, with the difference. Also prints the features one at a time
with boosting (which carry the signal).

    .venv/bin/python benchmarks/bench_baseline.py     # the pipeline's corpus, test split (~2 min once cached)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from bench_learning import add_corpus_arguments, corpus

from qsave.baseline import (
    FEATURE_NAMES,
    BaselineConfig,
    BaselineModel,
    extract_features,
    fit_boosting,
    frame_features,
    predict_regressor,
)
from qsave.manifest import read_manifest
from qsave.metrics import spearman
from qsave.schema import DIMENSIONS, mos_column
from qsave.synthetic import MANIFEST_NAME

PATHWAY_SETS = {"slow": (0,), "fast": (1,), "slow + fast": (0, 1)}


def slowfast_features(manifest: pd.DataFrame, table: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(clips × 30 features, clips × 4 MOS)``: each clip's slow-pathway features, then its fast ones."""
    from qsave.preprocess import load_clip
    from qsave.training import load_examples

    examples, _ = load_examples(manifest, table, split)
    x, y = [], []
    for example in examples:
        clip = load_clip(example.clip_path)
        x.append([v for pathway in (clip.slow, clip.fast) for v in frame_features(pathway.frames).values()])
        y.append([float(example.row[mos_column(d)]) for d in DIMENSIONS])
    return np.asarray(x), np.asarray(y)


def slowfast_srcc(
    manifest: pd.DataFrame, table: Path, split: str, config: BaselineConfig
) -> dict[str, dict[str, float]]:
    """Held-out SRCC of boosted trees on the features of each pathway set of the model's SlowFast clips."""
    (x_train, y_train), (x_test, y_test) = (slowfast_features(manifest, table, s) for s in ("train", split))
    width = len(FEATURE_NAMES)
    out = {}
    for name, pathways in PATHWAY_SETS.items():
        cols = [p * width + f for p in pathways for f in range(width)]
        out[name] = {
            d: round(spearman(predict_regressor(trees, x_test[:, cols]), y_test[:, k]), 3)
            for k, d in enumerate(DIMENSIONS)
            for trees in [fit_boosting(x_train[:, cols], y_train[:, k], config)]
        }
    return out


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    add_corpus_arguments(parser)
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="the boosted trees' random state")
    parser.add_argument("--slowfast", action="store_true", help="also read the model's SlowFast clips")
    args = parser.parse_args()

    dataset, table = corpus(args.work, args.n, args.corpus_seed, args.held_out)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    features = extract_features(manifest, dataset, progress=True).features
    rows = features.merge(manifest[["video_id", "split", *map(mos_column, DIMENSIONS)]], on="video_id")
    train, held_out = rows[rows["split"] == "train"], rows[rows["split"] == args.split]

    def srcc(config: BaselineConfig, columns: tuple[str, ...] = FEATURE_NAMES) -> dict[str, float]:
        blank = {f: 0.0 for f in FEATURE_NAMES if f not in columns}  # constant: no tree splits on them
        predicted = BaselineModel.fit(train.assign(**blank), train, config).predict(held_out.assign(**blank))
        return {d: round(spearman(predicted[f"pred_{d}"], held_out[mos_column(d)]), 3) for d in DIMENSIONS}

    result = {
        "n_train": len(train),
        "n_held_out": len(held_out),
        "boosting": srcc(BaselineConfig(seed=args.seed)),
        "ridge": srcc(BaselineConfig(regressor="ridge")),
        "boosting_one_feature": {f: srcc(BaselineConfig(seed=args.seed), (f,)) for f in FEATURE_NAMES},
    }
    result["boosting_minus_ridge"] = {
        d: round(result["boosting"][d] - result["ridge"][d], 3) for d in DIMENSIONS
    }
    if args.slowfast:
        result["boosting_on_slowfast"] = slowfast_srcc(
            manifest, table, args.split, BaselineConfig(seed=args.seed)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
