"""Manifest validation: Great Expectations 1.x row checks, split leakage and a decode probe per video.

Nothing is dropped silently: every input row ends in ``valid.parquet`` or ``quarantine.parquet`` (with a
``quarantine_reason`` code and a ``quarantine_detail`` listing every problem found), and
``rows_in == valid + quarantined`` is asserted. The run writes all outputs first and then raises
:class:`ValidationFailed` when the quarantined share exceeds ``max_quarantine_fraction``.

Checks, in the precedence used to pick a row's ``quarantine_reason`` (the first that applies):

1. Great Expectations, one validator run over the whole manifest (result format COMPLETE gives the failing
   row indices): ``missing_id`` (empty ``video_id``), ``duplicate_id`` (a ``video_id`` already used by an
   earlier row; the first occurrence is kept), ``missing_path`` (empty ``video_path``), ``empty_prompt``
   (empty or whitespace-only), ``bad_split`` (``split`` not in ``ValidationConfig.splits``),
   ``mos_missing`` (an empty MOS, only when labels are required), ``mos_out_of_range`` (a MOS outside
   1–5, including ±inf). The suite also expects every manifest column to exist (guaranteed by
   :func:`qsave.manifest.normalize`, and shown in the Data Docs).
2. The decode probe (:func:`qsave.video.probe` with ``ValidationConfig.limits``, isolated, with a timeout):
   its :data:`qsave.video.REASONS` codes (``video_missing``, ``undecodable``, ``decode_timeout`` …).
3. ``split_leakage``: among rows that passed 1–2, a prompt (compared case- and space-insensitively) found
   in more than one split stays in its earliest split in ``ValidationConfig.splits`` order (train before
   val before test) and its rows in later splits are quarantined, so evaluation never scores a prompt
   that training saw.

Outputs in ``out_dir`` (each written atomically): ``valid.parquet``, ``quarantine.parquet``,
``summary.json`` and ``data_docs/`` (the Great Expectations Data Docs site; open ``data_docs/index.html``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qsave.manifest import dataset_version, normalize, resolve_video_path, write_manifest
from qsave.schema import MANIFEST_COLUMNS, MOS_COLUMNS, REASON_COLUMNS, SCORE_MAX, SCORE_MIN, SPLITS
from qsave.storage import atomic_path, write_text_atomic
from qsave.video import REASONS as VIDEO_REASONS
from qsave.video import DecodeLimits, VideoError, probe

if TYPE_CHECKING:
    import pandas as pd

ROW_REASONS: Final = (
    "missing_id",
    "duplicate_id",
    "missing_path",
    "empty_prompt",
    "bad_split",
    "mos_missing",
    "mos_out_of_range",
)
REASON_PRECEDENCE: Final = (*ROW_REASONS, *VIDEO_REASONS, "split_leakage")
"""Every ``quarantine_reason``; a row with several problems is filed under the first of these."""


@dataclass(frozen=True)
class ValidationConfig:
    """How strict validation is. Defaults: labelled data, standard splits, a quarter may be quarantined."""

    limits: DecodeLimits = field(default_factory=DecodeLimits)
    max_quarantine_fraction: float = 0.25
    require_labels: bool = True
    splits: tuple[str, ...] = SPLITS
    probe_workers: int = 2


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path


class ValidationFailed(RuntimeError):
    """Too much of the manifest was quarantined; the outputs were still written for inspection."""

    def __init__(self, message: str, result: ValidationResult) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- Great Expectations


def _expectations(cfg: ValidationConfig) -> list[tuple[Any, str | None]]:
    """The suite: (expectation, reason its failing rows get; None for whole-table checks)."""
    import great_expectations.expectations as gxe

    checks: list[tuple[Any, str | None]] = [
        (gxe.ExpectColumnToExist(column=c), None) for c in MANIFEST_COLUMNS
    ]
    checks += [
        (gxe.ExpectColumnValuesToMatchRegex(column="video_id", regex=r"\S"), "missing_id"),
        (gxe.ExpectColumnValuesToBeUnique(column="video_id"), "duplicate_id"),
        (gxe.ExpectColumnValuesToMatchRegex(column="video_path", regex=r"\S"), "missing_path"),
        (gxe.ExpectColumnValuesToMatchRegex(column="prompt", regex=r"\S"), "empty_prompt"),
        (gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(cfg.splits)), "bad_split"),
    ]
    for column in MOS_COLUMNS:
        if cfg.require_labels:
            checks.append((gxe.ExpectColumnValuesToNotBeNull(column=column), "mos_missing"))
        between = gxe.ExpectColumnValuesToBeBetween(column=column, min_value=SCORE_MIN, max_value=SCORE_MAX)
        checks.append((between, "mos_out_of_range"))
    return checks


def _run_great_expectations(
    frame: pd.DataFrame, cfg: ValidationConfig, docs_dir: Path
) -> tuple[dict[int, list[tuple[str, str]]], dict[str, Any]]:
    """One GX run over the manifest → ({row: [(reason, detail)]}, GX statistics); Data Docs go to docs_dir."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    context_config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),  # nothing but the Data Docs touches disk
        data_docs_sites={"qsave": site},
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=context_config)
    batch = context.data_sources.add_pandas("qsave").add_dataframe_asset("manifest")
    suite = context.suites.add(gx.ExpectationSuite(name="qsave_manifest"))
    checks = _expectations(cfg)
    for expectation, _ in checks:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name="qsave_manifest", data=batch.add_batch_definition_whole_dataframe("all"), suite=suite
        )
    )
    # pandas 3 string columns as plain object columns, the dtype GX's pandas metrics are written for
    table = frame[list(MANIFEST_COLUMNS)].astype(
        {c: object for c in ("video_id", "video_path", "prompt", "split")}
    )
    for column in REASON_COLUMNS:  # lists as JSON text, so every column is a plain scalar for GX
        table[column] = [json.dumps(list(v)) for v in table[column]]
    outcome = definition.run(
        batch_parameters={"dataframe": table}, result_format={"result_format": "COMPLETE"}
    )
    context.build_data_docs(site_names=["qsave"])

    reason_of = {expectation.id: reason for expectation, reason in checks}
    later_duplicates = set(frame.index[frame["video_id"].duplicated(keep="first")])
    problems: dict[int, list[tuple[str, str]]] = {}
    for result in outcome.results:
        config = result.expectation_config
        assert config is not None, "Great Expectations returned a result without its expectation"
        reason = reason_of[config.id]
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations could not evaluate {config.type}: {result.exception_info}"
            )
        if result.success or reason is None:
            continue
        target = config.kwargs.get("column")
        rows = [int(i) for i in result.result.get("unexpected_index_list") or []]
        if reason == "duplicate_id":  # GX flags every copy; the first occurrence is kept
            rows = [i for i in rows if i in later_duplicates]
        for row in rows:
            problems.setdefault(row, []).append((reason, _describe(reason, target, frame, row)))
    stats = dict(outcome.statistics)
    return problems, {"success": bool(outcome.success), **{k: stats[k] for k in sorted(stats)}}


def _describe(reason: str, column: str | None, frame: pd.DataFrame, row: int) -> str:
    value: Any = frame[column].iloc[row] if column else None
    if reason == "duplicate_id":
        first = int(frame.index[frame["video_id"].eq(value)][0])
        return f"video_id {value!r} is already used by row {first} (the first occurrence is kept)"
    if reason == "bad_split":
        return f"split {value!r} is not one of the allowed splits"
    if reason == "mos_missing":
        return f"{column} is empty but labels are required (use --allow-unlabeled for unrated data)"
    if reason == "mos_out_of_range":
        return f"{column}={float(value):g} is outside [{SCORE_MIN:g}, {SCORE_MAX:g}]"
    return f"{column} is empty"


# --------------------------------------------------------------------------- probes and leakage


def _probe_all(
    frame: pd.DataFrame, cfg: ValidationConfig, base_dir: Path | None, progress: bool
) -> dict[int, tuple[str, str]]:
    """Decode-probe every row's video (each distinct file once) over a small pool: {row: (reason, detail)}."""
    from tqdm import tqdm

    paths = {
        row: str(resolve_video_path(path, base_dir))
        for row, path in enumerate(frame["video_path"])
        if str(path).strip()
    }

    def check(path: str) -> tuple[str, str] | None:
        try:
            probe(path, cfg.limits)
        except VideoError as exc:
            return exc.reason, exc.detail
        return None

    unique = sorted(set(paths.values()))
    # each probe runs in the thread's decoder process (qsave.video.run_isolated): threads only wait on pipes
    with ThreadPoolExecutor(max_workers=max(1, cfg.probe_workers)) as pool:
        outcomes = list(
            tqdm(
                pool.map(check, unique),
                total=len(unique),
                desc="probing videos",
                disable=not progress,
                unit="video",
            )
        )
    by_path = dict(zip(unique, outcomes))
    return {row: outcome for row, path in paths.items() if (outcome := by_path[path]) is not None}


def _prompt_key(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip().casefold()


def _leaking_rows(frame: pd.DataFrame, candidates: Iterable[int], splits: tuple[str, ...]) -> dict[int, str]:
    """Rows whose prompt also appears (among candidates) in an earlier split: {row: detail}."""
    first_split: dict[str, str] = {}
    rows = list(candidates)
    for row in rows:
        key, split = _prompt_key(frame["prompt"].iloc[row]), frame["split"].iloc[row]
        if key not in first_split or splits.index(split) < splits.index(first_split[key]):
            first_split[key] = split
    return {
        row: f"its prompt is also in split {first_split[key]!r}; kept there, quarantined from {split!r}"
        for row in rows
        if (split := frame["split"].iloc[row]) != first_split[key := _prompt_key(frame["prompt"].iloc[row])]
    }


# --------------------------------------------------------------------------- the stage


def validate_manifest(
    df: pd.DataFrame,
    cfg: ValidationConfig,
    out_dir: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ValidationResult:
    """Split ``df`` into valid and quarantined rows, write the outputs to ``out_dir``, return them.

    ``base_dir`` resolves relative ``video_path`` values (usually the manifest's folder). Raises
    :class:`ValidationFailed` after writing everything when the quarantined share is above
    ``cfg.max_quarantine_fraction``.
    """
    out = Path(out_dir)
    frame = normalize(df)
    base = Path(base_dir) if base_dir is not None else None
    with atomic_path(out / "data_docs") as docs_dir:
        problems, gx_stats = _run_great_expectations(frame, cfg, docs_dir)
    for row, problem in _probe_all(frame, cfg, base, progress).items():
        problems.setdefault(row, []).append(problem)
    clean = [row for row in range(len(frame)) if row not in problems]
    for row, detail in _leaking_rows(frame, clean, cfg.splits).items():
        problems[row] = [("split_leakage", detail)]

    rank = {reason: i for i, reason in enumerate(REASON_PRECEDENCE)}
    reasons, details = [], []
    for row in sorted(problems):
        ordered = sorted(problems[row], key=lambda p: rank[p[0]])
        reasons.append(ordered[0][0])
        details.append("; ".join(f"{reason}: {detail}" for reason, detail in ordered))
    quarantine = frame.iloc[sorted(problems)].copy()
    quarantine["quarantine_reason"] = reasons
    quarantine["quarantine_detail"] = details
    valid = frame.drop(index=list(problems)).reset_index(drop=True)
    assert len(valid) + len(quarantine) == len(frame), "validation lost rows"

    problem_counts: dict[str, int] = {}
    for found in problems.values():
        for reason in {reason for reason, _ in found}:
            problem_counts[reason] = problem_counts.get(reason, 0) + 1
    summary = _summary(frame, valid, quarantine, cfg, gx_stats, base, problem_counts)
    write_manifest(valid, out / "valid.parquet")
    write_manifest(quarantine.reset_index(drop=True), out / "quarantine.parquet")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    result = ValidationResult(valid, quarantine.reset_index(drop=True), summary, out)
    if not summary["passed"]:
        counts = ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items() if v)
        raise ValidationFailed(
            f"{summary['quarantined']} of {summary['rows_in']} rows quarantined "
            f"({summary['quarantined_fraction']:.0%}), above the limit of {cfg.max_quarantine_fraction:.0%} "
            f"({counts}). Inspect {out / 'quarantine.parquet'} and {out / 'data_docs' / 'index.html'}, "
            "fix the data or raise the limit (--max-quarantine).",
            result,
        )
    return result


def _summary(
    frame: pd.DataFrame,
    valid: pd.DataFrame,
    quarantine: pd.DataFrame,
    cfg: ValidationConfig,
    gx_stats: dict[str, Any],
    base: Path | None,
    problem_counts: dict[str, int],
) -> dict[str, Any]:
    counts = quarantine["quarantine_reason"].value_counts()
    by_reason = {reason: int(counts.get(reason, 0)) for reason in REASON_PRECEDENCE}  # every code, zeros too
    fraction = len(quarantine) / len(frame) if len(frame) else 0.0
    return {
        "rows_in": len(frame),
        "valid": len(valid),
        "quarantined": len(quarantine),
        "quarantined_fraction": round(fraction, 6),
        "by_reason": by_reason,
        "rows_with_problem": dict(sorted(problem_counts.items())),
        "passed": fraction <= cfg.max_quarantine_fraction,
        "valid_dataset_version": dataset_version(valid, base),
        "thresholds": {
            "max_quarantine_fraction": cfg.max_quarantine_fraction,
            "require_labels": cfg.require_labels,
            "splits": list(cfg.splits),
            "decode_limits": dataclasses.asdict(cfg.limits),
        },
        "great_expectations": gx_stats,
        "outputs": {
            "valid": "valid.parquet",
            "quarantine": "quarantine.parquet",
            "data_docs": "data_docs/index.html",
        },
    }


def summary_html(summary: dict[str, Any], quarantine: pd.DataFrame | None = None, max_rows: int = 50) -> str:
    """The validation summary as an HTML fragment (a Flyte Deck): counts, reasons and quarantined rows."""
    from html import escape

    verdict = "passed" if summary["passed"] else "FAILED"
    limit = summary["thresholds"]["max_quarantine_fraction"]
    head = (
        f"<h2>Validation {verdict}</h2><p>{summary['rows_in']} rows in = {summary['valid']} valid + "
        f"{summary['quarantined']} quarantined ({summary['quarantined_fraction']:.1%}; limit {limit:.0%}). "
        f"Valid dataset version <code>{escape(str(summary['valid_dataset_version']))}</code>.</p>"
    )
    reasons = "".join(
        f"<tr><td>{escape(reason)}</td><td>{count}</td></tr>"
        for reason, count in summary["by_reason"].items()
        if count
    )
    table = f"<table><tr><th>reason</th><th>rows</th></tr>{reasons}</table>" if reasons else ""
    rows = ""
    if quarantine is not None and len(quarantine):
        shown = quarantine.head(max_rows)
        body = "".join(
            f"<tr><td>{escape(str(r.video_id))}</td><td>{escape(str(r.quarantine_reason))}</td>"
            f"<td>{escape(str(r.quarantine_detail))}</td></tr>"
            for r in shown.itertuples(index=False)
        )
        more = f"<p>… and {len(quarantine) - len(shown)} more.</p>" if len(quarantine) > len(shown) else ""
        rows = (
            "<h3>Quarantined rows</h3><table><tr><th>video_id</th><th>reason</th><th>detail</th></tr>"
            f"{body}</table>{more}"
        )
    return head + table + rows
