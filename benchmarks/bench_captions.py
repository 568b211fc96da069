"""Can the tiny model say what a clip shows? Attribute accuracy of its captions, and the TA they could carry.

Text-video alignment needs the model to compare the prompt with the clip. This measures the first half,
describing: the caption-pretrained tiny base (:mod:`qsave.pretrain`, trained on its own synthetic corpus,
cached) captions the held-out clips of the default corpus greedily; each caption is parsed into the
background, the number of object groups and the first group's count, colour, shape and direction, and
compared with the corpus's true caption (accuracy, beside the share of the most common value). Then what
TA such captions could carry: gradient-boosted trees fit on the train clips' prompt-vs-true-caption
mismatches predict TA MOS of the held-out clips from the true captions (the ceiling) and from the model's.

    .venv/bin/python benchmarks/bench_captions.py                     # the default caption pretraining
    .venv/bin/python benchmarks/bench_captions.py --pretrain '{"n_clips": 1200, "num_train_epochs": 10}'

Prints one JSON line. Results and the session-11 runs it grew out of are in ``docs/learning.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench_learning import corpus  # same folder: the cached synthetic corpus and its clips

import qsave  # noqa: F401  (applies the torchvision shim)
from qsave.manifest import read_manifest
from qsave.scenes import BACKGROUNDS
from qsave.synthetic import MANIFEST_NAME

ATTRIBUTES = ("background", "groups", "count", "color", "shape", "direction")


def groups(caption: str) -> list[list[str]]:
    """The words of each object group of a prompt or caption; a group reads
    "<count> <colour> <shape>[s] moving <direction>"."""
    head = caption.split(" over a ")[0]
    return [] if head.startswith("no objects") else [g.split() for g in head.split(" and ")]


def attributes(caption: str) -> dict[str, str]:
    """The parts of a caption in :func:`qsave.scenes.caption`'s grammar ("?" where it has none)."""
    background = next((b for b in BACKGROUNDS if f"{b} background" in caption), "?")
    found = groups(caption)
    first = found[0] if found else []

    def word(k: int) -> str:
        return first[k] if len(first) > k else "?"

    return {
        "background": background,
        "groups": str(len(found)),
        "count": word(0),
        "color": word(1),
        "shape": word(2).rstrip("s"),
        "direction": word(4),
    }


def mismatches(prompt: str, caption: str) -> list[float]:
    a, b = attributes(prompt), attributes(caption)
    return [float(a[k] != b[k]) for k in ATTRIBUTES]


def generate_captions(model_dir: str, clip_paths: list[str], batch_size: int = 16) -> list[str]:
    import torch

    from qsave.inputs import build_inputs
    from qsave.modeling import load_model
    from qsave.preprocess import load_clip

    torch.set_num_threads(1)
    model, processor = load_model(model_dir)
    tokenizer = processor.tokenizer
    out: list[str] = []
    for start in range(0, len(clip_paths), batch_size):
        clips = [load_clip(p) for p in clip_paths[start : start + batch_size]]
        batch = build_inputs(processor, clips, [""] * len(clips), answer_prefixes=[""] * len(clips))
        with torch.inference_mode():
            ids = model.generate(
                **batch.model_kwargs,
                max_new_tokens=48,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )
        new = ids[:, batch.model_kwargs["input_ids"].shape[1] :]
        out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def main() -> None:
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.ensemble import HistGradientBoostingRegressor

    from qsave.pretrain import PretrainConfig, pretrained_tiny_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qsave-bench-learning"))
    parser.add_argument("--n", type=int, default=1200, help="clips of the evaluated corpus (seed 0)")
    parser.add_argument("--pretrain", default="{}", help="PretrainConfig overrides (JSON)")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    dataset, table = corpus(args.work, args.n, 0)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    clips = pd.read_parquet(table).set_index("video_id")["clip_path"]
    model_dir = pretrained_tiny_path(PretrainConfig(**json.loads(args.pretrain)), progress=True)
    rows = manifest[manifest["split"] == args.split].reset_index(drop=True)
    paths = [str(p if Path(p).is_absolute() else table.parent / p) for p in clips.loc[rows["video_id"]]]
    generated = generate_captions(str(model_dir), paths)

    result: dict[str, Any] = {"pretrain": json.loads(args.pretrain), "clips": len(rows), "accuracy": {}}
    for name in ATTRIBUTES:
        truth = [attributes(c)[name] for c in rows["caption"]]
        said = [attributes(c)[name] for c in generated]
        majority = pd.Series(truth).value_counts(normalize=True).iloc[0]
        accuracy = float(np.mean([t == s for t, s in zip(truth, said, strict=True)]))
        result["accuracy"][name] = {"model": round(accuracy, 3), "majority": round(float(majority), 3)}
    train = manifest[manifest["split"] == "train"]
    trees = HistGradientBoostingRegressor(random_state=0).fit(
        [mismatches(p, c) for p, c in zip(train["prompt"], train["caption"], strict=True)], train["mos_ta"]
    )
    for name, captions in (("ta_srcc_true_captions", rows["caption"]), ("ta_srcc_model_captions", generated)):
        features = [mismatches(p, c) for p, c in zip(rows["prompt"], captions, strict=True)]
        result[name] = round(float(spearmanr(trees.predict(features), rows["mos_ta"])[0]), 3)
    result["examples"] = [
        {"true": t, "model": g} for t, g in zip(rows["caption"][:3], generated[:3], strict=True)
    ]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
