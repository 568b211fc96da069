"""What the frozen vision tower's tokens hold, and how much of it is in their plain mean over tokens.

    .venv/bin/python benchmarks/bench_tower_probe.py [--model DIR] [--n 1200] [--json]

Runs the vision tower of the tiny model (default: the cached ``local`` base, the one stage 1 starts from
and keeps frozen) on the train and test clips of the benchmark corpus (built and cached as in
``bench_learning.py``) and reads two places:

- ``block``: the last block's output, the input of the merger's LayerNorm;
- ``merger LN``: that LayerNorm's output, what the projector's trainable MLP reads (its affine, set by
  stage 1's calibration, does not change a tree's reading).

For each clip, segment (slow, fast) and channel it takes four statistics over the segment's tokens: the
**mean**, the **std** over all tokens, the **temporal std** of the per-frame means, and the **mean |Δ|** of
each token between consecutive temporal patches. Gradient-boosted trees fitted on the train split map a
set of them to each MOS; the table gives held-out SRCC per set. The ``mean`` row is the easy reading —
what uniform attention in the language model computes; the rows beyond it are what stage 1 has to learn
to compute (a nonlinearity before pooling for std, a comparison across time for |Δ|). Compare with stage
1's own held-out SRCC (``docs/learning.md``) to see whether a gap is in the tower or in the reading.

A second table asks the same trees for each **prompt-free TA cue** of ``bench_ta_ceiling.py`` (a faded
group, a blended background, an in-between colour or shape, a diagonal motion, a group larger than any
prompt asks for), as drawn: which of the misalignments that show without the prompt the tower perceives.
A probe, not a model: ~2 minutes on one core after the corpus is cached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.manifest import read_manifest
from qsave.metrics import spearman
from qsave.schema import DIMENSIONS, mos_column
from qsave.synthetic import MANIFEST_NAME

STATISTICS = ("mean", "std", "temporal std", "mean |Δ|")
SETS: dict[str, tuple[int, ...]] = {
    "mean": (0,),
    "std": (1,),
    "temporal std": (2,),
    "mean |Δ|": (3,),
    "mean + std": (0, 1),
    "mean + temporal": (0, 2, 3),
    "all four": (0, 1, 2, 3),
}


def segment_statistics(tokens: Any, frames: int) -> NDArray[np.float64]:
    """``(4 × channels,)``: the four statistics of one segment's ``(frames × patches, channels)`` tokens."""
    import torch

    x = tokens.reshape(frames, -1, tokens.shape[-1]).double()
    flat = x.reshape(-1, x.shape[-1])
    change = (x[1:] - x[:-1]).abs().mean((0, 1)) if frames > 1 else torch.zeros(x.shape[-1])
    stats = [flat.mean(0), flat.std(0), x.mean(1).std(0, unbiased=False), change]
    return torch.cat(stats).numpy()


def load_tower(model_dir: str) -> tuple[Any, Any]:
    """``(processor, vision tower)`` of the model in ``model_dir``, in eval mode."""
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    return processor, Qwen3VLForConditionalGeneration.from_pretrained(model_dir).eval().model.visual


def tower_statistics(
    processor: Any, visual: Any, clips: Sequence[Any], prompts: Sequence[str]
) -> dict[str, NDArray[Any]]:
    """Per clip, the statistics of both segments at the block output and the merger LayerNorm output."""
    import torch

    from qsave.inputs import build_inputs
    from qsave.preprocess import load_clip

    seen: dict[str, Any] = {}

    def keep(_module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        seen["block"], seen["merger LN"] = inputs[0].detach(), output.detach()

    hook = visual.merger.norm.register_forward_hook(keep)
    rows: dict[str, list[NDArray[np.float64]]] = {"block": [], "merger LN": []}
    try:
        for start in range(0, len(clips), 16):
            batch = build_inputs(
                processor,
                [load_clip(path) for path in clips[start : start + 16]],
                list(prompts[start : start + 16]),
            )
            grid = batch.model_kwargs["video_grid_thw"]
            with torch.no_grad():
                visual(batch.model_kwargs["pixel_values_videos"], grid_thw=grid)
            sizes = [int(t * h * w) for t, h, w in grid.tolist()]
            frames = [int(t) for t in grid[:, 0].tolist()]
            for place, out in rows.items():
                parts = torch.split(seen[place].reshape(sum(sizes), -1), sizes)
                stats = [segment_statistics(p, f) for p, f in zip(parts, frames, strict=True)]
                out += [np.concatenate(stats[i : i + 2]) for i in range(0, len(stats), 2)]  # slow + fast
    finally:
        hook.remove()
    return {place: np.stack(out) for place, out in rows.items()}


def columns(chosen: tuple[int, ...], channels: int) -> list[int]:
    """Feature indices of the chosen statistics for both segments."""
    return [
        segment * len(STATISTICS) * channels + k * channels + c
        for segment in (0, 1)
        for k in chosen
        for c in range(channels)
    ]


CUE_SETS = ("mean", "all four")
"""The statistics sets the cue table reads."""


def probe(
    train: NDArray[Any], y_train: NDArray[Any], test: NDArray[Any], y_test: NDArray[Any]
) -> list[float]:
    """Held-out SRCC per target column of boosted trees fitted on the train statistics."""
    from bench_ta_ceiling import boosted_trees

    out = []
    for d in range(y_train.shape[1]):
        trees = boosted_trees().fit(train, y_train[:, d])
        out.append(round(spearman(trees.predict(test), y_test[:, d]), 3))
    return out


def drawn_cues(n: int, seed: int) -> dict[str, list[float]]:
    """Video id → its prompt-free TA cues as drawn (``bench_ta_ceiling.PROMPT_FREE_CUES`` order)."""
    from bench_ta_ceiling import prompt_free_cues

    from qsave.synthetic import SynthConfig, corpus_rows

    plans, _ = corpus_rows(SynthConfig(n=n, seed=seed))
    return {plan.video_id: prompt_free_cues(plan) for plan in plans}


def main() -> None:
    from bench_learning import corpus
    from bench_ta_ceiling import PROMPT_FREE_CUES

    from qsave.modeling import TinyModelConfig, tiny_model_path
    from qsave.training import load_examples

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the cached local base model)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="synthetic clips (70/15/15 prompt split)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    dataset, table = corpus(args.work, args.n, 0)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    model_dir = args.model or str(tiny_model_path(TinyModelConfig()))
    processor, visual = load_tower(model_dir)
    cues = drawn_cues(args.n, 0)
    data = {}
    for split in ("train", "test"):
        examples, _ = load_examples(manifest, table, split)
        stats = tower_statistics(
            processor, visual, [e.clip_path for e in examples], [e.prompt for e in examples]
        )
        mos = np.array([[float(e.row[mos_column(d)]) for d in DIMENSIONS] for e in examples])
        data[split] = (stats, mos, np.array([cues[str(e.row["video_id"])] for e in examples]))
    (train, y_train, c_train), (test, y_test, c_test) = data["train"], data["test"]
    channels = train["block"].shape[1] // (2 * len(STATISTICS))
    places = ("block", "merger LN")
    result = {
        place: {
            name: probe(train[place][:, cols], y_train, test[place][:, cols], y_test)
            for name, chosen in SETS.items()
            for cols in [columns(chosen, channels)]
        }
        for place in places
    }
    cue_result = {
        place: {
            name: probe(train[place][:, cols], c_train, test[place][:, cols], c_test)
            for name in CUE_SETS
            for cols in [columns(SETS[name], channels)]
        }
        for place in places
    }
    if args.json:
        print(
            json.dumps(
                {
                    "model": model_dir,
                    "srcc": result,
                    "dimensions": list(DIMENSIONS),
                    "cue_srcc": cue_result,
                    "cues": list(PROMPT_FREE_CUES),
                }
            )
        )
        return
    print(f"held-out SRCC ({' / '.join(DIMENSIONS)}) of boosted trees on tower statistics, {model_dir}")
    print(f"{'statistics':<18} {'block output':<28} merger LayerNorm output")
    for name in SETS:
        block, merged = (" / ".join(f"{v:.2f}" for v in result[p][name]) for p in places)
        print(f"{name:<18} {block:<28} {merged}")
    print(f"\nheld-out SRCC with each prompt-free TA cue as drawn ({' / '.join(PROMPT_FREE_CUES)})")
    for place in places:
        for name in CUE_SETS:
            print(f"{place + ', ' + name:<22} " + " / ".join(f"{v:.2f}" for v in cue_result[place][name]))


if __name__ == "__main__":
    main()
