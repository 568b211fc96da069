"""Synthetic corpus generation against its budget: 600 clips in under 2 minutes on a 2-core machine.

    .venv/bin/python benchmarks/bench_synth.py [--n 600] [--workers 2] [--json]

Prints wall and CPU seconds, clips per second and the budget ratio (wall / 120 s for 600 clips, scaled
linearly for other sizes); the corpus is written to a temporary directory and removed.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

from qsave.synthetic import SynthConfig, generate_corpus

BUDGET_S_PER_600 = 120.0


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qsave-bench-synth-") as tmp:
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        generate_corpus(SynthConfig(n=args.n, workers=args.workers), tmp)
        wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    budget = BUDGET_S_PER_600 * args.n / 600
    result = {
        "n": args.n,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "clips_per_s": round(args.n / wall, 2),
        "budget_s": budget,
        "budget_ratio": round(wall / budget, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.n} clips in {wall:.1f} s wall ({cpu:.1f} s CPU), {args.n / wall:.1f} clips/s; "
            f"{wall / budget:.2f} of the {budget:.0f} s budget"
        )


if __name__ == "__main__":
    main()
