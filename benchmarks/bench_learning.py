"""Does the local recipe learn from the video? Train on a cached synthetic corpus, print held-out SRCC.

Builds (once, cached under ``--work``) a synthetic corpus and its SlowFast clips with the local sampler,
then trains the tiny model with the ``local`` profile's stages — overridable per run — and scores the
held-out test split with the model's own greedy levels in earlier slots (:func:`qsave.scoring.score_clips`).
Prints one JSON line per run: the overrides, SRCC per dimension for the untrained base and the trained
model, and wall and CPU seconds of each part. Results of these runs are in ``docs/learning.md``.

    .venv/bin/python benchmarks/bench_learning.py --n 600 \\
        --sft '{"num_train_epochs": 4, "lam": 10}' --tiny '{"hidden_size": 128}' --grpo-steps 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.ingest import IngestConfig, synth_config
from qsave.manifest import read_manifest
from qsave.modeling import TinyModelConfig, tiny_model_path
from qsave.predictions import PredictConfig, predict_clips, srcc_by_dimension
from qsave.preprocess import merge_results, preprocess_shard
from qsave.recipe import Recipe, stage_configs
from qsave.slowfast import LOCAL_SAMPLER
from qsave.synthetic import MANIFEST_NAME, generate_corpus
from qsave.video import DecodeLimits


class Clock:
    """Wall and process CPU seconds of named parts."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.parts[name] = {
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        return result


PIPELINE_DATA = IngestConfig()
"""The pipeline's default corpus (``make run``): what ``--n`` and ``--held-out`` default to here."""


def corpus(work: Path, n: int, seed: int, held_out: float = 0.15) -> tuple[Path, Path]:
    """``(dataset_dir, clips.parquet)`` of an ``n``-clip synthetic corpus whose val and test splits each
    hold ``held_out`` of the prompts, built on first use."""
    root = work / (f"corpus-n{n}-s{seed}" + ("" if held_out == 0.15 else f"-h{held_out:g}"))
    dataset, table = root / "dataset", root / "clips.parquet"
    if not (dataset / MANIFEST_NAME).is_file():
        data = IngestConfig(n_videos=n, seed=seed, val_fraction=held_out, test_fraction=held_out)
        generate_corpus(synth_config(data), dataset, progress=True)
    if not table.is_file():
        manifest = read_manifest(dataset / MANIFEST_NAME)
        shard = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), root / "clips", dataset, True)
        merge_results([shard.table]).to_parquet(table)
    return dataset, table


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """``--n``, ``--corpus-seed`` and ``--held-out``: the synthetic corpus, by default the pipeline's."""
    parser.add_argument(
        "--n", type=int, default=PIPELINE_DATA.n_videos, help="synthetic clips (default: the pipeline's)"
    )
    parser.add_argument("--corpus-seed", type=int, default=PIPELINE_DATA.seed)
    parser.add_argument(
        "--held-out",
        type=float,
        default=PIPELINE_DATA.test_fraction,
        help="the share of prompts in each of val and test (default: the pipeline's; 0.15 before session 23)",
    )


def held_out_srcc(model_dir: str, dataset: Path, table: Path, split: str) -> dict[str, float]:
    """Spearman correlation of predicted scores with MOS per dimension on ``split``."""
    import pandas as pd

    manifest = read_manifest(dataset / MANIFEST_NAME)
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    preds = predict_clips(model_dir, pd.read_parquet(table), rows, PredictConfig(batch_size=16))
    return {d: round(rho, 3) if rho == rho else 0.0 for d, rho in srcc_by_dimension(preds, rows).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    add_corpus_arguments(parser)
    parser.add_argument("--tiny", default="{}", help="TinyModelConfig overrides (JSON)")
    parser.add_argument("--sft", default="{}", help="stage-1 SFTStageConfig overrides (JSON)")
    parser.add_argument("--final", default="{}", help='final-SFT overrides (JSON); {"skip": true} skips it')
    parser.add_argument("--grpo-steps", type=int, default=-1, help="−1: the profile's; 0 skips GRPO")
    parser.add_argument("--grpo", default="{}", help="GRPOStageConfig overrides (JSON)")
    parser.add_argument("--pretrained", action="store_true", help="start from the caption-pretrained base")
    parser.add_argument("--pretrain", default="{}", help="PretrainConfig overrides (JSON)")
    parser.add_argument(
        "--pretext",
        choices=("caption", "degradation", "matching"),
        default="caption",
        help="with --pretrained: which pretraining task (qsave.pretrain)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--train-split", action="store_true", help="also report SRCC on the train split")
    parser.add_argument("--keep", action="store_true", help="keep the run's output directory")
    args = parser.parse_args()

    clock = Clock()
    dataset, table = clock.run("corpus", corpus, args.work, args.n, args.corpus_seed, args.held_out)
    tiny = TinyModelConfig(**json.loads(args.tiny))
    if args.pretrained:
        from qsave.pretrain import PRETEXTS, pretrained_tiny_path

        pretrain = PRETEXTS[args.pretext](tiny=tiny, **json.loads(args.pretrain))
        base = str(clock.run("base_model", pretrained_tiny_path, pretrain, None, True))
    else:
        base = str(clock.run("base_model", tiny_model_path, tiny))
    final_overrides = json.loads(args.final)
    skip_final = bool(final_overrides.pop("skip", False))
    recipe = Recipe(base_model=base, seed=args.seed, grpo_steps=args.grpo_steps)
    sft_cfg, grpo_cfg, final_cfg = stage_configs(
        dataclasses.replace(recipe, final_sft_epochs=0 if skip_final else -1)
    )
    sft_cfg = dataclasses.replace(sft_cfg, save_steps=10**6, **json.loads(args.sft))
    if grpo_cfg is not None:
        grpo_cfg = dataclasses.replace(grpo_cfg, save_steps=10**6, **json.loads(args.grpo))
    if final_cfg is not None:
        final_cfg = dataclasses.replace(final_cfg, save_steps=10**6, **final_overrides)

    from qsave.grpo import run_grpo
    from qsave.sft import run_sft

    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{time.strftime('%H%M%S')}-", dir=args.work))
    result: dict[str, Any] = {
        "n": args.n,
        "held_out": args.held_out,
        "tiny": json.loads(args.tiny),
        "pretrained": json.loads(args.pretrain) if args.pretrained else None,
        "pretext": args.pretext if args.pretrained else None,
        "sft": json.loads(args.sft),
        "grpo_steps": 0 if grpo_cfg is None else grpo_cfg.max_steps,
        "final": "skip" if final_cfg is None else final_overrides,
        "srcc": {},
    }
    result["srcc"]["base"] = clock.run("eval_base", held_out_srcc, base, dataset, table, args.split)
    model = clock.run("sft", run_sft, base, dataset, table, sft_cfg, run_dir / "sft")
    result["srcc"]["sft"] = clock.run("eval_sft", held_out_srcc, str(model), dataset, table, args.split)
    if grpo_cfg is not None:
        model = clock.run("grpo", run_grpo, str(model), dataset, table, grpo_cfg, run_dir / "grpo")
        result["srcc"]["grpo"] = clock.run("eval_grpo", held_out_srcc, str(model), dataset, table, args.split)
    if final_cfg is not None:
        model = clock.run("final_sft", run_sft, str(model), dataset, table, final_cfg, run_dir / "final")
        result["srcc"]["final"] = clock.run(
            "eval_final", held_out_srcc, str(model), dataset, table, args.split
        )
    if args.train_split:
        result["srcc"]["train"] = held_out_srcc(str(model), dataset, table, "train")
    result["time"] = clock.parts
    print(json.dumps(result), flush=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
