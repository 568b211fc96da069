"""The last stage of the pipeline: record the execution in MLflow, register the model, gate it.

One parent run per pipeline execution, with a nested run per stage (validation counts and Data Docs,
preprocessing counts, each training stage's per-step metrics and config, the evaluation report and
plots); then the final model is registered with its metrics and lineage, and the gate decides whether
an alias moves (:func:`qsave.registry.gate_model_version`). Every input is a plain path or dict, so a
failed run can be replayed from the stage outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from qsave.gate import GateConfig, GateDecision
from qsave.recipe import Recipe, stage_configs

STAGE_CONFIG_INDEX = {"sft": 0, "grpo": 1, "final_sft": 2}


def _clip_counts(clips_dir: Path) -> dict[str, float]:
    from qsave.preprocess import STATUSES, read_exported

    table = read_exported(clips_dir)
    counts: dict[str, float] = {status: float((table["status"] == status).sum()) for status in STATUSES}
    ok = table[table["status"] != "failed"]
    counts["mean_visual_tokens"] = float(ok["tokens"].mean()) if len(ok) else float("nan")
    return counts


def gate_html(decision: GateDecision, version: str, candidate: Mapping[str, float]) -> str:
    """The gate's verdict as an HTML fragment (a Flyte Deck)."""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in sorted(candidate.items()))
    reasons = "".join(f"<li>{escape(r)}</li>" for r in decision.reasons)
    return (
        f"<h2>Gate: model version {escape(version)} {'passed' if decision.passed else 'failed'}</h2>"
        f"<p>{escape(decision.summary())}</p>{f'<ul>{reasons}</ul>' if reasons else ''}"
        f"<table><tr><th>metric</th><th>candidate</th></tr>{rows}</table>"
    )


def record_pipeline(
    *,
    execution_id: str,
    recipe: Recipe,
    validation_summary: Mapping[str, Any],
    data_docs: str | os.PathLike[str],
    clips: str | os.PathLike[str],
    stages: Mapping[str, str | os.PathLike[str]],
    evaluation: str | os.PathLike[str],
    gate: GateConfig,
    tracking_uri: str | None = None,
) -> tuple[bool, str]:
    """Track, register and gate; returns whether the gate passed and an HTML summary."""
    from qsave import tracking
    from qsave.registry import Lineage, gate_model_version, metrics_from_report, register_model
    from qsave.versioning import code_version, config_hash

    report = json.loads((Path(evaluation) / "report.json").read_text())
    meta = json.loads((Path(evaluation) / "evaluation.json").read_text())
    parent = tracking.start_pipeline_run(
        execution_id, params=recipe, tags={"profile": recipe.profile}, uri=tracking_uri
    )
    counts = {k: validation_summary[k] for k in ("rows_in", "valid", "quarantined")}
    tracking.log_stage(
        parent, "validate", metrics=counts, artifacts={"data_docs": data_docs}, uri=tracking_uri
    )
    tracking.log_stage(parent, "preprocess", metrics=_clip_counts(Path(clips)), uri=tracking_uri)
    configs = stage_configs(recipe)
    for stage, out in stages.items():
        metrics_file = Path(out) / "metrics.jsonl"
        tracking.log_stage(
            parent,
            stage,
            params=configs[STAGE_CONFIG_INDEX[stage]] or {"skipped": True},
            metrics_file=metrics_file if metrics_file.is_file() else None,
            uri=tracking_uri,
        )
    candidate = metrics_from_report(report, "candidate")
    logged = {
        f"{name}_{k}": v for name in report["models"] for k, v in metrics_from_report(report, name).items()
    }
    tracking.log_stage(parent, "evaluate", metrics=logged, artifacts={"report": evaluation}, uri=tracking_uri)
    lineage = Lineage(
        data_version=str(validation_summary["valid_dataset_version"]),
        eval_data_version=str(meta["eval_data_version"]),
        code_version=code_version(),
        flyte_execution_id=execution_id,
        config_hash=config_hash(recipe),
    )
    samples = Path(evaluation) / "sample_explanations.jsonl"
    version = register_model(
        Path(stages["final_sft"]) / "model",
        candidate,
        lineage,
        parent_run_id=parent,
        samples=samples if samples.is_file() else None,
        uri=tracking_uri,
    )
    champion = metrics_from_report(report, "champion") if "champion" in report["models"] else None
    decision = gate_model_version(version, gate, champion_metrics=champion, uri=tracking_uri)
    tracking.finish_pipeline_run(parent, uri=tracking_uri)
    return decision.passed, gate_html(decision, version, candidate)
