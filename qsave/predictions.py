"""Model outputs as prediction frames: the bridge from scoring to evaluation.

A prediction frame has ``video_id``, ``pred_<dim>``, ``prob_<dim>_<level>`` and (when explanations were
generated) ``pred_reasons_<dim>`` — the columns :func:`qsave.evaluation.evaluate` reads. Rows that could
not be scored keep their ``video_id`` with empty predictions and an ``error`` code, so evaluation counts
them instead of losing them.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qsave.evaluation import pred_column, pred_reasons_column, prob_column
from qsave.schema import DIMENSIONS, LEVELS, REASON_DIMENSIONS, mos_column

if TYPE_CHECKING:
    import pandas as pd

    from qsave.evaluation import EvalConfig, Evaluation


@dataclass(frozen=True)
class PredictConfig:
    batch_size: int = 8
    explain: bool = False
    """Generate the rationale and reasons too (slower; gives reason metrics)."""
    max_new_tokens: int = 256


def record_to_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ``qsave score`` JSON record (or error record) as a prediction-frame row."""
    row: dict[str, Any] = {"video_id": record["video_id"], "error": record.get("error", "")}
    scores, probs = record.get("scores") or {}, record.get("level_probs") or {}
    for dim in DIMENSIONS:
        row[pred_column(dim)] = scores.get(dim, float("nan"))
        for level in LEVELS:
            row[prob_column(dim, level)] = probs.get(dim, {}).get(level, float("nan"))
    reasons = record.get("reasons")
    if reasons is not None:
        for dim in REASON_DIMENSIONS:
            row[pred_reasons_column(dim)] = list(reasons.get(dim, []))
    return row


def records_to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([record_to_row(r) for r in records])


def clip_records(
    model_name_or_path: str,
    clip_table: pd.DataFrame,
    manifest: pd.DataFrame,
    cfg: PredictConfig = PredictConfig(),
    progress: bool = False,
    desc: str = "predict",
) -> list[dict[str, Any]]:
    """``qsave score`` records for the preprocessed clips of ``manifest``'s rows (no decoding), in row order.

    ``clip_table`` maps ``video_id`` → absolute ``clip_path`` and ``status`` (see
    :func:`qsave.preprocess.read_exported`); rows without a usable clip get an error record. ``desc``
    names the progress bar (which model, when several score side by side).
    """
    from tqdm import tqdm

    from qsave.modeling import load_model
    from qsave.preprocess import load_clip
    from qsave.scoring import ScoreRequest, score_clips, score_record

    model, processor = load_model(model_name_or_path)
    clips = {str(r.video_id): r for r in clip_table.itertuples(index=False)}
    requests, records = [], {}
    for video_id, prompt in zip(
        manifest["video_id"].astype(str), manifest["prompt"].astype(str), strict=True
    ):
        clip = clips.get(video_id)
        if clip is None or clip.status == "failed" or not clip.clip_path:
            reason = "no_clip" if clip is None else (clip.reason or "preprocess_failed")
            records[video_id] = {"video_id": video_id, "prompt": prompt, "error": reason}
        else:
            requests.append(ScoreRequest(video_id, str(clip.clip_path), prompt))
    with tqdm(total=len(requests), desc=desc, unit="video", disable=not progress) as bar:
        for start in range(0, len(requests), cfg.batch_size):
            batch: Sequence[ScoreRequest] = requests[start : start + cfg.batch_size]
            results = score_clips(
                model,
                processor,
                [load_clip(r.path) for r in batch],
                [r.prompt for r in batch],
                explain=cfg.explain,
                max_new_tokens=cfg.max_new_tokens,
            )
            for request, result in zip(batch, results, strict=True):
                records[request.video_id] = score_record(request, result, {})
            bar.update(len(batch))
    return [records[v] for v in manifest["video_id"].astype(str)]


def predict_clips(
    model_name_or_path: str,
    clip_table: pd.DataFrame,
    manifest: pd.DataFrame,
    cfg: PredictConfig = PredictConfig(),
    progress: bool = False,
    desc: str = "predict",
) -> pd.DataFrame:
    """:func:`clip_records` as a prediction frame."""
    return records_to_frame(clip_records(model_name_or_path, clip_table, manifest, cfg, progress, desc))


def srcc_by_dimension(predictions: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, float]:
    """Spearman correlation of the predicted scores with the MOS per dimension, ``predictions`` and
    ``manifest`` row-aligned (as :func:`predict_clips` returns them); NaN where it is undefined."""
    from qsave.metrics import spearman

    return {d: spearman(predictions[pred_column(d)], manifest[mos_column(d)]) for d in DIMENSIONS}


def predict_videos(
    model_name_or_path: str,
    manifest: pd.DataFrame,
    base_dir: str | os.PathLike[str] | None = None,
    cfg: PredictConfig = PredictConfig(),
    progress: bool = False,
) -> pd.DataFrame:
    """Decode (with the model's recorded sampler) and score every row of ``manifest``; unreadable videos
    become rows with an ``error`` code."""
    from pathlib import Path

    from qsave.manifest import resolve_video_path
    from qsave.modeling import load_model, model_sampler_config, resolve_model_path
    from qsave.scoring import ScoreRequest, ScoringConfig, score_videos
    from qsave.slowfast import SamplerConfig

    path = resolve_model_path(model_name_or_path)
    sampler = (model_sampler_config(path) if Path(path).is_dir() else None) or SamplerConfig()
    model, processor = load_model(path)
    requests = [
        ScoreRequest(str(v), str(resolve_video_path(str(p), base_dir)), str(q))
        for v, p, q in zip(manifest["video_id"], manifest["video_path"], manifest["prompt"], strict=True)
    ]
    scoring = ScoringConfig(batch_size=cfg.batch_size, explain=cfg.explain, max_new_tokens=cfg.max_new_tokens)
    return records_to_frame(score_videos(requests, model, processor, sampler, scoring, progress))


def write_predictions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a prediction frame atomically as Parquet (reason lists kept) or CSV (reasons comma-joined)."""
    from pathlib import Path

    from qsave.storage import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            out = frame.copy()
            for dim in REASON_DIMENSIONS:
                col = pred_reasons_column(dim)
                if col in out.columns:
                    out[col] = [",".join(v) if isinstance(v, list) else "" for v in out[col]]
            out.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)


def evaluate_models(
    models: Mapping[str, str],
    clip_table: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    split: str = "test",
    dataset_dir: str | os.PathLike[str] | None = None,
    baseline: bool = True,
    cfg: PredictConfig = PredictConfig(),
    explain: Collection[str] = (),
    eval_cfg: EvalConfig | None = None,
    progress: bool = False,
    baseline_alongside: bool = True,
) -> tuple[Evaluation, dict[str, pd.DataFrame]]:
    """Score every model (name → path/id/URI; ``candidate`` is the primary) on ``split`` of ``manifest``
    and evaluate them side by side, with the classical feature baseline (fitted on the train split,
    videos read from ``dataset_dir``) as the floor. Returns the evaluation and each set's predictions.

    The models named in ``explain`` also generate their full answers, so the evaluation scores their
    reasons against the raters' (precision, recall, F1 per code). Leave an untrained base out: it never
    stops writing, and every answer would run to ``cfg.max_new_tokens``.

    ``baseline_alongside``: the baseline (decoding and features in its worker processes, then the trees)
    starts in a background thread before the models score, so the two share the cores
    (``benchmarks/bench_evaluation_speed.py``); ``False`` fits it after the models (one core, or too
    little memory for both). The numbers are the same either way; an error in either stops the evaluation
    (a model's error stops a running baseline after the videos its workers hold)."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from qsave.baseline import BaselineRun, run_baseline
    from qsave.evaluation import evaluate

    rows = manifest[manifest["split"].astype(str) == split].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"the manifest has no {split!r} rows to evaluate on")
    used = manifest[manifest["split"].astype(str).isin(["train", split])].reset_index(drop=True)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as background:

        def start_baseline() -> Future[BaselineRun]:
            return background.submit(run_baseline, used, dataset_dir, progress=progress, stop=stop)

        fitting = start_baseline() if baseline and baseline_alongside else None
        try:
            predictions = {
                name: predict_clips(
                    ref,
                    clip_table,
                    rows,
                    replace(cfg, explain=cfg.explain or name in explain),
                    progress,
                    desc=f"predict {name}",
                )
                for name, ref in models.items()
            }
        except BaseException:
            stop.set()  # leaving the pool waits for the baseline: let it stop rather than finish
            raise
        if baseline:
            if fitting is None:
                fitting = start_baseline()
            fitted = fitting.result().predictions
            predictions["baseline"] = fitted[fitted["video_id"].isin(set(rows["video_id"].astype(str)))]
    return evaluate(predictions, truth=rows, config=eval_cfg), predictions
