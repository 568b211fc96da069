"""The qsave pipeline — read this file to see the whole system.

    ingest ─► validate ─► preprocess (SlowFast; a map task over shards) ─► merge
           ─► SFT ─► GRPO ─► final SFT ─► evaluate ─► track + register + gate ─► promoted? / rejected

Run locally on the embedded default (a synthetic AIGV corpus and a tiny Qwen3-VL, CPU):

    pyflyte run workflows/qsave.py qsave_pipeline
    pyflyte run workflows/qsave.py qsave_pipeline \\
        --data '{"source": "aigve", "uri": "../shared/data/aigve-bench-toy"}' --max_quarantine 0.5

and on a cluster with ``pyflyte run --remote …`` (``--recipe '{"profile": "qwen3-vl-8b"}'``). Every task
but the tracking/registry one is cached by its inputs and the code it runs (its task file and the qsave
modules that imports, ``tasks.code_cache``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

from flytekit import conditional, map_task, task, workflow
from flytekit.types.directory import FlyteDirectory

from qsave.ingest import IngestConfig
from qsave.recipe import Recipe
from qsave.slowfast import SamplerConfig
from tasks.data import Validated, ingest, validate
from tasks.evaluation import evaluate, track_register_gate
from tasks.preprocess import merge_clips, plan_shards, preprocess_shard
from tasks.training import final_sft, grpo, sft

# pyflyte registers bool inputs under both --a_b and --a-b and warns about its own duplicate.
warnings.filterwarnings("ignore", message=r"The parameter --\w+ is used more than once")


class PipelineOutputs(NamedTuple):
    validation: Validated
    clips: FlyteDirectory
    model: FlyteDirectory
    evaluation: FlyteDirectory
    decision: str


@task
def promoted(champion_alias: str) -> str:
    return f"gate passed: the new model version is {champion_alias} (see `qsave registry list`)"


@task
def rejected() -> str:
    return "gate failed: no alias moved; the reasons are tagged on the model version (`qsave registry show`)"


@workflow
def qsave_pipeline(
    data: IngestConfig = IngestConfig(),  # noqa: B008
    max_quarantine: float = 0.25,
    require_labels: bool = True,
    sampler: SamplerConfig | None = None,
    n_shards: int = 4,
    recipe: Recipe = Recipe(),  # noqa: B008
    eval_split: str = "test",
    champion: str = "models:/qsave@champion",
    min_srcc: float = 0.5,
    min_plcc: float = 0.5,
    max_regression: float = 0.02,
    auto_promote: bool = False,
) -> PipelineOutputs:
    """Ingest → validate → SlowFast preprocess → SFT → GRPO → final SFT → evaluate → track, register, gate.

    :param data: where the data comes from (default: the synthetic corpus, 2,400 clips, seed 0, prompts split
        85 / 7.5 / 7.5 into train / val / test).
    :param max_quarantine: fail when more than this share of rows is quarantined.
    :param require_labels: quarantine rows without MOS (turn off for prompt-only scoring sets).
    :param sampler: SlowFast sampling; default: the recipe profile's (local: small sizes for the tiny
        model; qwen3-vl-8b: Qwen3-VL's, 448-px slow frames). The trained model records it.
    :param n_shards: preprocessing shards, processed in parallel on a cluster.
    :param recipe: training profile (local or qwen3-vl-8b) and the per-run knobs (epochs, GRPO steps, LoRA).
    :param eval_split: the held-out split every model is evaluated on.
    :param champion: the registered model to compare with (skipped when the alias does not exist yet).
    :param min_srcc: gate: every dimension's SRCC must reach this.
    :param min_plcc: gate: every dimension's PLCC must reach this.
    :param max_regression: gate: how far below the champion's SRCC/PLCC a dimension may fall.
    :param auto_promote: a passing model becomes champion at once (else challenger, promoted by review).
    """
    dataset = ingest(data=data)
    validated = validate(dataset=dataset, max_quarantine=max_quarantine, require_labels=require_labels)
    shards = plan_shards(
        dataset=dataset,
        valid_manifest=validated.valid_manifest,
        n_shards=n_shards,
        recipe=recipe,
        sampler=sampler,
    )
    clips = merge_clips(shards=map_task(preprocess_shard, concurrency=8)(shard=shards))
    stage1 = sft(recipe=recipe, dataset=dataset, clips=clips)
    stage2 = grpo(recipe=recipe, model=stage1, dataset=dataset, clips=clips)
    stage3 = final_sft(recipe=recipe, model=stage2, dataset=dataset, clips=clips)
    report = evaluate(
        recipe=recipe,
        model=stage3,
        dataset=dataset,
        valid_manifest=validated.valid_manifest,
        clips=clips,
        split=eval_split,
        champion=champion,
    )
    passed = track_register_gate(
        recipe=recipe,
        validation=validated,
        clips=clips,
        sft_out=stage1,
        grpo_out=stage2,
        final_out=stage3,
        evaluation=report,
        min_srcc=min_srcc,
        min_plcc=min_plcc,
        max_regression=max_regression,
        auto_promote=auto_promote,
    )
    decision = (
        conditional("gate")
        .if_(passed.is_true())
        .then(promoted(champion_alias="challenger"))
        .else_()
        .then(rejected())
    )
    return PipelineOutputs(
        validation=validated, clips=clips, model=stage3, evaluation=report, decision=decision
    )
