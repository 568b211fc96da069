"""The servable qsave model: an MLflow pyfunc logged *from code* (this file), never pickled.

:mod:`qsave.registry` logs this file as ``python_model=`` with the trained model directory (safetensors
weights, processor, ``qsave_sampler.json``) as the artifact ``model_dir`` and the serving limits as
``model_config``. MLflow runs this file to load the model; the last line hands it the model object.

**In**: a DataFrame with ``video`` (a path readable by the server; relative paths resolve under
``video_root``) and ``prompt`` (the generation prompt), optionally ``video_id`` and a boolean ``explain``
per row; params ``explain`` (all rows) and ``max_new_tokens``.

**Out**: one row per input row, flat columns: ``video_id``, ``video``, ``prompt``, ``pred_<dim>`` (1–5),
``level_<dim>``, ``prob_<dim>_<level>``, ``pred_reasons_<dim>`` (comma-separated taxonomy codes, explained
rows only), ``explanation`` (rationale), ``error`` (a :class:`qsave.video.VideoError` reason code, or
``outside_video_root``) and ``error_detail``; absent values are ``None`` (JSON ``null``). A bad video
fills ``error`` for its row; the other rows are scored. A request with more than ``max_rows`` rows,
without the required columns, or with an empty prompt is refused with an ``INVALID_PARAMETER_VALUE``
error, which the scoring server answers with HTTP 400.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from qsave.evaluation import pred_column, pred_reasons_column, prob_column
from qsave.schema import DIMENSIONS, LEVELS, REASON_DIMENSIONS

MODEL_DIR_ARTIFACT = "model_dir"
INPUT_COLUMNS = ("video", "prompt")
OPTIONAL_COLUMNS = ("video_id", "explain")


@dataclass(frozen=True)
class ServingConfig:
    """Limits and defaults of the served model (logged as the pyfunc's ``model_config``)."""

    max_rows: int = 32
    batch_size: int = 4
    max_new_tokens: int = 256
    max_file_mb: int = 256
    max_duration_s: float = 120.0
    max_frames: int = 7200
    decode_timeout_s: float = 30.0
    video_root: str = ""
    """When set, videos must resolve inside this folder (relative paths are taken from it)."""

    def to_model_config(self) -> dict[str, Any]:
        return asdict(self)


def level_column(dim: str) -> str:
    return f"level_{dim}"


def output_columns() -> list[str]:
    cols = ["video_id", "video", "prompt"]
    cols += [pred_column(d) for d in DIMENSIONS]
    cols += [level_column(d) for d in DIMENSIONS]
    cols += [prob_column(d, level) for d in DIMENSIONS for level in LEVELS]
    cols += [pred_reasons_column(d) for d in REASON_DIMENSIONS]
    return [*cols, "explanation", "error", "error_detail"]


def signature() -> Any:
    """Input/output schema and params of the served model."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "video"),
            ColSpec("string", "prompt"),
            ColSpec("string", "video_id", required=False),
            ColSpec("boolean", "explain", required=False),
        ]
    )
    floats = {pred_column(d) for d in DIMENSIONS} | {prob_column(d, lv) for d in DIMENSIONS for lv in LEVELS}
    outputs = Schema(
        [ColSpec("double" if c in floats else "string", c, required=False) for c in output_columns()]
    )
    params = ParamSchema([ParamSpec("explain", "boolean", False), ParamSpec("max_new_tokens", "long", 256)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video": ["videos/red_car_sunset.mp4"],
            "prompt": ["a red car drives along a coastal road at sunset"],
        }
    )


def _refuse(message: str) -> mlflow.MlflowException:
    return mlflow.MlflowException.invalid_parameter_value(message)


class QsaveModel(PythonModel):
    """Scores (and on request explains) videos with the packaged model; see the module docstring."""

    def load_context(self, context: PythonModelContext) -> None:
        from qsave.modeling import load_model, model_sampler_config
        from qsave.slowfast import SamplerConfig
        from qsave.video import DecodeLimits

        self.model_dir = context.artifacts[MODEL_DIR_ARTIFACT]
        known = {
            k: v for k, v in (context.model_config or {}).items() if k in ServingConfig.__dataclass_fields__
        }
        self.config = ServingConfig(**known)
        self.model, self.processor = load_model(self.model_dir)
        self.sampler = model_sampler_config(self.model_dir) or SamplerConfig()
        self.limits = DecodeLimits(
            max_file_bytes=self.config.max_file_mb * 2**20,
            max_duration_s=self.config.max_duration_s,
            max_frames=self.config.max_frames,
            timeout_s=self.config.decode_timeout_s,
        )

    def _check(self, frame: pd.DataFrame) -> None:
        missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
        if missing:
            raise _refuse(f"request lacks column(s) {missing}; send a dataframe with 'video' and 'prompt'")
        if len(frame) > self.config.max_rows:
            raise _refuse(f"request has {len(frame)} rows; at most {self.config.max_rows} per request")
        empty = [i for i, p in enumerate(frame["prompt"]) if not isinstance(p, str) or not p.strip()]
        if empty:
            raise _refuse(f"rows {empty}: empty prompt; every video needs its generation prompt")

    def _resolve(self, video: str) -> tuple[str, str | None]:
        """The path to open, or an error detail when it lies outside ``video_root``."""
        root = self.config.video_root
        if not root:
            return video, None
        base = Path(root).resolve()
        path = (base / video).resolve()
        if not path.is_relative_to(base):
            return video, f"{video} is outside the served video root {base}"
        return str(path), None

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from qsave.scoring import ScoreRequest, ScoringConfig, score_videos
        from qsave.video import VideoError, probe

        frame = pd.DataFrame(model_input).reset_index(drop=True)
        self._check(frame)
        params = params or {}
        explain_all = bool(params.get("explain", False))
        max_new_tokens = int(params.get("max_new_tokens") or self.config.max_new_tokens)
        rows: list[dict[str, Any]] = [{} for _ in range(len(frame))]
        groups: dict[bool, list[tuple[int, ScoreRequest]]] = {False: [], True: []}
        for i, record in enumerate(frame.to_dict("records")):
            video = str(record["video"])
            ident = record.get("video_id")
            video_id = str(ident) if isinstance(ident, str) and ident else Path(video).stem
            rows[i] = {"video_id": video_id, "video": video, "prompt": str(record["prompt"])}
            path, outside = self._resolve(video)
            if outside:
                rows[i] |= {"error": "outside_video_root", "error_detail": outside}
                continue
            try:
                probe(path, self.limits)
            except VideoError as exc:
                rows[i] |= {"error": exc.reason, "error_detail": exc.detail}
                continue
            explain = explain_all or record.get("explain") is True
            groups[explain].append((i, ScoreRequest(video_id, path, str(record["prompt"]))))
        for explain, members in groups.items():
            if not members:
                continue
            cfg = ScoringConfig(
                batch_size=self.config.batch_size,
                explain=explain,
                max_new_tokens=max_new_tokens,
                limits=self.limits,
            )
            lines = score_videos([req for _, req in members], self.model, self.processor, self.sampler, cfg)
            for (i, _), line in zip(members, lines, strict=True):
                rows[i] |= _flat(line)
        out = pd.DataFrame(rows, columns=output_columns()).astype(object)
        return out.where(out.notna(), None)  # JSON answers carry null, not NaN


def _flat(line: dict[str, Any]) -> dict[str, Any]:
    """One :func:`qsave.scoring.score_videos` record as the served flat columns."""
    if "error" in line:
        return {"error": line["error"], "error_detail": line["detail"]}
    out: dict[str, Any] = {}
    for dim in DIMENSIONS:
        out[pred_column(dim)] = line["scores"][dim]
        out[level_column(dim)] = line["levels"][dim]
        out |= {prob_column(dim, lv): p for lv, p in line["level_probs"][dim].items()}
    reasons = line.get("reasons")
    if reasons is not None:
        out |= {pred_reasons_column(d): ",".join(reasons.get(d, [])) for d in REASON_DIMENSIONS}
    out["explanation"] = line.get("explanation")
    return out


mlflow.models.set_model(QsaveModel())
