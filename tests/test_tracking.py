"""Tracking against a real sqlite-backed MLflow store: parent/nested runs, params, step metrics, artifacts,
idempotent reruns, the tracking URI's precedence; and (slow) a real ``mlflow server`` started from
infra/mlflow-local.sh on 127.0.0.1, used for tracking and the registry, stopped by its PID."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, wait_for_http

from qsave import tracking


@dataclass(frozen=True)
class StageConfig:
    learning_rate: float = 1e-4
    lora: tuple[int, int] = (8, 16)


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


def test_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QSAVE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("QSAVE_HOME")
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri() == "http://127.0.0.1:5999"
    assert tracking.tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_flatten_params() -> None:
    flat = tracking.flatten_params({"sft": StageConfig(), "seed": 3, "path": Path("/a")})
    assert flat == {"sft.learning_rate": "0.0001", "sft.lora": "[8, 16]", "seed": "3", "path": "/a"}


def test_read_step_metrics_skips_non_numbers_and_names_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "metrics.jsonl"
    good.write_text('{"step": 5, "loss": 1.5, "done": true, "tag": "x"}\n\n{"loss": 1.0}\n')
    assert list(tracking.read_step_metrics(good)) == [(5, {"loss": 1.5}), (3, {"loss": 1.0})]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss":\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON line"):
        list(tracking.read_step_metrics(bad))


def test_pipeline_with_nested_stages(uri: str, tmp_path: Path) -> None:
    parent = tracking.start_pipeline_run("exec-a1", {"data": {"source": "synthetic"}}, uri=uri)
    assert tracking.start_pipeline_run("exec-a1", uri=uri) == parent  # a retried task finds it
    metrics_file = tmp_path / "metrics.jsonl"
    metrics_file.write_text("".join(json.dumps({"step": s, "loss": 2.0 / s}) + "\n" for s in (1, 2, 3)))
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text("{}")
    (report / "scatter.png").write_bytes(b"\x89PNG")
    stage = tracking.log_stage(
        parent,
        "sft",
        params=StageConfig(),
        metrics_file=metrics_file,
        metrics={"srcc_vq": 0.5, "plcc_vq": math.nan, "undefined": None},
        artifacts={"report": report, "config": metrics_file},
        uri=uri,
    )
    assert tracking.log_stage(parent, "sft", uri=uri) == stage  # already logged: unchanged

    client = tracking.client(uri)
    run = client.get_run(stage)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sft"
    assert run.data.tags[tracking.PARENT_TAG] == parent
    assert run.data.tags[tracking.EXECUTION_TAG] == "exec-a1"
    assert run.data.tags[tracking.GIT_COMMIT_TAG]
    assert run.data.params == {"learning_rate": "0.0001", "lora": "[8, 16]"}
    assert run.data.metrics == {"loss": pytest.approx(2.0 / 3), "srcc_vq": 0.5}
    assert [(m.step, m.value) for m in client.get_metric_history(stage, "loss")] == [
        (1, 2.0),
        (2, 1.0),
        (3, pytest.approx(2.0 / 3)),
    ]
    names = {a.path for a in client.list_artifacts(stage, "report")} | {
        a.path for a in client.list_artifacts(stage, "config")
    }
    assert names == {"report/report.json", "report/scatter.png", "config/metrics.jsonl"}
    parent_run = client.get_run(parent)
    assert parent_run.info.run_name == "qsave-exec-a1"
    assert parent_run.data.params == {"data.source": "synthetic"}
    db_dir = Path(uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith((db_dir / tracking.ARTIFACT_DIR).as_uri())
    tracking.finish_pipeline_run(parent, uri=uri)
    assert client.get_run(parent).info.status == "FINISHED"


def test_missing_artifact_fails_the_stage_by_name(uri: str, tmp_path: Path) -> None:
    parent = tracking.start_pipeline_run("exec-missing", uri=uri)
    with pytest.raises(FileNotFoundError, match="artifact 'docs'"):
        tracking.log_stage(parent, "validate", artifacts={"docs": tmp_path / "no-such-dir"}, uri=uri)
    # the half-logged stage is marked failed and a rerun logs it afresh
    again = tracking.log_stage(parent, "validate", metrics={"quarantined": 0.0}, uri=uri)
    client = tracking.client(uri)
    assert client.get_run(again).info.status == "FINISHED"


def test_unreachable_server_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(tracking.TrackingError, match=rf"MLflow at {dead} failed"):
        tracking.start_pipeline_run("exec-down", uri=dead)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """infra/mlflow-local.sh on a free port of 127.0.0.1; stopped by its PID (process group) afterwards."""
    store = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {**os.environ, "QSAVE_STORE": str(store), "MLFLOW_PORT": str(port)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(store / "server.log", "wb")  # noqa: SIM115 (kept open for the server's lifetime)
    proc = subprocess.Popen(
        [str(REPO / "infra" / "mlflow-local.sh")], env=env, stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, 90, store / "server.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_real_server_tracking_and_registry(mlflow_server: str, tmp_path: Path) -> None:
    from qsave import registry
    from qsave.gate import GateConfig
    from qsave.modeling import tiny_model_path

    parent = tracking.start_pipeline_run("exec-server", {"seed": 0}, uri=mlflow_server)
    metrics_file = tmp_path / "metrics.jsonl"
    metrics_file.write_text('{"step": 1, "loss": 0.5}\n')
    stage = tracking.log_stage(
        parent, "evaluate", metrics_file=metrics_file, artifacts={"m": metrics_file}, uri=mlflow_server
    )
    client = tracking.client(mlflow_server)
    assert client.get_run(stage).data.metrics == {"loss": 0.5}
    assert [a.path for a in client.list_artifacts(stage, "m")] == ["m/metrics.jsonl"]

    metrics = {f"{m}_{d}": 0.8 for m in ("srcc", "plcc") for d in ("vq", "mq", "ta", "overall")}
    lineage = registry.Lineage("data-s", "eval-s", "code-s", "exec-server", "cfg-s")
    version = registry.register_model(
        tiny_model_path(), metrics, lineage, parent_run_id=parent, uri=mlflow_server
    )
    decision = registry.gate_model_version(version, GateConfig(auto_promote=True), uri=mlflow_server)
    assert decision.passed
    champion = registry.get_version("champion", uri=mlflow_server)
    assert champion.version == version
    assert champion.tags["flyte_execution_id"] == "exec-server" and champion.tags["gate"] == "passed"


def test_an_explicit_uri_does_not_leak_into_later_default_lookups(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("QSAVE_HOME", str(tmp_path))
    tracking.configure("http://127.0.0.1:5999")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
