"""What the synthetic corpus's text-video alignment (TA) labels reward: held-out SRCC of the TA MOS against a
perfect perception of each kind of misalignment, of groups of them, and of two comparisons a model could make.

    .venv/bin/python benchmarks/bench_ta_ceiling.py [--n 1200] [--seeds 0 1 2] [--split test] [--json]

Nothing is rendered or trained: the corpus's rows (prompts, what was drawn, the raters' MOS) come from
:func:`qsave.synthetic.corpus_rows` with the default :class:`qsave.synthetic.SynthConfig`, the same rows the
pipeline's default corpus has for seed 0. Each row of the table is a score per clip (higher = better aligned)
and its Spearman correlation with the TA MOS on ``--split`` (``all`` for every clip), per corpus seed:

- ``oracle <codes>``: minus the summed severities (0–1) of those alignment artefacts, as the generator drew
  them — what a model that perceives exactly those artefacts could reach at best, before rater noise.
  ``missing_object`` fades a group (opacity 1 − severity) and ``wrong_scene`` blends in another
  background; below full severity both can be seen without reading the prompt;
- ``count``: minus |total objects the prompt names − total objects the clip's content caption names| (a
  group drawn at under half opacity is not in the caption): counting and adding, no colour or shape binding;
- ``background``: minus 1 when the caption's background differs from the prompt's;
- ``generator mean``: the mean TA MOS of the clip's generator on the train split — a prompt-free cue;
- ``VQ/MQ artefacts``: gradient-boosted trees fitted on the train split from every VQ and MQ artefact's
  severity and the true VQ and MQ scores to the TA MOS — a perfect perception of everything *but* the
  alignment: how much of the generator cue the visible quality gives away (optimistic on ``train``/``all``);
- ``prompt-free <cues>``: the same trees on what the drawn scene shows *without* the prompt, cue by cue
  (cumulative): ``fade`` (1 − the lowest group opacity), ``blend`` (the blended background's weight),
  ``colour`` (distance of the deviating group's colour from the nearest palette colour: a drift is seen
  as an in-between colour until it lands on another palette colour), ``shape`` (1 − the largest shape
  weight: an in-between shape), ``direction`` (the motion's angle from the nearest axis, 0–1: a partial
  rotation is seen as a diagonal), ``count`` (a group of more objects than any prompt asks for).

It bounds what the local model can gain on TA from each perception it might learn (``docs/learning.md``,
session 18): the ranking of the issue's TA target (0.5) against what each route can give.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from qsave.metrics import spearman
from qsave.scenes import BACKGROUNDS, COLORS, COUNT_WORDS, MAX_PROMPT_COUNT
from qsave.synthetic import ClipPlan, SynthConfig, corpus_rows
from qsave.taxonomy import codes_for

VISUAL_CODES = tuple((d, c) for d in ("vq", "mq") for c in codes_for(d))

TA_CODES = codes_for("ta")
NUMBERS = {word: n for n, word in COUNT_WORDS.items()}


def objects_named(text: str) -> int:
    """Total objects a prompt or caption names: the sum of its number words before "over a … background"."""
    return sum(NUMBERS.get(word, 0) for word in text.split(" over a ")[0].split())


def background_named(text: str) -> str:
    tail = text.split(" over a ", 1)[1]
    found = [b for b in BACKGROUNDS if tail.startswith(b)]
    if not found:
        raise ValueError(f"no background in {text!r}")
    return found[0]


def severities(frame: pd.DataFrame) -> pd.DataFrame:
    """(clips × TA codes) severities drawn for each clip; 0 where the artefact is absent."""
    return pd.DataFrame([{c: json.loads(a)["ta"].get(c, 0.0) for c in TA_CODES} for a in frame["artefacts"]])


PROMPT_FREE_CUES = ("fade", "blend", "colour", "shape", "direction", "count")


def boosted_trees() -> Any:
    """The probe regressor of this benchmark, ``bench_tower_probe.py`` and ``bench_ta_cues.py``: 200 rounds of
    scikit-learn's histogram gradient boosting at rate 0.05, seeded."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=0)


def off_axis(angle: float) -> float:
    """How far a direction of ``angle`` degrees lies from the nearest axis: 0 on an axis, 1 on a diagonal."""
    folded = angle % 90.0
    return min(folded, 90.0 - folded) / 45.0


def fitted_ta(frame: pd.DataFrame, x: np.ndarray) -> np.ndarray:
    """TA predicted from per-clip features ``x`` by gradient-boosted trees fitted on the train split."""
    train = (frame["split"] == "train").to_numpy()
    return np.asarray(boosted_trees().fit(x[train], frame["mos_ta"][train]).predict(x))


def visual_quality_fit(frame: pd.DataFrame) -> np.ndarray:
    """TA predicted from the VQ/MQ artefacts' severities and the true VQ/MQ scores (trees fitted on train)."""
    drawn = [json.loads(a) for a in frame["artefacts"]]
    x = np.array([[art[d].get(c, 0.0) for d, c in VISUAL_CODES] for art in drawn])
    return fitted_ta(frame, np.c_[x, frame[["true_vq", "true_mq"]].to_numpy()])


def prompt_free_cues(plan: ClipPlan) -> list[float]:
    """What the drawn scene shows of its misalignments without the prompt, in ``PROMPT_FREE_CUES`` order."""
    drawn = plan.drawn
    first = drawn.groups[0]
    palette = np.asarray(list(COLORS.values()))
    return [
        1.0 - min(g.opacity for g in drawn.groups),
        drawn.background_mix[1] if drawn.background_mix else 0.0,
        float(np.min(np.linalg.norm(palette - np.asarray(first.rgb), axis=1))),
        1.0 - max(first.shape_weights),
        off_axis(first.angle),
        float(any(g.count > MAX_PROMPT_COUNT for g in drawn.groups)),
    ]


def perceptions(plans: Sequence[ClipPlan], frame: pd.DataFrame) -> dict[str, Callable[[], np.ndarray]]:
    """Name → per-clip alignment score (higher = better aligned) over every row of ``frame`` (and ``plans``,
    the same clips in the same order)."""
    sev = severities(frame)
    count_gap = np.array(
        [abs(objects_named(p) - objects_named(c)) for p, c in zip(frame.prompt, frame.caption)]
    )
    scene_gap = np.array(
        [background_named(p) != background_named(c) for p, c in zip(frame.prompt, frame.caption)], dtype=float
    )
    train = frame["split"] == "train"
    generator_mean = frame.loc[train].groupby("generator")["mos_ta"].mean()

    def oracle(codes: Sequence[str]) -> Callable[[], np.ndarray]:
        return lambda: -sev[list(codes)].sum(axis=1).to_numpy()

    rows: dict[str, Callable[[], np.ndarray]] = {f"oracle {c}": oracle([c]) for c in TA_CODES}
    rows["oracle missing_object + wrong_scene"] = oracle(["missing_object", "wrong_scene"])
    rows["oracle missing_object + wrong_count + wrong_scene"] = oracle(
        ["missing_object", "wrong_count", "wrong_scene"]
    )
    rows["oracle all six"] = oracle(TA_CODES)
    rows["count"] = lambda: -count_gap.astype(float)
    rows["background"] = lambda: -scene_gap
    rows["count + background"] = lambda: -(count_gap + scene_gap)
    rows["generator mean"] = lambda: frame["generator"].map(generator_mean).to_numpy()
    rows["VQ/MQ artefacts"] = lambda: visual_quality_fit(frame)
    cues = np.array([prompt_free_cues(p) for p in plans])

    def prompt_free(k: int) -> Callable[[], np.ndarray]:
        return lambda: fitted_ta(frame, cues[:, :k])

    for k in range(2, len(PROMPT_FREE_CUES) + 1):
        rows["prompt-free " + " + ".join(PROMPT_FREE_CUES[:k])] = prompt_free(k)
    return rows


def table(n: int, seeds: Sequence[int], split: str) -> dict[str, list[float]]:
    """Perception name → SRCC with the TA MOS per seed."""
    out: dict[str, list[float]] = {}
    for seed in seeds:
        plans, frame = corpus_rows(SynthConfig(n=n, seed=seed))
        keep = np.ones(len(frame), bool) if split == "all" else (frame["split"] == split).to_numpy()
        for name, score in perceptions(plans, frame).items():
            out.setdefault(name, []).append(round(spearman(score()[keep], frame["mos_ta"][keep]), 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1200, help="clips per corpus (the default corpus: 1,200)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="corpus seeds")
    parser.add_argument("--split", default="test", help="train, val, test or all")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = table(args.n, args.seeds, args.split)
    if args.json:
        print(json.dumps({"n": args.n, "seeds": args.seeds, "split": args.split, "srcc": result}))
        return
    print(
        f"TA MOS SRCC on the {args.split} split, corpus seeds {', '.join(map(str, args.seeds))} "
        f"({args.n} clips each)"
    )
    width = max(map(len, result))
    for name, values in result.items():
        print(
            f"{name:<{width}}  " + "  ".join(f"{v:6.3f}" for v in values) + f"   mean {np.mean(values):.3f}"
        )


if __name__ == "__main__":
    main()
