"""Benchmark: probability-based scoring against generating the full CoT answer and parsing it.

Same model, same inputs (SlowFast clips of the real LaVie samples in ``../shared/data``, cycled to fill
the batch), side by side at batch sizes 1, 4 and 16:

- ``probability`` — :func:`qsave.scoring.score_clips`: input building, one prefill and three cached decode
  steps of a few tokens, five-level softmax per dimension;
- ``generate``    — :func:`qsave.scoring.generate_answers` then :func:`qsave.prompts.parse_lenient`: input
  building, prefill, then greedy decoding of a whole CoT answer. An untrained model never stops on its
  own, so the answer length is fixed to the token length of a real CoT target built from a rated row
  (``--answer-tokens`` overrides): the work a trained model does to write its answer.

Decoding the videos is done once beforehand and not timed (both paths share it). Each cell is the median
of ``--repeats`` runs after one warm-up, the two paths interleaved; wall time and CPU time (this process,
all threads — far less sensitive to other work on a shared machine) are both reported. Latency is
milliseconds per video (batch time / batch size); throughput is videos per second (wall).

Run: ``.venv/bin/python benchmarks/bench_scoring.py [--json] [--model tiny] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qsave.importers import import_folder  # noqa: E402
from qsave.inputs import build_inputs  # noqa: E402
from qsave.modeling import load_model, model_sampler_config, resolve_model_path  # noqa: E402
from qsave.prompts import build_target, parse_lenient, scoring_prefix  # noqa: E402
from qsave.scoring import generate_answers, score_clips  # noqa: E402
from qsave.slowfast import SamplerConfig, sample_clip  # noqa: E402

SAMPLES = REPO.parent / "shared" / "data" / "vbench-lavie-style"
BATCH_SIZES = (1, 4, 16)
RATED_ROW = {
    "video_id": "reference",
    "mos_vq": 2.2,
    "mos_mq": 2.8,
    "mos_ta": 3.4,
    "mos_overall": 2.6,
    "reasons_vq": ["blur", "compression_blocks"],
    "reasons_mq": ["flicker", "morphing"],
    "reasons_ta": ["wrong_scene"],
    "explanation": "waves smear into the sand and the style drifts between frames",
}
"""A typical low-rated row: its CoT target sets the generated answer's length."""


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, CPU s) per function, runs interleaved A B A B … after one warm-up each.

    The machine is shared: interleaving exposes both paths to the same background load, and CPU time
    (this process, all threads) is reported beside wall time because it is far less sensitive to it.
    """
    for fn in fns.values():
        fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in samples.items()
    }


def run(model_name: str, repeats: int, answer_tokens: int | None, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)

    model_dir = resolve_model_path(model_name)
    model, processor = load_model(model_dir)
    sampler = model_sampler_config(model_dir) or SamplerConfig()
    manifest = import_folder(SAMPLES).manifest
    decoded = [sample_clip(p, sampler) for p in manifest["video_path"]]
    prompts_all = [str(p) for p in manifest["prompt"]]
    prefill = build_inputs(processor, decoded[:1], prompts_all[:1], answer_prefixes=[scoring_prefix()])
    if answer_tokens is None:
        answer_tokens = len(processor.tokenizer.encode(build_target(RATED_ROW), add_special_tokens=False)) + 1
    result: dict[str, Any] = {
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "answer_tokens": answer_tokens,
        "visual_tokens_per_video": decoded[0].tokens,
        "prompt_tokens_per_video": int(prefill.input_ids.shape[1]),
        "repeats": repeats,
        "batches": {},
    }
    for size in BATCH_SIZES:
        clips = [decoded[i % len(decoded)] for i in range(size)]
        prompts = [prompts_all[i % len(prompts_all)] for i in range(size)]

        def probability(clips: list[Any] = clips, prompts: list[str] = prompts) -> object:
            return score_clips(model, processor, clips, prompts)

        def generate(clips: list[Any] = clips, prompts: list[str] = prompts) -> object:
            texts = generate_answers(
                model, processor, clips, prompts, answer_tokens, min_new_tokens=answer_tokens
            )
            return [parse_lenient(t) for t in texts]

        timed = _interleaved({"probability": probability, "generate": generate}, repeats)
        (prob_s, prob_cpu), (gen_s, gen_cpu) = timed["probability"], timed["generate"]
        result["batches"][str(size)] = {
            "probability_ms_per_video": round(prob_s / size * 1e3, 2),
            "generate_ms_per_video": round(gen_s / size * 1e3, 2),
            "probability_videos_per_s": round(size / prob_s, 3),
            "generate_videos_per_s": round(size / gen_s, 3),
            "speedup": round(gen_s / prob_s, 2),
            "probability_cpu_ms_per_video": round(prob_cpu / size * 1e3, 2),
            "generate_cpu_ms_per_video": round(gen_cpu / size * 1e3, 2),
            "speedup_cpu": round(gen_cpu / prob_cpu, 2),
        }
        print(f"batch {size}: {result['batches'][str(size)]}", file=sys.stderr)
    result["speedup_vs_generate_batch1"] = result["batches"]["1"]["speedup"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--model", default="tiny", help="model dir, hub id, 'tiny' or models:/… (default tiny)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median; default 3)")
    parser.add_argument("--answer-tokens", type=int, default=None, help="generated answer length")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, spinning worker threads make both wall "
        "and CPU time erratic)",
    )
    args = parser.parse_args()
    result = run(args.model, args.repeats, args.answer_tokens, args.threads)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"model {result['model']} ({result['parameters']:,} params), {result['torch_threads']} CPU threads; "
        f"{result['prompt_tokens_per_video']} prompt tokens ({result['visual_tokens_per_video']} visual), "
        f"generated answer {result['answer_tokens']} tokens"
    )
    header = ("batch", "prob ms/video", "gen ms/video", "prob video/s", "gen video/s", "speedup (wall, cpu)")
    print(" ".join(f"{h:>13}" for h in header))
    for size, row in result["batches"].items():
        cells = [f"{row[k]:.2f}" for k in list(row)[:4]] + [
            f"{row['speedup']:.1f}x ({row['speedup_cpu']:.1f}x cpu)"
        ]
        print(" ".join(f"{c:>13}" for c in [size, *cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
