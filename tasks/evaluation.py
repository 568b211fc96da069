"""Evaluate the trained model beside the untrained base, the champion and the feature baseline; then
track everything in MLflow, register the model and gate it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from flytekit import Deck, Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from qsave.recipe import Recipe
from tasks import code_cache
from tasks.data import Validated
from tasks.images import CPU_IMAGE, GPU_IMAGE

CODE_CACHE = code_cache(__file__)

EVAL_META = "evaluation.json"
SAMPLES = "sample_explanations.jsonl"


@task(
    cache=CODE_CACHE,
    container_image=GPU_IMAGE,
    requests=Resources(cpu="8", mem="64Gi", gpu="1"),
    retries=1,
    enable_deck=True,
)
def evaluate(
    recipe: Recipe,
    model: FlyteDirectory,
    dataset: FlyteDirectory,
    valid_manifest: FlyteFile,
    clips: FlyteDirectory,
    split: str,
    champion: str,
) -> FlyteDirectory:
    """SRCC/KRCC/PLCC (raw and fitted), model level, reasons, uncertainty; plots in the Deck.

    The candidate and the champion write their full answers for every clip of the split, so the report
    scores their reasons against the raters' (the untrained base only gets scores: it never stops writing).

    ``champion``: a model URI (``models:/qsave@champion``) scored beside the candidate when it resolves;
    an empty string or an unknown alias skips it (first run).
    """
    from qsave.manifest import dataset_version, read_manifest
    from qsave.predictions import PredictConfig, clip_records, evaluate_models, write_predictions
    from qsave.preprocess import read_exported
    from qsave.recipe import base_model
    from qsave.registry import champion_reference
    from qsave.report import report_html, write_report
    from qsave.storage import write_text_atomic
    from qsave.versioning import config_hash

    out = Path(current_context().working_directory) / "evaluation"
    manifest = read_manifest(valid_manifest.download())
    models = {"candidate": str(Path(model.download()) / "model"), "base": base_model(recipe)}
    found = champion_reference(champion)
    if found:
        models["champion"] = found
    data_dir = dataset.download()
    table = read_exported(clips.download())
    evaluation, predictions = evaluate_models(
        models,
        table,
        manifest,
        split=split,
        dataset_dir=data_dir,
        explain=("candidate", "champion"),
        progress=True,
    )
    write_report(evaluation, out)
    samples = clip_records(
        models["candidate"], table, manifest[manifest["split"] == split].head(3), PredictConfig(explain=True)
    )
    write_text_atomic(out / SAMPLES, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    for name, frame in predictions.items():
        write_predictions(frame, out / f"predictions_{name}.parquet")
    eval_rows = manifest[manifest["split"].astype(str) == split]
    meta = {
        "split": split,
        "eval_data_version": dataset_version(eval_rows, data_dir),
        "models": models,
        "recipe_hash": config_hash(recipe),
    }
    write_text_atomic(out / EVAL_META, json.dumps(meta, indent=2))
    Deck("evaluation", report_html(evaluation))
    return FlyteDirectory(str(out))


def _execution_name() -> str:
    """This execution's name: the one a cluster gives (stable across retries, so tracking and registration
    stay idempotent), or — flytekit calls every local execution "local" — a new timestamped one per run."""
    execution = current_context().execution_id
    if execution is None or execution.project == "local":
        return f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    return str(execution.name)


@task(container_image=CPU_IMAGE, requests=Resources(cpu="2", mem="8Gi"), retries=3, enable_deck=True)
def track_register_gate(
    recipe: Recipe,
    validation: Validated,
    clips: FlyteDirectory,
    sft_out: FlyteDirectory,
    grpo_out: FlyteDirectory,
    final_out: FlyteDirectory,
    evaluation: FlyteDirectory,
    min_srcc: float,
    min_plcc: float,
    max_regression: float,
    auto_promote: bool,
) -> bool:
    """One MLflow parent run for this execution (a nested run per stage), the model registered with its
    metrics and lineage, and the gate's decision (aliases move only when it passes). Never cached: every
    execution is tracked. If MLflow is down this fails clearly; the trained model stays in the stage
    outputs and ``qsave registry register`` adds it later."""
    from qsave.gate import GateConfig
    from qsave.promotion import record_pipeline

    decision, html = record_pipeline(
        execution_id=_execution_name(),
        recipe=recipe,
        validation_summary=json.loads(validation.summary),
        data_docs=validation.data_docs.download(),
        clips=clips.download(),
        stages={"sft": sft_out.download(), "grpo": grpo_out.download(), "final_sft": final_out.download()},
        evaluation=evaluation.download(),
        gate=GateConfig(
            min_srcc=min_srcc, min_plcc=min_plcc, max_regression=max_regression, auto_promote=auto_promote
        ),
    )
    Deck("gate", html)
    return decision
