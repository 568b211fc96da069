"""The GPU path, measured: the training stages on CUDA, and a step of a Qwen3-VL-8B-shaped model.

Two commands. ``--prepare`` (here, on any machine with the project installed) writes the inputs into
``--work``; ``--run`` (on a machine with a GPU; CPU works too, slowly, for checking the script) trains on
them and writes ``gpu.json`` (one object, rewritten after each part, so a run cut short keeps what it
measured) into ``--out``.

1. **Pipeline stages, CPU against CUDA** — the local recipe's SFT → GRPO → final SFT (``run_sft``,
   ``run_grpo``, the same functions the workflow's tasks call) on the tiny model and a small synthetic
   corpus: once with the ``local`` profile as shipped (CPU, float32, one torch thread) and once with the
   same configs on CUDA in bf16. Prints seconds per optimizer step of each stage and their ratio, the peak
   GPU memory, and the last logged losses/rewards of each run (finite, and close to the CPU run's).
2. **Qwen3-VL-8B shape** — Qwen3-VL-8B-Instruct's published architecture (36 × 4096 language model with
   8 KV heads, 27 × 1152 vision tower with DeepStack at blocks 8/16/24, untied 151,936-token vocabulary;
   8.8 B parameters) with *random* bf16 weights (no model hub here), the project's tokenizer and Qwen3-VL's
   patch geometry, trained with the ``qwen3-vl-8b`` profile's stage-1 config (bf16, activation
   checkpointing, FlashAttention-2 when installed else SDPA, vision tower at 0.1× the rate, λ = 1, CoT
   target for half the clips) on one GPU (no ZeRO: one process) with the same trainer and collator as
   ``run_sft``, on the real AIGVE-Bench videos of ``shared/data`` sampled with the production SlowFast
   sampler. LoRA (r = 16 on the language model's linear layers) and full fine-tuning; then scoring
   throughput (the four level slots, greedy, as ``qsave score`` reads them). Prints seconds per step,
   clips and visual tokens per second, and peak memory.
3. **GRPO at the 8B shape** (``8b-grpo``, run before part 2) — the same random model saved once, loaded
   as :func:`qsave.grpo.run_grpo` loads a stage's input, and trained a few steps with the ``qwen3-vl-8b``
   profile's GRPO config (groups of 4 completions of up to 256 tokens, β = 0.04) through ``build_trainer``:
   LoRA (the reference is the policy with its adapter off) and full fine-tuning (trl loads a second copy
   as the reference). Prints seconds per step, completion lengths, KL, the vision tower's calls in the
   policy and the reference, and peak memory.

    .venv/bin/python benchmarks/bench_gpu.py --prepare --work .gpu
    python3 benchmarks/bench_gpu.py --run --work .gpu --out results/    # where the GPU is

Random weights make the 8B losses meaningless; they time the real shapes and memory. The figures of the
runs so far are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qsave  # noqa: F401  (before transformers: applies the torchvision shim)

REPO = Path(__file__).resolve().parent.parent
AIGVE = REPO.parent / "shared" / "data" / "aigve-bench-toy"

QWEN3_VL_8B_TEXT: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "tie_word_embeddings": False,
}
"""Qwen/Qwen3-VL-8B-Instruct's language model (its ``config.json``'s ``text_config``)."""
QWEN3_VL_8B_VISION: dict[str, Any] = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "out_hidden_size": 4096,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
    "hidden_act": "gelu_pytorch_tanh",
}
"""Qwen/Qwen3-VL-8B-Instruct's vision tower (its ``config.json``'s ``vision_config``)."""
SMALL_SHAPE = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "vocab_size": 4096}
SMALL_VISION = {
    "depth": 9, "deepstack_visual_indexes": [2, 5, 8], "hidden_size": 128, "intermediate_size": 256,
}  # fmt: skip
"""``--small``: the same graph at a size a CPU checks in minutes (vision depth 9 keeps DeepStack's layers)."""


# --------------------------------------------------------------------------------------------- prepare


def prepare(work: Path, n: int) -> None:
    """Write ``work/tiny`` (the fresh tiny base), ``work/local`` (synthetic corpus + local-sampler clips)
    and ``work/aigve`` (AIGVE-Bench toy rows + production-sampler clips)."""
    from bench_learning import corpus  # same folder: the synthetic corpus, rendered and preprocessed

    from qsave.importers import import_aigve
    from qsave.manifest import write_manifest
    from qsave.modeling import TinyModelConfig, tiny_model_path
    from qsave.preprocess import export_clips, merge_results, preprocess_shard
    from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig
    from qsave.synthetic import MANIFEST_NAME
    from qsave.video import DecodeLimits

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(tiny_model_path(TinyModelConfig()), work / "tiny")
    dataset, table = corpus(Path("/tmp/qsave-bench-gpu"), n, 0)
    (work / "local" / "dataset").mkdir(parents=True)
    shutil.copy(dataset / MANIFEST_NAME, work / "local" / "dataset")  # training reads clips, not videos
    import pandas as pd

    export_clips(pd.read_parquet(table), work / "local" / "clips", LOCAL_SAMPLER)

    imported = import_aigve(AIGVE)
    print(imported.report())
    write_manifest(imported.manifest, work / "aigve" / "dataset" / MANIFEST_NAME)
    shard = preprocess_shard(
        imported.manifest, SamplerConfig(), DecodeLimits(), "/tmp/qsave-bench-gpu/8b", None, True
    )
    export_clips(merge_results([shard.table]), work / "aigve" / "clips", SamplerConfig())
    print(shard.table[["video_id", "status", "reason", "slow_tokens", "fast_tokens"]].to_string())


# --------------------------------------------------------------------------------------------- measuring


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_timer() -> Any:
    """A Trainer callback recording the wall time between optimizer steps (``.seconds``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.last = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            self.last = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

    return StepTimer()


def no_final_checkpoint() -> Any:
    """A Trainer callback that stops the checkpoint a ``steps`` save strategy writes after the last step
    (an 8B full fine-tune's is ~50 GB with its optimizer state: more than a lent machine's disk holds)."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            control.should_save = False
            return control

    return NoFinalCheckpoint()


def steady(seconds: list[float], skip: int = 2) -> float:
    """Median seconds per step after the first ``skip`` (compilation, allocator and cache warm-up)."""
    rest = seconds[skip:] or seconds
    return round(statistics.median(rest), 4) if rest else float("nan")


def count_calls(module: Any, calls: dict[str, int], key: str) -> None:
    """Add one to ``calls[key]`` at every forward call of ``module``."""

    def hook(*_: Any) -> None:
        calls[key] += 1

    module.register_forward_hook(hook)


def fresh_peak() -> None:
    """Free what earlier runs left on the GPU (their trainers hold reference cycles, so ``del`` alone
    does not) and restart the peak-memory count."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0.0


def last_logged(metrics: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """The last value of each of ``keys`` in a stage's ``metrics.jsonl``."""
    found: dict[str, float] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        found.update({k: round(float(record[k]), 4) for k in keys if k in record})
    return found


# --------------------------------------------------------------------------------------------- part 1


def stages_on(device: str, work: Path, out: Path, steps: dict[str, int]) -> dict[str, Any]:
    """SFT → GRPO → final SFT of the local recipe on ``device`` (``cpu``: float32 as shipped; ``cuda``:
    bf16), ``steps`` optimizer steps each; seconds per step and the last logged losses/rewards."""

    from qsave.grpo import run_grpo
    from qsave.preprocess import exported_sampler, read_exported
    from qsave.recipe import Recipe, stage_configs
    from qsave.sft import run_sft

    clips = work / "local" / "clips"
    table, sampler = read_exported(clips), exported_sampler(clips)
    sft, grpo, final = stage_configs(Recipe(base_model=str(work / "tiny")))
    gpu = {"use_cpu": False, "dtype": "bfloat16"} if device == "cuda" else {}
    source, report = str(work / "tiny"), {}
    runs: list[tuple[str, Any, Callable[..., Path], tuple[str, ...]]] = [
        ("sft", dataclasses.replace(sft, projector_calibration_clips=0), run_sft, ("loss", "ce", "dist")),
        ("grpo", grpo, run_grpo, ("reward", "kl", "completions/mean_length")),
        ("final_sft", final, run_sft, ("loss", "ce", "dist")),
    ]
    for name, cfg, run, keys in runs:
        cfg = dataclasses.replace(
            cfg, max_steps=steps[name], save_steps=10**6, profile=dataclasses.replace(cfg.profile, **gpu)
        )
        fresh_peak()
        timer = step_timer()
        started = time.perf_counter()
        model = run(
            source, work / "local" / "dataset", table, cfg, out / f"{device}-{name}",
            clips_sampler=sampler, callbacks=[timer],
        )  # fmt: skip
        report[name] = {
            "steps": len(timer.seconds),
            "s_per_step": steady(timer.seconds),
            "stage_s": round(time.perf_counter() - started, 1),
            "peak_gpu_gib": peak_gib() if device == "cuda" else None,
            "last": last_logged(out / f"{device}-{name}" / "metrics.jsonl", keys),
        }
        print(device, name, json.dumps(report[name]), flush=True)
        source = str(model)
    return report


# --------------------------------------------------------------------------------------------- part 2


def aigve_examples(work: Path) -> tuple[list[Any], list[Any]]:
    """The AIGVE rows ``--prepare`` wrote, as training examples over their clips, and the rows skipped."""
    from qsave.manifest import read_manifest
    from qsave.preprocess import read_exported
    from qsave.synthetic import MANIFEST_NAME
    from qsave.training import load_examples

    manifest = read_manifest(work / "aigve" / "dataset" / MANIFEST_NAME)
    return load_examples(manifest, read_exported(work / "aigve" / "clips"), None)


def big_model(processor: Any, small: bool, attn: str) -> Any:
    """Qwen3-VL-8B-Instruct's architecture with random bf16 weights, built on the GPU, ids from
    ``processor``'s tokenizer (``small``: the same graph, a few layers, for a CPU check)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from qsave.modeling import SPECIAL_TOKENS

    tokenizer = processor.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {**QWEN3_VL_8B_TEXT, "pad_token_id": ids["<|endoftext|>"], **(SMALL_SHAPE if small else {})}
    vision = {**QWEN3_VL_8B_VISION, **(SMALL_VISION if small else {})}
    vision["out_hidden_size"] = text["hidden_size"]
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation=attn
        )
    return model


def big_shape(work: Path, out: Path, steps: int, small: bool, batch: int) -> dict[str, Any]:
    """LoRA and full fine-tuning steps of the 8B shape on the AIGVE clips, then scoring throughput."""
    import torch
    from transformers import AutoProcessor, TrainingArguments

    from qsave.preprocess import load_clip
    from qsave.sft import dual_supervision_trainer_class, profile_configs
    from qsave.training import (
        LoraSettings,
        SupervisedCollator,
        SupervisedDataset,
        prepare_for_training,
        resolve_attn_implementation,
        trainable_parameters,
    )

    processor = AutoProcessor.from_pretrained(work / "tiny")
    examples, skipped = aigve_examples(work)
    base = profile_configs("qwen3-vl-8b")["sft"]
    attn = resolve_attn_implementation(base.profile.attn_implementation)
    profile = dataclasses.replace(
        base.profile, distributed="none", distributed_config="", dataloader_workers=2,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    visual = [load_clip(e.clip_path) for e in examples]
    tokens = [c.slow.tokens + c.fast.tokens for c in visual]
    report: dict[str, Any] = {
        "clips": len(examples),
        "skipped": {s.video_id: s.reason for s in skipped},
        "visual_tokens_per_clip": tokens,
        "attn_implementation": attn,
    }
    dataset = SupervisedDataset(examples, base.think_fraction, base.seed)
    batch = min(batch, len(dataset))  # a bigger batch would be one short batch an epoch
    collator = SupervisedCollator(processor, base.sigma_min)
    sample = collator([dataset[i] for i in range(batch)])
    report["per_device_batch_size"] = batch
    report["sequence_length"] = int(sample["input_ids"].shape[1])
    for mode, lora in (("lora", LoraSettings(enabled=True)), ("full", LoraSettings())):
        fresh_peak()
        model = prepare_for_training(big_model(processor, small, attn), lora)
        trainable, total = trainable_parameters(model)
        cfg = dataclasses.replace(
            base, max_steps=steps, per_device_batch_size=batch, gradient_accumulation_steps=1,
            logging_steps=1, save_steps=10**6, lora=lora, profile=profile,
        )  # fmt: skip
        args = TrainingArguments(**cfg.training_arguments(out / f"8b-{mode}"))
        timer = step_timer()
        trainer = dual_supervision_trainer_class()(
            model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=processor,
            callbacks=[timer, no_final_checkpoint()], lam=cfg.lam,
            vision_lr_multiplier=cfg.vision_lr_multiplier,
        )  # fmt: skip
        trainer.train()
        per_step = steady(timer.seconds)
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        report[mode] = {
            "parameters": total,
            "trainable": trainable,
            "steps": len(timer.seconds),
            "s_per_step": per_step,
            "first_steps_s": [round(t, 2) for t in timer.seconds[:2]],
            "clips_per_s": round(batch / per_step, 3),
            "visual_tokens_per_s": round(batch * statistics.mean(tokens) / per_step, 1),
            "peak_gpu_gib": peak_gib(),
            "losses_finite": all(loss == loss and abs(loss) != float("inf") for loss in losses),
        }
        print("8b", mode, json.dumps(report[mode]), flush=True)
        del trainer
        if mode == "full":
            report["scoring"] = scoring_rate(model.eval(), processor, visual, examples, batch)
            print("8b scoring", json.dumps(report["scoring"]), flush=True)
        del model
    return report


def big_grpo(
    work: Path,
    out: Path,
    steps: int,
    small: bool,
    modes: list[str],
    report: dict[str, Any],
    save: Callable[[], None],
    completion: int = 0,
) -> None:
    """GRPO steps of the 8B shape with the ``qwen3-vl-8b`` profile's GRPO config on the AIGVE clips.

    The random model is saved once and each mode loads it the way :func:`qsave.grpo.run_grpo` does
    (``load_for_training``, then ``build_trainer``; full fine-tuning's reference model is loaded by trl from
    that directory, LoRA's is the policy with its adapter off). Forward hooks count the vision tower's
    calls (policy and reference), so the report shows the video reaching the rollouts and both
    log-prob passes at this shape."""
    import torch
    from transformers import AutoProcessor

    from qsave.grpo import build_trainer, grpo_row
    from qsave.modeling import PROMPT_FILE
    from qsave.recipe import Recipe, stage_configs
    from qsave.training import (
        LoraSettings,
        load_for_training,
        resolve_attn_implementation,
        trainable_parameters,
    )

    _, grpo, _ = stage_configs(Recipe(profile="qwen3-vl-8b"))
    assert grpo is not None
    if completion:
        grpo = dataclasses.replace(grpo, max_completion_length=completion)
    profile = dataclasses.replace(
        grpo.profile, distributed="none", distributed_config="", use_cpu=not torch.cuda.is_available()
    )
    attn = resolve_attn_implementation(profile.attn_implementation)
    base_dir = out / "8b-base"
    processor = AutoProcessor.from_pretrained(work / "tiny")
    started = time.perf_counter()
    # the tokenizer's files without the tiny model's prompt record: the hub model's ("full") prompt
    shutil.rmtree(base_dir, ignore_errors=True)  # a run cut short leaves it
    shutil.copytree(work / "tiny", base_dir, ignore=shutil.ignore_patterns("*.safetensors", PROMPT_FILE))
    model = big_model(processor, small, attn)
    model.save_pretrained(base_dir)
    del model
    report["save_base_s"] = round(time.perf_counter() - started, 1)
    examples, _ = aigve_examples(work)
    report["config"] = {
        "num_generations": grpo.num_generations,
        "per_device_train_batch_size": grpo.per_device_train_batch_size,
        "max_completion_length": grpo.max_completion_length,
        "beta": grpo.beta,
        "attn_implementation": attn,
    }
    for mode in modes:
        lora = LoraSettings(enabled=mode == "lora")
        cfg = dataclasses.replace(
            grpo, max_steps=steps, gradient_accumulation_steps=1, save_steps=10**6, lora=lora, profile=profile
        )
        fresh_peak()
        started = time.perf_counter()
        model, processor = load_for_training(str(base_dir), cfg.profile, LoraSettings(enabled=False))
        calls = {"policy": 0, "reference": 0}
        count_calls(model.model.visual, calls, "policy")
        timer = step_timer()
        trainer = build_trainer(
            model, processor, [grpo_row(e) for e in examples], cfg, out / f"8b-grpo-{mode}",
            [timer, no_final_checkpoint()],
        )  # fmt: skip
        if trainer.ref_model is not None:
            count_calls(trainer.ref_model.model.visual, calls, "reference")
        set_up = time.perf_counter() - started
        trainer.train()
        trainable, total = trainable_parameters(trainer.model)
        logged, nan = [r for r in trainer.state.log_history if "reward" in r], float("nan")
        report[mode] = {
            "parameters": total,
            "trainable": trainable,
            "load_and_set_up_s": round(set_up, 1),
            "steps": len(timer.seconds),
            "s_per_step": steady(timer.seconds, skip=1),
            "step_s": [round(t, 2) for t in timer.seconds],
            "completions_per_step": cfg.per_device_train_batch_size,
            "mean_completion_length": [round(r.get("completions/mean_length", nan), 1) for r in logged],
            "kl": [round(r.get("kl", nan), 5) for r in logged],
            "vision_tower_calls": dict(calls),
            "peak_gpu_gib": peak_gib(),
        }
        print("8b grpo", mode, json.dumps(report[mode]), flush=True)
        save()
        del trainer, model
    shutil.rmtree(base_dir, ignore_errors=True)


def scoring_rate(
    model: Any, processor: Any, clips: list[Any], examples: list[Any], batch: int
) -> dict[str, Any]:
    """Clips per second through :func:`qsave.scoring.score_clips` in batches of ``batch``, warmed up."""
    import torch

    from qsave.scoring import score_clips

    prompts = [e.prompt for e in examples]
    chunks = [(clips[i : i + batch], prompts[i : i + batch]) for i in range(0, len(clips), batch)]
    score_clips(model, processor, *chunks[0])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _sync()
    started = time.perf_counter()
    for _ in range(3):
        for c, p in chunks:
            score_clips(model, processor, c, p)
    _sync()
    seconds = time.perf_counter() - started
    return {"clips_per_s": round(3 * len(clips) / seconds, 2), "peak_gpu_gib": peak_gib()}


# --------------------------------------------------------------------------------------------- main


def environment() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16=True)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", action="store_true", help="write the inputs into --work (needs decord)")
    mode.add_argument("--run", action="store_true", help="train on --work's inputs, write --out/gpu.json")
    parser.add_argument("--work", type=Path, default=Path(".gpu"))
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--n", type=int, default=96, help="--prepare: synthetic clips")
    parser.add_argument("--sft-steps", type=int, default=30)
    parser.add_argument("--grpo-steps", type=int, default=8)
    parser.add_argument("--big-steps", type=int, default=8, help="optimizer steps per 8B-shape run")
    parser.add_argument("--batch", type=int, default=2, help="8B shape: clips a step (at most all clips)")
    parser.add_argument(
        "--parts", nargs="+", default=["stages", "8b-grpo", "8b"], choices=["stages", "8b-grpo", "8b"],
        help="run in this order: stages, 8b-grpo, 8b",
    )  # fmt: skip
    parser.add_argument("--grpo-modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--big-grpo-steps", type=int, default=3, help="GRPO steps per 8B-shape mode")
    parser.add_argument(
        "--big-grpo-completion", type=int, default=0, help="8B GRPO: completion tokens at most (0: profile's)"
    )
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="part 1's devices")
    parser.add_argument("--small", action="store_true", help="8B graph at a few layers (a CPU check)")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.work, args.n)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment()}

    def save() -> None:
        (args.out / "gpu.json").write_text(json.dumps(results, indent=2))

    save()
    if "stages" in args.parts:
        steps = {"sft": args.sft_steps, "grpo": args.grpo_steps, "final_sft": args.sft_steps}
        for device in args.devices:
            results[f"stages_{device}"] = stages_on(device, args.work, args.out / "runs", steps)
            save()
        if {"cpu", "cuda"} <= set(args.devices):
            results["cuda_over_cpu_time"] = {
                name: round(
                    results["stages_cuda"][name]["s_per_step"] / results["stages_cpu"][name]["s_per_step"], 3
                )
                for name in steps
            }
            print("CUDA/CPU time per step:", json.dumps(results["cuda_over_cpu_time"]), flush=True)
            save()
    if "8b-grpo" in args.parts:
        results["qwen3_vl_8b_shape_grpo"] = {}
        big_grpo(
            args.work, args.out / "runs", args.big_grpo_steps, args.small, args.grpo_modes,
            results["qwen3_vl_8b_shape_grpo"], save, args.big_grpo_completion,
        )  # fmt: skip
    if "8b" in args.parts:
        results["qwen3_vl_8b_shape"] = big_shape(
            args.work, args.out / "runs", args.big_steps, args.small, args.batch
        )
        save()
    shutil.rmtree(args.out / "runs", ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
