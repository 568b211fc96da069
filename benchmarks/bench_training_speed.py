"""Seconds per local SFT step with the clips collated in the training loop and in a worker process.

Runs the ``local`` profile's stage 1 (the default recipe, projector calibration off: it is a one-off)
for ``--steps`` optimizer steps on the cached synthetic corpus of ``bench_learning.py``, once per
``dataloader_workers`` setting, alternating the settings ``--repeats`` times so that load on the shared
machine hits both alike. Prints one JSON line per run, then the median seconds per step of each setting
and their ratio to the first setting (in-loop); a run's seconds include loading and saving the model
(a few seconds, the same for every setting). The weights of the runs are compared too: workers change
where a batch is built, never what it holds, so every setting must end with the same model.

    .venv/bin/python benchmarks/bench_sft_speed.py                    # 0 vs 1 worker, 60 steps, 3 repeats
    .venv/bin/python benchmarks/bench_sft_speed.py --workers 0 1 2 --steps 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.modeling import TinyModelConfig, tiny_model_path
from qsave.recipe import Recipe, stage_configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips in the corpus")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (8 clips each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="dataloader_workers settings")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    from qsave.sft import run_sft

    dataset, table = corpus(args.work, args.n, 0)
    base = str(tiny_model_path(TinyModelConfig()))
    sft, _, _ = stage_configs(Recipe(base_model=base, grpo_steps=0, final_sft_epochs=0))
    per_step: dict[int, list[float]] = {w: [] for w in args.workers}
    weights: dict[int, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for repeat in range(args.repeats):
            for workers in args.workers:
                profile = dataclasses.replace(sft.profile, dataloader_workers=workers)
                cfg = dataclasses.replace(
                    sft,
                    max_steps=args.steps,
                    save_steps=10**6,
                    projector_calibration_clips=0,
                    profile=profile,
                )
                out = Path(tmp) / f"w{workers}-r{repeat}"
                start = time.perf_counter()
                model = run_sft(base, dataset, table, cfg, out)
                seconds = time.perf_counter() - start
                per_step[workers].append(seconds / args.steps)
                weights.setdefault(workers, load_file(model / "model.safetensors"))
                print(
                    json.dumps({"workers": workers, "repeat": repeat, "seconds": round(seconds, 1)}),
                    flush=True,
                )
    first = args.workers[0]
    same = all(
        all(torch.equal(weights[first][k], weights[w][k]) for k in weights[first]) for w in args.workers
    )
    medians = {w: statistics.median(s) for w, s in per_step.items()}
    for workers, median in medians.items():
        print(
            f"dataloader_workers={workers}: {median:.3f} s per step (median of {args.repeats}), "
            f"{median / medians[first]:.2f}× the time of dataloader_workers={first}"
        )
    print(f"same final weights for every setting: {same}")


if __name__ == "__main__":
    main()
