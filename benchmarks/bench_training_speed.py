"""Seconds per local training step under different runtime settings (``ProfileSettings``), side by side.

Runs the ``local`` profile's stage 1 (``--stage sft``, projector calibration off: it is a one-off) or
GRPO (``--stage grpo``, from ``--model``, a stage-1 model such as the pipeline's or ``bench_learning.py
--keep``'s) on the cached synthetic corpus of ``bench_learning.py``, once per setting, alternating the
settings ``--repeats`` times so that load on the shared machine hits all alike. Each setting is a JSON
object of ``ProfileSettings`` overrides. Prints one JSON line per run, then the median seconds per step
of each setting and its ratio to the first; a run's seconds include loading and saving the model (a few
seconds, the same for every setting). The final weights of the settings are compared too: these
settings change how a step is computed, never what it computes, so every one must end with the same model.

SFT trains on the first ``--clips`` training clips for ``--epochs`` epochs: the default, 48 clips × 10
epochs, keeps the recipe's ten passes over every clip (what the frozen tower's cache gains from) in 60
steps.

    .venv/bin/python benchmarks/bench_training_speed.py        # tower cache off vs on, SFT, 3 repeats
    .venv/bin/python benchmarks/bench_training_speed.py --settings '{"dataloader_workers": 0}' \\
        '{"dataloader_workers": 1}' --clips 480 --epochs 1
    .venv/bin/python benchmarks/bench_training_speed.py --stage grpo --model RUN/sft/model --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.modeling import TinyModelConfig, tiny_model_path
from qsave.recipe import Recipe, stage_configs

CACHE_OFF_ON = ['{"cache_frozen_tower": false}', '{"cache_frozen_tower": true}']


def run_stage(args: argparse.Namespace, overrides: dict[str, Any], out: Path) -> tuple[Path, int]:
    """Train one run with ``overrides`` on the profile; return its model directory and optimizer steps."""
    from qsave.grpo import run_grpo
    from qsave.manifest import read_manifest
    from qsave.sft import run_sft
    from qsave.synthetic import MANIFEST_NAME
    from qsave.training import read_clip_table

    dataset, table = corpus(args.work, args.n, 0)
    base = str(tiny_model_path(TinyModelConfig()))
    sft, grpo, _ = stage_configs(Recipe(base_model=base))
    if args.stage == "grpo":
        cfg = dataclasses.replace(
            grpo,
            max_steps=args.steps,
            save_steps=10**6,
            profile=dataclasses.replace(grpo.profile, **overrides),
        )
        return run_grpo(args.model, dataset, table, cfg, out), args.steps
    manifest = read_manifest(Path(dataset) / MANIFEST_NAME)
    clips = read_clip_table(table)
    train = clips[clips["video_id"].isin(manifest.loc[manifest["split"] == "train", "video_id"])]
    train = train.head(args.clips)  # the rest of the manifest is skipped as "no clip" (not logged below)
    scfg = dataclasses.replace(
        sft,
        num_train_epochs=args.epochs,
        save_steps=10**6,
        projector_calibration_clips=0,
        profile=dataclasses.replace(sft.profile, **overrides),
    )
    steps = math.ceil(
        math.ceil(len(train) / sft.per_device_batch_size) * args.epochs
    )  # as the Trainer counts
    return run_sft(base, dataset, train, scfg, out), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips in the corpus")
    parser.add_argument("--stage", choices=("sft", "grpo"), default="sft")
    parser.add_argument(
        "--settings", nargs="+", default=CACHE_OFF_ON, help="ProfileSettings overrides (JSON)"
    )
    parser.add_argument("--clips", type=int, default=48, help="SFT: training clips (8 a step)")
    parser.add_argument("--epochs", type=float, default=10.0, help="SFT: epochs over them")
    parser.add_argument("--model", help="GRPO: the stage-1 model to start from")
    parser.add_argument("--steps", type=int, default=10, help="GRPO: optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.stage == "grpo" and not args.model:
        parser.error("--stage grpo needs --model (a stage-1 model directory)")

    import torch
    from safetensors.torch import load_file

    for stage in ("SFT", "GRPO"):  # one "skips … no_clip" line per manifest row left out of the subset
        logging.getLogger(f"qsave.{stage}").setLevel(logging.ERROR)
    settings = [json.loads(s) for s in args.settings]
    per_step: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    weights: dict[int, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for repeat in range(args.repeats):
            for i, overrides in enumerate(settings):
                start = time.perf_counter()
                model, steps = run_stage(args, overrides, Path(tmp) / f"s{i}-r{repeat}")
                seconds = time.perf_counter() - start
                per_step[i].append(seconds / steps)
                weights.setdefault(i, load_file(model / "model.safetensors"))
                record = {
                    "setting": overrides,
                    "repeat": repeat,
                    "steps": steps,
                    "seconds": round(seconds, 1),
                }
                print(json.dumps(record), flush=True)
    same = all(all(torch.equal(weights[0][k], w[k]) for k in weights[0]) for w in weights.values())
    medians = [statistics.median(per_step[i]) for i in range(len(settings))]
    for overrides, median in zip(settings, medians, strict=True):
        print(
            f"{json.dumps(overrides)}: {median:.3f} s per step (median of {args.repeats}), "
            f"{median / medians[0]:.2f}× the time of the first setting"
        )
    print(f"same final weights for every setting: {same}")


if __name__ == "__main__":
    main()
