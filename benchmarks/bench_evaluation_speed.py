"""The evaluation's wall time with the feature baseline alongside the models' scoring or after it.

``qsave.predictions.evaluate_models`` scores the models on the test split (one torch thread on the local
profile) and fits the feature baseline, whose decoding and features run in ``BaselineConfig.workers``
processes over every train and test video. ``baseline_alongside=True`` (the default) starts the baseline
in a background thread first, so the two share the cores; ``False`` runs it after the models, as before
session 16. This runs both on the cached synthetic corpus of ``bench_learning.py`` with a candidate and
the untrained base (as the pipeline scores them), alternating them ``--repeats`` times, and prints each
run's wall and CPU seconds, the median wall time of each and their ratio, and whether the two
evaluations' numbers are the same.

    .venv/bin/python benchmarks/bench_evaluation_speed.py --model RUN/model --explain   # a trained model
    .venv/bin/python benchmarks/bench_evaluation_speed.py                                # the untrained tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips in the corpus")
    parser.add_argument("--model", default="tiny", help="the candidate (a directory, tiny or a hub id)")
    parser.add_argument("--base", default="tiny", help="scored beside it, as the pipeline scores its base")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="the candidate writes its full answers, as the pipeline's does (leave off for an untrained one)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the local profile's: 1)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from qsave.manifest import read_manifest
    from qsave.predictions import evaluate_models
    from qsave.synthetic import MANIFEST_NAME
    from qsave.training import read_clip_table

    torch.set_num_threads(args.threads)
    dataset, table = corpus(args.work, args.n, 0)
    manifest = read_manifest(Path(dataset) / MANIFEST_NAME)
    clips = read_clip_table(table)
    explain = ("candidate",) if args.explain else ()
    wall: dict[bool, list[float]] = {False: [], True: []}
    numbers: dict[bool, dict[str, dict[str, float]]] = {}  # per setting: model name → its flat numbers
    for repeat in range(args.repeats):
        for alongside in (False, True):
            start, cpu = time.perf_counter(), time.process_time()
            evaluation, _ = evaluate_models(
                {"candidate": args.model, "base": args.base},
                clips,
                manifest,
                dataset_dir=dataset,
                explain=explain,
                baseline_alongside=alongside,
            )
            seconds = time.perf_counter() - start
            wall[alongside].append(seconds)
            numbers.setdefault(alongside, {m: evaluation.flat(m) for m in evaluation.models})
            record = {
                "baseline_alongside": alongside,
                "repeat": repeat,
                "wall_s": round(seconds, 1),
                "cpu_s_this_process": round(time.process_time() - cpu, 1),
            }
            print(json.dumps(record), flush=True)
    after, alongside = statistics.median(wall[False]), statistics.median(wall[True])
    print(
        f"baseline after the models: {after:.1f} s; alongside: {alongside:.1f} s (median of {args.repeats})"
    )
    print(f"alongside / after: {alongside / after:.2f}× the wall time")
    print(f"same evaluation numbers: {numbers[False] == numbers[True]}")


if __name__ == "__main__":
    main()
