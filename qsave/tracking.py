"""MLflow tracking: one parent run per pipeline execution, one nested run per stage.

**Where.** The tracking URI is, in order: the ``uri`` argument (``--tracking-uri``), ``$MLFLOW_TRACKING_URI``,
or ``sqlite:///<dir>/mlflow.db`` where ``<dir>`` is ``$QSAVE_HOME`` when set, else the working directory.
Artifacts of a local sqlite store go to ``<dir>/mlartifacts`` (beside the database, not wherever the process
happens to run); a server URL (``http://…``) decides its own artifact store. Telemetry and artifact
progress bars are off unless the environment says otherwise.

**Runs.** :func:`start_pipeline_run` opens (or, on a retry, finds) the parent run of a Flyte execution,
named ``qsave-<execution id>`` and tagged with the execution id and the git commit
(:func:`qsave.versioning.code_version`). :func:`log_stage` adds one finished nested run per stage with its
params (a config dataclass or dict, flattened ``a.b``), per-step metrics read from the stage's
``metrics.jsonl``, final metrics, and artifacts (configs, the evaluation report and plots, GX Data Docs,
sample explanations). Everything takes plain paths, strings and dicts, so Flyte tasks call it directly and
pass the parent run id between tasks. Every call is safe to repeat: a stage already logged under the parent
is returned as is, a half-logged one is marked failed and logged again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qsave.versioning import code_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT: Final = "qsave"
TRACKING_URI_ENV: Final = "MLFLOW_TRACKING_URI"
DB_FILE: Final = "mlflow.db"
ARTIFACT_DIR: Final = "mlartifacts"

# Run tags (model-version tags use the same names, see qsave.registry).
EXECUTION_TAG: Final = "flyte_execution_id"
CODE_VERSION_TAG: Final = "code_version"
STAGE_TAG: Final = "qsave.stage"
KIND_TAG: Final = "qsave.kind"
PARENT_TAG: Final = "mlflow.parentRunId"
GIT_COMMIT_TAG: Final = "mlflow.source.git.commit"

PARAM_VALUE_MAX: Final = 6000
BATCH: Final = 500


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a write; the message names the URI and what to do."""


def default_tracking_uri() -> str:
    """``sqlite:///<$QSAVE_HOME or cwd>/mlflow.db`` (absolute)."""
    home = os.environ.get("QSAVE_HOME")
    base = Path(home).expanduser() if home else Path.cwd()
    return f"sqlite:///{(base / DB_FILE).resolve()}"


def tracking_uri(uri: str | None = None) -> str:
    """The URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`."""
    return uri or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def configure(uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at :func:`tracking_uri` and return it."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    resolved = tracking_uri(uri)
    db = _sqlite_path(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # MLflow also writes the URI into MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; keep the user's values, or
    # one call with an explicit URI would silently redirect every later default lookup in this process.
    saved = {name: os.environ.get(name) for name in (TRACKING_URI_ENV, "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(resolved)
    mlflow.set_registry_uri(resolved)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return resolved


def client(uri: str | None = None) -> MlflowClient:
    """An :class:`mlflow.MlflowClient` on the configured URI."""
    from mlflow import MlflowClient

    resolved = configure(uri)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/\s@]+@")
_SECRET_PARAMS = re.compile(r"(?P<key>[?&](?:token|password|secret|key|access_token)=)[^&\s]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URI credentials (``scheme://user:pass@``) and secret query values replaced by ``***``;
    use it on every message that may carry a tracking URI."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAMS.sub(r"\g<key>***", text)


def unreachable(uri: str | None, exc: BaseException, keep: str = "") -> TrackingError:
    """A :class:`TrackingError` saying which server failed and, with ``keep``, what is preserved
    (credentials in the URI or the error are redacted)."""
    kept = f" {keep}" if keep else ""
    return TrackingError(redact(f"MLflow at {tracking_uri(uri)} failed: {exc}.{kept}"))


def experiment_id(mlflow_client: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment's id, creating it (artifacts beside a local sqlite store) when missing."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    db = _sqlite_path(mlflow_client.tracking_uri)
    location = (db.parent / ARTIFACT_DIR / name).as_uri() if db is not None else None
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created concurrently by another task
        again = mlflow_client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A dataclass or nested dict as ``{"a.b": "value"}`` MLflow params (values cut to MLflow's limit)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if isinstance(config, Mapping):
        out: dict[str, str] = {}
        for key, value in config.items():
            out |= flatten_params(value, f"{prefix}{key}.")
        return out
    text = json.dumps(config, default=str) if isinstance(config, list | tuple) else str(config)
    return {prefix.rstrip("."): text[:PARAM_VALUE_MAX]}


def read_step_metrics(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, float]]]:
    """``(step, {name: value})`` per line of a stage's ``metrics.jsonl``; the step is ``step`` (or
    ``global_step`` when an integer, else the line number); numeric fields only (bools and strings are
    skipped)."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc}); fix or remove the line") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            step = record.get("step", record.get("global_step"))
            if not isinstance(step, int):
                step = number
            values = {
                str(k): float(v)
                for k, v in record.items()
                if k not in ("step", "global_step") and isinstance(v, int | float) and not isinstance(v, bool)
            }
            yield step, values


def _log_params(mlflow_client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start : start + 100])


def _log_metrics(
    mlflow_client: MlflowClient, run_id: str, rows: Iterator[tuple[int, dict[str, float]]]
) -> int:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    pending: list[Metric] = []
    count = 0
    for step, values in rows:
        pending += [Metric(key, value, now, step) for key, value in values.items()]
        if len(pending) >= BATCH:
            mlflow_client.log_batch(run_id, metrics=pending)
            count += len(pending)
            pending = []
    if pending:
        mlflow_client.log_batch(run_id, metrics=pending)
        count += len(pending)
    return count


def _log_artifacts(mlflow_client: MlflowClient, run_id: str, artifacts: Mapping[str, Any]) -> None:
    for name, raw in artifacts.items():
        path = Path(raw)
        if path.is_dir():
            mlflow_client.log_artifacts(run_id, str(path), name)
        elif path.is_file():
            mlflow_client.log_artifact(run_id, str(path), name)
        else:
            raise FileNotFoundError(f"artifact {name!r}: {path} does not exist (nothing logged for it)")


def _find_runs(mlflow_client: MlflowClient, experiment: str, filter_string: str) -> list[Any]:
    return list(
        mlflow_client.search_runs(
            [experiment], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=50
        )
    )


def start_pipeline_run(
    execution_id: str,
    params: Any = None,
    *,
    tags: Mapping[str, str] | None = None,
    experiment: str = EXPERIMENT,
    uri: str | None = None,
) -> str:
    """The parent run of one pipeline execution (created, or found when a retry already created it)."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        exp = experiment_id(mlflow_client, experiment)
        found = _find_runs(
            mlflow_client, exp, f"tags.{EXECUTION_TAG} = '{execution_id}' and tags.`{KIND_TAG}` = 'pipeline'"
        )
        if found:
            return str(found[0].info.run_id)
        version = code_version()
        run = mlflow_client.create_run(
            exp,
            run_name=f"qsave-{execution_id}",
            tags={
                EXECUTION_TAG: execution_id,
                CODE_VERSION_TAG: version,
                GIT_COMMIT_TAG: version.removesuffix("-dirty"),
                KIND_TAG: "pipeline",
                **(tags or {}),
            },
        )
        if params is not None:
            _log_params(mlflow_client, run.info.run_id, flatten_params(params))
    except MlflowException as exc:
        raise unreachable(uri, exc) from exc
    return str(run.info.run_id)


def log_stage(
    parent_run_id: str,
    stage: str,
    *,
    params: Any = None,
    metrics_file: str | os.PathLike[str] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    tags: Mapping[str, str] | None = None,
    uri: str | None = None,
) -> str:
    """Log one stage as a finished nested run of ``parent_run_id`` and return its run id.

    ``params``: a config dataclass or dict (flattened); ``metrics_file``: the stage's ``metrics.jsonl``
    (per-step metrics); ``metrics``: final values (``None``/nan skipped); ``artifacts``: artifact folder
    name → file or directory. A stage already finished under this parent is returned unchanged.
    """
    from mlflow.entities import RunStatus
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    try:
        parent = mlflow_client.get_run(parent_run_id)
        exp = parent.info.experiment_id
        previous = _find_runs(
            mlflow_client, exp, f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{STAGE_TAG}` = '{stage}'"
        )
        for run in previous:
            if run.info.status == RunStatus.to_string(RunStatus.FINISHED):
                return str(run.info.run_id)
            if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
                mlflow_client.set_terminated(run.info.run_id, status="FAILED")
        inherited = {k: v for k, v in parent.data.tags.items() if k in (EXECUTION_TAG, GIT_COMMIT_TAG)}
        run = mlflow_client.create_run(
            exp,
            run_name=stage,
            tags={
                PARENT_TAG: parent_run_id,
                STAGE_TAG: stage,
                KIND_TAG: "stage",
                CODE_VERSION_TAG: code_version(),
                **inherited,
                **(tags or {}),
            },
        )
        run_id = str(run.info.run_id)
        if params is not None:
            _log_params(mlflow_client, run_id, flatten_params(params))
        if metrics_file is not None:
            _log_metrics(mlflow_client, run_id, read_step_metrics(metrics_file))
        if metrics:
            finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
            _log_metrics(mlflow_client, run_id, iter([(0, finite)]))
        if artifacts:
            _log_artifacts(mlflow_client, run_id, artifacts)
        mlflow_client.set_terminated(run_id, status="FINISHED")
    except MlflowException as exc:
        raise unreachable(uri, exc, f"Stage {stage!r} was not logged; its outputs are untouched.") from exc
    return run_id


def finish_pipeline_run(run_id: str, *, failed: bool = False, uri: str | None = None) -> None:
    """Mark the parent run finished (or failed)."""
    client(uri).set_terminated(run_id, status="FAILED" if failed else "FINISHED")
