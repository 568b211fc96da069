"""Validation's decode probes and preprocessing's frame reads: one decoder process per call, or reused.

Every decode runs isolated in a forked decoder process (``qsave.video.run_isolated``). Until session 17
each call forked a fresh process; a fork of a task process that has pandas, Great Expectations or torch
loaded cost more than decoding one small clip. Now each thread keeps one decoder process for up to
``qsave.video.WORKER_CALLS`` calls (a fresh one after any error). This runs the pipeline's two decode-bound
steps on the cached synthetic corpus of ``bench_learning.py`` — ``validate_manifest`` (Great Expectations
and a probe per video in 2 threads) and ``preprocess_shard`` (SlowFast frames of every video into a clip
cache) — each in a fresh Python process (as a Flyte task runs), once with ``WORKER_CALLS = 1`` (a process
per call, as before) and once as shipped, alternating ``--repeats`` times, and prints the seconds, the
median of each and their ratio, and whether both produced the same rows.

    .venv/bin/python benchmarks/bench_isolation.py --n 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)

MODES = {"per-call": 1, "reused": 0}
"""``WORKER_CALLS`` in each mode (0: the shipped value)."""


def run_step(step: str, dataset: Path, calls: int) -> dict[str, object]:
    """Run one step in this (fresh) process; its wall seconds and a digest of what it produced."""
    import great_expectations  # noqa: F401  (the validation task's imports, before the clock starts)

    import qsave.video
    from qsave.manifest import read_manifest
    from qsave.preprocess import preprocess_shard
    from qsave.slowfast import LOCAL_SAMPLER
    from qsave.synthetic import MANIFEST_NAME
    from qsave.validation import ValidationConfig, validate_manifest
    from qsave.video import DecodeLimits

    if calls:
        qsave.video.WORKER_CALLS = calls  # type: ignore[misc]
    manifest = read_manifest(dataset / MANIFEST_NAME)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        digest: object
        if step == "validate":
            result = validate_manifest(manifest, ValidationConfig(), out, base_dir=dataset)
            digest = [len(result.valid), len(result.quarantine)]
        else:
            table = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), Path(out), dataset).table
            digest = {str(k): int(v) for k, v in table["status"].value_counts().sort_index().items()}
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=300, help="synthetic clips in the corpus")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two modes")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "DATASET", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, dataset, calls = args.child
        print(json.dumps(run_step(step, Path(dataset), int(calls))))
        return
    dataset, _ = corpus(args.work, args.n, 0)
    runs: dict[str, dict[str, list[float]]] = {s: {m: [] for m in MODES} for s in ("validate", "preprocess")}
    digests: dict[str, set[str]] = {s: set() for s in runs}
    for repeat in range(args.repeats):
        for step in runs:
            for mode, calls in MODES.items():
                child = [sys.executable, __file__, "--child", step, str(dataset), str(calls)]
                done = subprocess.run(child, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[step][mode].append(float(result["seconds"]))
                digests[step].add(json.dumps(result["digest"], sort_keys=True))
                print(f"repeat {repeat + 1} {step:<10} {mode:<8} {result['seconds']:7.2f} s", flush=True)
    print(f"\n{args.n} videos, median of {args.repeats} (each run a fresh process):")
    for step, modes in runs.items():
        per_call, reused = (statistics.median(modes[m]) for m in MODES)
        same = "the same rows" if len(digests[step]) == 1 else f"DIFFERENT rows: {sorted(digests[step])}"
        print(
            f"  {step:<10} a process per call {per_call:6.1f} s, reused {reused:6.1f} s: "
            f"{reused / per_call:.2f}x the time; {same}"
        )


if __name__ == "__main__":
    main()
