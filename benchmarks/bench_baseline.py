"""How strong is the hand-crafted feature floor? The pipeline's boosted baseline beside ridge.

On the cached synthetic corpus of ``bench_learning.py`` (same ``--work``, ``--n``, ``--corpus-seed``), extract
the 15 features of :mod:`qsave.baseline` once, fit per dimension on the train split the pipeline's
:class:`qsave.baseline.BaselineModel` with (a) gradient-boosted trees (the default, the nonlinear reading
the issue's "feature baseline" used) and (b) closed-form ridge, and print held-out SRCC of both side by
side, with the difference. Also prints the features one at a time with boosting (which carry the signal).

    .venv/bin/python benchmarks/bench_baseline.py            # 1,200 clips, test split (~1 min once cached)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_learning import corpus

from qsave.baseline import FEATURE_NAMES, BaselineConfig, BaselineModel, extract_features
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
    parser.add_argument("--seed", type=int, default=0, help="the boosted trees' random state")
    args = parser.parse_args()

    dataset, _ = corpus(args.work, args.n, args.corpus_seed)
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
