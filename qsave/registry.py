"""The model registry: register every trained model, gate it, and move aliases safely.

**Versions.** :func:`register_model` logs the trained model directory as a servable pyfunc
(:mod:`qsave.serving`, models-from-code) in a run and creates a new version of the registered model
(``qsave`` by default) *with all its tags in the same call*: ``srcc_<dim>`` / ``plcc_<dim>`` per dimension,
``data_version``, ``eval_data_version`` (the split the metrics come from), ``code_version``,
``flyte_execution_id``, ``config_hash``, ``model_digest`` and ``gate=pending``. Registering the same
weights again for the same execution returns the existing version (task retries make no duplicates).

**Aliases.** ``champion`` (what production loads: ``models:/qsave@champion``), ``challenger`` (passed the
gate, waiting for review) and ``previous-champion`` (the champion before the last promotion, for
rollback). Only :func:`gate_model_version` sets ``challenger`` (and ``champion`` with auto-promotion), only
after it has written ``gate=passed``; :func:`promote` refuses any version whose ``gate`` tag is not
``passed``. So a crash between registering and aliasing leaves a ``pending`` version that no alias points
at, and ``champion`` never points at an unevaluated or failing version.

**Idempotence.** Promoting the current champion, rolling back when the champion already is the previous
champion, and re-gating a version change nothing the second time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qsave import tracking
from qsave.gate import GATED_METRICS, GateConfig, GateDecision, decide
from qsave.schema import DIMENSIONS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from qsave.serving import ServingConfig

MODEL_NAME: Final = "qsave"
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
PREVIOUS: Final = "previous-champion"
MODEL_ARTIFACT: Final = "model"
SAMPLES_ARTIFACT: Final = "samples"

GATE_TAG: Final = "gate"
GATE_REASONS_TAG: Final = "gate_reasons"
GATE_CHAMPION_TAG: Final = "gate_champion_version"
DIGEST_TAG: Final = "model_digest"
LINEAGE_TAGS: Final = (
    "data_version",
    "eval_data_version",
    "code_version",
    "flyte_execution_id",
    "config_hash",
)

SERVING_FILE: Final = Path(__file__).with_name("serving.py")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Lineage:
    """Where a model came from; every field becomes a model-version tag."""

    data_version: str
    eval_data_version: str
    code_version: str
    flyte_execution_id: str
    config_hash: str

    def tags(self) -> dict[str, str]:
        return {key: str(getattr(self, key)) for key in LINEAGE_TAGS}


@dataclass(frozen=True)
class VersionView:
    """A model version as the review CLI shows it."""

    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    source: str
    created_ms: int
    tags: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return metrics_from_tags(self.tags)

    def gate(self) -> str:
        return self.tags.get(GATE_TAG, "unknown")


@dataclass(frozen=True)
class AliasChange:
    """What :func:`promote` or :func:`rollback` did; ``changed`` is False for a no-op."""

    changed: bool
    champion: str | None
    previous_champion: str | None
    message: str


def metric_tags(metrics: Mapping[str, float | None]) -> dict[str, str]:
    """``srcc_<dim>``/``plcc_<dim>`` tags from flat evaluation metrics (nan when missing)."""
    out: dict[str, str] = {}
    for dim in DIMENSIONS:
        for metric in GATED_METRICS:
            key = f"{metric}_{dim}"
            value = metrics.get(key)
            out[key] = repr(float(value)) if value is not None else "nan"
    return out


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for dim in DIMENSIONS:
        for metric in GATED_METRICS:
            key = f"{metric}_{dim}"
            if key in tags:
                try:
                    out[key] = float(tags[key])
                except ValueError:
                    out[key] = math.nan
    return out


def model_digest(model_dir: str | os.PathLike[str]) -> str:
    """Hash of every file's name and content hash in a model directory."""
    from qsave.storage import file_sha256, text_sha256

    root = Path(model_dir)
    parts = [
        f"{p.relative_to(root).as_posix()}:{file_sha256(p)}" for p in sorted(root.rglob("*")) if p.is_file()
    ]
    return text_sha256("\n".join(parts))[:16]


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("mlflow", "torch", "transformers", "pandas", "numpy", "av", "decord", "safetensors")
    ]


def _check_model_dir(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise RegistryError(
            f"{model_dir} is not a saved model directory (needs config.json and *.safetensors weights)"
        )


def log_servable_model(
    mlflow_client: MlflowClient,
    run_id: str,
    model_dir: str | os.PathLike[str],
    serving: ServingConfig | None = None,
) -> str:
    """Save the pyfunc (code from :mod:`qsave.serving`, ``model_dir`` as artifact) into ``run_id``'s
    artifacts under ``model/``; returns its ``runs:/`` URI."""
    import tempfile

    import mlflow.pyfunc

    from qsave.serving import MODEL_DIR_ARTIFACT, ServingConfig, input_example, signature

    with tempfile.TemporaryDirectory(prefix="qsave-pyfunc-") as tmp:
        local = Path(tmp) / MODEL_ARTIFACT
        mlflow.pyfunc.save_model(
            path=str(local),
            python_model=str(SERVING_FILE),
            artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
            model_config=(serving or ServingConfig()).to_model_config(),
            signature=signature(),
            input_example=input_example(),
            pip_requirements=_pip_requirements(),
        )
        mlflow_client.log_artifacts(run_id, str(local), MODEL_ARTIFACT)
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def _ensure_registered_model(mlflow_client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(
                name, description="qsave: explainable quality assessor for AI-generated video"
            )
        except MlflowException:  # created concurrently
            mlflow_client.get_registered_model(name)


def _version(mlflow_client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"model {name!r} has no version {version!r}; see `qsave registry list`") from exc


def register_model(
    model_dir: str | os.PathLike[str],
    metrics: Mapping[str, float | None],
    lineage: Lineage,
    *,
    name: str = MODEL_NAME,
    parent_run_id: str | None = None,
    samples: str | os.PathLike[str] | None = None,
    serving: ServingConfig | None = None,
    uri: str | None = None,
) -> str:
    """Register ``model_dir`` as a new version tagged with ``metrics`` (flat ``srcc_<dim>`` …) and
    ``lineage``; returns the version number. ``samples``: a file of sample explanations to keep with the
    model. Logged in a ``register`` run (nested under ``parent_run_id`` when given)."""
    from mlflow.exceptions import MlflowException

    directory = Path(model_dir)
    _check_model_dir(directory)
    digest = model_digest(directory)
    keep = (
        f"The model stays in {directory}; register it later with "
        f"`qsave registry register {directory} --report <report.json> …`."
    )
    try:
        mlflow_client = tracking.client(uri)
        _ensure_registered_model(mlflow_client, name)
        existing = mlflow_client.search_model_versions(
            f"name = '{name}' and tags.{DIGEST_TAG} = '{digest}' "
            f"and tags.flyte_execution_id = '{lineage.flyte_execution_id}'"
        )
        if existing:
            return str(existing[0].version)
        tags = {"flyte_execution_id": lineage.flyte_execution_id, tracking.STAGE_TAG: "register"}
        if parent_run_id:
            run_id = tracking.log_stage(parent_run_id, "register", tags=tags, uri=uri)
        else:
            exp = tracking.experiment_id(mlflow_client)
            run_id = mlflow_client.create_run(exp, run_name="register", tags=tags).info.run_id
            mlflow_client.set_terminated(run_id)
        source = log_servable_model(mlflow_client, run_id, directory, serving)
        if samples is not None:
            mlflow_client.log_artifact(run_id, str(samples), SAMPLES_ARTIFACT)
        version = mlflow_client.create_model_version(
            name,
            source=source,
            run_id=run_id,
            tags={**metric_tags(metrics), **lineage.tags(), DIGEST_TAG: digest, GATE_TAG: "pending"},
        )
    except MlflowException as exc:
        raise tracking.unreachable(uri, exc, keep) from exc
    return str(version.version)


def alias_version(mlflow_client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def resolve(mlflow_client: MlflowClient, name: str, ref: str) -> str:
    """A version number from ``ref``: a number, ``v<number>`` or an alias."""
    if ref.isdigit() or (ref.startswith("v") and ref[1:].isdigit()):
        return str(_version(mlflow_client, name, ref.lstrip("v")).version)
    found = alias_version(mlflow_client, name, ref)
    if found is None:
        raise RegistryError(f"model {name!r} has no alias {ref!r}; see `qsave registry list`")
    return found


def gate_model_version(
    version: str,
    cfg: GateConfig,
    *,
    champion_metrics: Mapping[str, float] | None = None,
    name: str = MODEL_NAME,
    uri: str | None = None,
) -> GateDecision:
    """Gate a registered version, record the decision in its tags and move aliases when it passes.

    The champion is compared on the same evaluation split: ``champion_metrics`` when the caller evaluated
    the champion beside the candidate, else the champion's own tags when its ``eval_data_version`` equals
    the candidate's; otherwise the gate fails and says so (evaluate the champion on this split).
    """
    mlflow_client = tracking.client(uri)
    candidate = _version(mlflow_client, name, version)
    tags = dict(candidate.tags)
    champion = alias_version(mlflow_client, name, CHAMPION)
    compare_to: Mapping[str, float] | None = None
    mismatch: str | None = None
    if champion is not None and champion != str(version):
        if champion_metrics is not None:
            compare_to = champion_metrics
        else:
            champ_tags = dict(_version(mlflow_client, name, champion).tags)
            if champ_tags.get("eval_data_version") == tags.get("eval_data_version"):
                compare_to = metrics_from_tags(champ_tags)
            else:
                mismatch = (
                    f"champion v{champion} was evaluated on split {champ_tags.get('eval_data_version')}, "
                    f"this version on {tags.get('eval_data_version')}: evaluate the champion on this split "
                    "and pass its metrics"
                )
    decision = decide(metrics_from_tags(tags), compare_to, cfg, champion_version=champion)
    if mismatch:
        decision = GateDecision(False, (*decision.reasons, mismatch), champion)
    mlflow_client.set_model_version_tag(name, version, GATE_REASONS_TAG, "; ".join(decision.reasons))
    mlflow_client.set_model_version_tag(name, version, GATE_CHAMPION_TAG, champion or "none")
    mlflow_client.set_model_version_tag(name, version, GATE_TAG, "passed" if decision.passed else "failed")
    if decision.passed:
        set_alias(mlflow_client, name, CHALLENGER, str(version))
        if cfg.auto_promote:
            promote(str(version), name=name, uri=uri)
    return decision


def set_alias(mlflow_client: Any, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Point ``alias`` at ``version``, idempotently under concurrency: two processes that create the same
    alias at once make the SQL store raise a unique-constraint error in the slower one, whose retry then
    finds the row and updates it."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow_client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as exc:
            if "UNIQUE constraint" not in str(exc) and "IntegrityError" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def promote(version: str | None = None, *, name: str = MODEL_NAME, uri: str | None = None) -> AliasChange:
    """Make ``version`` (default: the challenger) champion; the old champion becomes previous-champion."""
    mlflow_client = tracking.client(uri)
    target = resolve(mlflow_client, name, version or CHALLENGER)
    gate = _version(mlflow_client, name, target).tags.get(GATE_TAG)
    if gate != "passed":
        raise RegistryError(
            f"v{target} has gate={gate}: only a version that passed the gate can become champion "
            f"(see `qsave registry show {target}`)"
        )
    current = alias_version(mlflow_client, name, CHAMPION)
    previous = alias_version(mlflow_client, name, PREVIOUS)
    if current == target:
        return AliasChange(False, current, previous, f"v{target} already is champion; nothing to do")
    if current is not None:
        set_alias(mlflow_client, name, PREVIOUS, current)
    set_alias(mlflow_client, name, CHAMPION, target)
    was = f" (previous-champion: v{current})" if current else ""
    return AliasChange(True, target, current or previous, f"champion → v{target}{was}")


def rollback(*, name: str = MODEL_NAME, uri: str | None = None) -> AliasChange:
    """Point ``champion`` back at ``previous-champion``; a challenger that was the rolled-back champion
    loses its alias, so a later plain ``promote`` does not bring it back."""
    mlflow_client = tracking.client(uri)
    previous = alias_version(mlflow_client, name, PREVIOUS)
    current = alias_version(mlflow_client, name, CHAMPION)
    if previous is None:
        raise RegistryError(f"model {name!r} has no {PREVIOUS} alias: nothing to roll back to")
    if current == previous:
        return AliasChange(False, current, previous, f"champion already is v{previous}; nothing to do")
    set_alias(mlflow_client, name, CHAMPION, previous)
    if current is not None:
        mlflow_client.set_model_version_tag(name, current, "rolled_back", "true")
        if alias_version(mlflow_client, name, CHALLENGER) == current:
            mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    return AliasChange(True, previous, previous, f"champion → v{previous} (rolled back from v{current})")


def list_versions(*, name: str = MODEL_NAME, uri: str | None = None) -> list[VersionView]:
    """Every version of ``name``, newest first, with its aliases and tags."""
    from mlflow.exceptions import MlflowException

    mlflow_client = tracking.client(uri)
    try:
        aliases = mlflow_client.get_registered_model(name).aliases
    except MlflowException as exc:
        raise RegistryError(
            tracking.redact(f"no registered model {name!r} at {tracking.tracking_uri(uri)}")
        ) from exc
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = mlflow_client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    return [
        VersionView(
            version=str(mv.version),
            aliases=tuple(sorted(by_version.get(str(mv.version), []))),
            run_id=mv.run_id,
            source=str(mv.source),
            created_ms=int(mv.creation_timestamp or 0),
            tags=dict(mv.tags),
        )
        for mv in versions
    ]


def get_version(ref: str, *, name: str = MODEL_NAME, uri: str | None = None) -> VersionView:
    """One version by number or alias."""
    mlflow_client = tracking.client(uri)
    version = resolve(mlflow_client, name, ref)
    for view in list_versions(name=name, uri=uri):
        if view.version == version:
            return view
    raise RegistryError(f"model {name!r} has no version {version}")


def sample_explanations(view: VersionView, limit: int = 3, *, uri: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` sample explanations stored with the version (JSON lines), or none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    if not view.run_id:
        return []
    mlflow_client = tracking.client(uri)
    try:
        files = [f for f in mlflow_client.list_artifacts(view.run_id, SAMPLES_ARTIFACT) if not f.is_dir]
    except MlflowException:
        return []
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qsave-samples-") as tmp:
        for info in files:
            local = Path(mlflow_client.download_artifacts(view.run_id, info.path, tmp))
            for line in local.read_text(encoding="utf-8").splitlines():
                if line.strip() and len(out) < limit:
                    out.append(json.loads(line))
    return out


def metrics_from_report(report: Mapping[str, Any], name: str) -> dict[str, float]:
    """Flat ``srcc_<dim>``/``plcc_<dim>`` of prediction set ``name`` in a ``report.json`` (as a dict)."""
    model = report.get("models", {}).get(name)
    if model is None:
        raise RegistryError(
            f"the report has no prediction set {name!r} (sets: {sorted(report.get('models', {}))})"
        )
    out: dict[str, float] = {}
    for dim, result in model["dimensions"].items():
        for metric in GATED_METRICS:
            value = result["instance"][metric]
            out[f"{metric}_{dim}"] = math.nan if value is None else float(value)
    return out


def champion_reference(uri: str, *, tracking_uri: str | None = None) -> str | None:
    """``uri`` (``models:/<name>@<alias>``) when that alias exists in the registry, else None.

    Used to score the current champion beside a candidate; a first run (no registered model, no alias)
    and an empty ``uri`` give None. A registry that cannot be reached raises, naming it.
    """
    if not uri:
        return None
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, alias = uri.removeprefix("models:/").split("@", 1)
    return uri if alias_version(tracking.client(tracking_uri), name, alias) else None
