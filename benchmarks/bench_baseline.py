"""How strong is the hand-crafted feature floor? The pipeline's ridge baseline beside gradient boosting.

On the cached synthetic corpus of ``bench_learning.py`` (same ``--work``, ``--n``, ``--corpus-seed``), extract
the 15 features of :mod:`qsave.baseline` once, fit per dimension on the train split (a) the pipeline's
closed-form ridge (:class:`qsave.baseline.BaselineModel`) and (b) scikit-learn's
``HistGradientBoostingRegressor`` (the nonlinear reading of the same features the issue's "feature
baseline" used), and print held-out SRCC of both side by side, with the difference. Also prints the
features one at a time with boosting (which carry the signal). scikit-learn comes with MLflow.

    .venv/bin/python benchmarks/bench_baseline.py            # 1,200 clips, test split (~1 min once cached)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_learning import corpus

from qsave.baseline import FEATURE_NAMES, BaselineModel, extract_features
from qsave.manifest import read_manifest
from qsave.metrics import spearman
from qsave.schema import DIMENSIONS, mos_column
from qsave.synthetic import MANIFEST_NAME


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips (70/15/15 prompt split)")
    parser.add_argument("--corpus-seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="gradient boosting's random state")
    args = parser.parse_args()

    from sklearn.ensemble import HistGradientBoostingRegressor

    dataset, _ = corpus(args.work, args.n, args.corpus_seed)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    features = extract_features(manifest, dataset, progress=True).features
    rows = features.merge(manifest[["video_id", "split", *map(mos_column, DIMENSIONS)]], on="video_id")
    train, held_out = rows[rows["split"] == "train"], rows[rows["split"] == args.split]
    ridge = BaselineModel.fit(train, train).predict(held_out)

    def boosted(columns: list[str], dim: str) -> float:
        model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=args.seed)
        model.fit(train[columns], train[mos_column(dim)])
        return round(spearman(model.predict(held_out[columns]), held_out[mos_column(dim)]), 3)

    result = {
        "n_train": len(train),
        "n_held_out": len(held_out),
        "ridge": {d: round(spearman(ridge[f"pred_{d}"], held_out[mos_column(d)]), 3) for d in DIMENSIONS},
        "boosting": {d: boosted(list(FEATURE_NAMES), d) for d in DIMENSIONS},
        "boosting_one_feature": {f: {d: boosted([f], d) for d in DIMENSIONS} for f in FEATURE_NAMES},
    }
    result["boosting_minus_ridge"] = {
        d: round(result["boosting"][d] - result["ridge"][d], 3) for d in DIMENSIONS
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
