"""The gate and the registry against a real sqlite-backed MLflow registry in a tmp dir, with the real tiny
model logged as a pyfunc: the gate matrix, promote/rollback round trips, idempotence, crash safety, and the
``qsave registry`` CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from qsave import registry
from qsave.cli import main
from qsave.gate import GateConfig, decide
from qsave.modeling import tiny_model_path
from qsave.schema import DIMENSIONS

_executions = itertools.count()


def flat(value: float, **overrides: float) -> dict[str, float]:
    out = {f"{m}_{d}": value for m in ("srcc", "plcc") for d in DIMENSIONS}
    return out | overrides


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_path()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A registered model of its own per test (one shared store keeps the suite fast)."""
    return f"qsave-{request.node.name}"


def register(
    uri: str, model_dir: Path, name: str, metrics: dict[str, float], eval_version: str = "eval-1"
) -> str:
    lineage = registry.Lineage("data-1", eval_version, "code-1", f"exec-{next(_executions)}", "cfg-1")
    return registry.register_model(model_dir, metrics, lineage, name=name, uri=uri)


def aliases(uri: str, name: str) -> dict[str, str]:
    from qsave.tracking import client

    return {k: str(v) for k, v in client(uri).get_registered_model(name).aliases.items()}


# --------------------------------------------------------------------------- pure decisions


def test_decide_thresholds_regression_and_undefined() -> None:
    cfg = GateConfig(min_srcc=0.5, min_plcc=0.4, thresholds={"srcc_ta": 0.2}, max_regression=0.05)
    assert decide(flat(0.6, srcc_ta=0.25), None, cfg).passed
    low = decide(flat(0.6, plcc_mq=0.3), None, cfg)
    assert not low.passed and low.reasons == ("plcc_mq 0.3000 < threshold 0.4000",)
    undefined = decide(flat(0.6, srcc_vq=math.nan), None, cfg)
    assert undefined.reasons == ("srcc_vq is nan (not evaluated or undefined)",)
    assert decide(flat(0.6), flat(0.64), cfg).passed  # within tolerance
    worse = decide(flat(0.6), flat(0.7, srcc_vq=math.nan), cfg, champion_version="3")
    assert not worse.passed and len(worse.reasons) == 7  # srcc_vq: champion undefined, nothing to regress
    assert worse.summary().startswith("failed (against champion v3): ")


# --------------------------------------------------------------------------- gate matrix


def test_register_tags_and_is_idempotent(uri: str, model_dir: Path, name: str) -> None:
    lineage = registry.Lineage("data-1", "eval-1", "code-1", "exec-same", "cfg-1")
    version = registry.register_model(model_dir, flat(0.7), lineage, name=name, uri=uri)
    assert registry.register_model(model_dir, flat(0.7), lineage, name=name, uri=uri) == version
    view = registry.get_version(version, name=name, uri=uri)
    for key in ("data_version", "eval_data_version", "code_version", "flyte_execution_id", "config_hash"):
        assert view.tags[key]
    assert view.metrics() == flat(0.7)
    assert view.gate() == "pending" and view.aliases == ()
    assert view.source == f"runs:/{view.run_id}/model"


def test_below_threshold_gets_no_alias(uri: str, model_dir: Path, name: str) -> None:
    version = register(uri, model_dir, name, flat(0.7, srcc_ta=0.1))
    decision = registry.gate_model_version(version, GateConfig(auto_promote=True), name=name, uri=uri)
    assert not decision.passed
    assert aliases(uri, name) == {}
    view = registry.get_version(version, name=name, uri=uri)
    assert view.gate() == "failed" and "srcc_ta 0.1000 < threshold 0.5000" in view.tags["gate_reasons"]


def test_pass_becomes_challenger_then_regression_gets_no_alias(uri: str, model_dir: Path, name: str) -> None:
    first = register(uri, model_dir, name, flat(0.7))
    assert registry.gate_model_version(first, GateConfig(), name=name, uri=uri).passed
    assert aliases(uri, name) == {"challenger": first}  # first run: thresholds only, review promotes
    assert registry.promote(name=name, uri=uri).changed

    worse = register(uri, model_dir, name, flat(0.7, plcc_overall=0.6))  # above threshold, below champion
    decision = registry.gate_model_version(worse, GateConfig(max_regression=0.05), name=name, uri=uri)
    assert not decision.passed and decision.champion_version == first
    assert "plcc_overall 0.6000 regresses 0.1000 below champion's 0.7000" in decision.reasons[0]
    assert aliases(uri, name) == {"challenger": first, "champion": first}

    # the champion evaluated on another split is not comparable: the gate says so, unless given its metrics
    other = register(uri, model_dir, name, flat(0.75), eval_version="eval-2")
    mismatch = registry.gate_model_version(other, GateConfig(), name=name, uri=uri)
    assert not mismatch.passed and "evaluated on split eval-1" in mismatch.reasons[-1]
    fair = registry.gate_model_version(other, GateConfig(), champion_metrics=flat(0.74), name=name, uri=uri)
    assert fair.passed and aliases(uri, name) == {"challenger": other, "champion": first}


def test_promote_rollback_round_trip_and_idempotence(uri: str, model_dir: Path, name: str) -> None:
    auto = GateConfig(auto_promote=True)
    a = register(uri, model_dir, name, flat(0.7))
    assert registry.gate_model_version(a, auto, name=name, uri=uri).passed
    assert aliases(uri, name) == {"challenger": a, "champion": a}
    with pytest.raises(registry.RegistryError, match="no previous-champion"):
        registry.rollback(name=name, uri=uri)

    b = register(uri, model_dir, name, flat(0.8))
    assert registry.gate_model_version(b, GateConfig(), name=name, uri=uri).passed
    first = registry.promote(name=name, uri=uri)
    assert first.changed and aliases(uri, name) == {"champion": b, "challenger": b, "previous-champion": a}
    second = registry.promote(name=name, uri=uri)
    assert not second.changed and "nothing to do" in second.message
    assert aliases(uri, name) == {"champion": b, "challenger": b, "previous-champion": a}

    back = registry.rollback(name=name, uri=uri)
    assert back.changed and aliases(uri, name) == {"champion": a, "previous-champion": a}
    assert registry.get_version(b, name=name, uri=uri).tags["rolled_back"] == "true"
    assert not registry.rollback(name=name, uri=uri).changed
    assert aliases(uri, name) == {"champion": a, "previous-champion": a}
    with pytest.raises(registry.RegistryError, match="no alias 'challenger'"):
        registry.promote(name=name, uri=uri)  # the rolled-back challenger does not come back by itself
    assert registry.promote(b, name=name, uri=uri).changed  # …only when named
    assert aliases(uri, name) == {"champion": b, "previous-champion": a}


def test_crash_before_gate_never_reaches_champion(uri: str, model_dir: Path, name: str) -> None:
    good = register(uri, model_dir, name, flat(0.7))
    registry.gate_model_version(good, GateConfig(auto_promote=True), name=name, uri=uri)
    pending = register(uri, model_dir, name, flat(0.9))  # the task died before gating
    failing = register(uri, model_dir, name, flat(0.1))
    registry.gate_model_version(failing, GateConfig(), name=name, uri=uri)
    for version, gate in ((pending, "pending"), (failing, "failed")):
        with pytest.raises(registry.RegistryError, match=f"gate={gate}"):
            registry.promote(version, name=name, uri=uri)
    assert aliases(uri, name) == {"challenger": good, "champion": good}


def test_register_refuses_a_folder_without_weights(uri: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    lineage = registry.Lineage("d", "e", "c", "x", "h")
    with pytest.raises(registry.RegistryError, match=r"needs config.json and \*.safetensors"):
        registry.register_model(tmp_path, flat(0.7), lineage, uri=uri)


# --------------------------------------------------------------------------- CLI


def test_cli_review_commands(
    uri: str, model_dir: Path, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {
        "models": {
            "candidate": {"dimensions": {d: {"instance": {"srcc": 0.7, "plcc": 0.72}} for d in DIMENSIONS}},
        }
    }
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(report))
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"video_id": "v1", "explanation": "blurry edges", "reasons": {"vq": ["blur"]}}) + "\n"
    )
    common = ["--tracking-uri", uri, "--name", name]
    args = ["registry", "register", str(model_dir), "--report", str(report_path), "--data-version", "d1"]
    args += ["--config-hash", "c1", "--samples", str(samples), "--auto-promote", *common]
    assert main(args) == 0
    assert "registered" in capsys.readouterr().out and main(args) == 0  # rerun: same version
    assert "v1; gate passed" in capsys.readouterr().out

    assert main(["registry", "list", *common]) == 0
    listing = capsys.readouterr().out
    assert "challenger,champion" in listing and "0.720" in listing

    assert main(["registry", "show", "champion", "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["samples"][0]["explanation"] == "blurry edges" and shown["tags"]["data_version"] == "d1"

    assert main(["registry", "compare", "champion", "challenger", *common]) == 0
    assert "blurry edges" in capsys.readouterr().out

    assert main(["registry", "promote", *common]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["registry", "rollback", *common]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["registry", "show", "7", *common]) == 1
    assert "has no version '7'" in capsys.readouterr().err
