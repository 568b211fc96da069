"""The served model: the tiny model registered as a models-from-code pyfunc, loaded back with
``mlflow.pyfunc.load_model("models:/qsave@champion")`` and used by ``qsave score --model models:/…``; bad
videos become error rows, bad requests INVALID_PARAMETER_VALUE; and (slow) a real ``mlflow models serve``
answering a POST /invocations with a real AIGVE video."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, wait_for_http

from qsave import registry
from qsave.gate import GateConfig
from qsave.modeling import tiny_model_path
from qsave.schema import DIMENSIONS

VIDEO = SHARED_DATA / "aigve-bench-toy" / "videos" / "cogvideox_0.mp4"
PROMPT = "a panda playing guitar in a bamboo forest"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry whose champion is the tiny model; MLFLOW_TRACKING_URI points at it for the module."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('serving') / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    metrics = {f"{m}_{d}": 0.8 for m in ("srcc", "plcc") for d in DIMENSIONS}
    lineage = registry.Lineage("data-1", "eval-1", "code-1", "exec-serve", "cfg-1")
    version = registry.register_model(tiny_model_path(), metrics, lineage, uri=uri)
    assert registry.gate_model_version(version, GateConfig(auto_promote=True), uri=uri).passed
    yield uri
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def served(store: str) -> Any:
    import mlflow.pyfunc

    from qsave.tracking import configure

    configure(store)
    return mlflow.pyfunc.load_model("models:/qsave@champion")


def test_pyfunc_scores_and_reports_bad_rows(served: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    request = pd.DataFrame(
        {"video": [str(VIDEO), str(tmp_path / "missing.mp4"), str(broken)], "prompt": [PROMPT] * 3}
    )
    out = served.predict(request)
    assert len(out) == 3 and list(out["video"]) == list(request["video"])
    good = out.iloc[0]
    assert pd.isna(good["error"]) and good["video_id"] == "cogvideox_0"
    for dim in DIMENSIONS:
        assert 1.0 <= good[f"pred_{dim}"] <= 5.0
        probs = [good[f"prob_{dim}_{lv}"] for lv in ("bad", "poor", "fair", "good", "excellent")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert good[f"level_{dim}"] in ("bad", "poor", "fair", "good", "excellent")
    assert out.iloc[1]["error"] == "video_missing"
    assert out.iloc[2]["error"] == "undecodable" and out.iloc[2]["error_detail"]


def test_pyfunc_explains_on_request(served: Any) -> None:
    out = served.predict(
        pd.DataFrame({"video": [str(VIDEO)], "prompt": [PROMPT]}),
        params={"explain": True, "max_new_tokens": 8},
    )
    assert isinstance(out.iloc[0]["explanation"], str)
    assert isinstance(out.iloc[0]["pred_reasons_vq"], str)


def test_pyfunc_refuses_bad_requests(served: Any) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="at most 32 per request") as too_many:
        served.predict(pd.DataFrame({"video": [str(VIDEO)] * 33, "prompt": [PROMPT] * 33}))
    assert too_many.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="empty prompt"):
        served.predict(pd.DataFrame({"video": [str(VIDEO)], "prompt": ["  "]}))


def test_qsave_score_with_a_registry_uri(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    from qsave.cli import main

    assert main(["score", str(VIDEO), "--prompt", PROMPT, "--model", "models:/qsave@champion"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["video_id"] == "cogvideox_0" and set(line["scores"]) == set(DIMENSIONS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read(), parse_constant=_reject)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read(), parse_constant=_reject)


def _reject(token: str) -> None:
    raise ValueError(f"answer is not strict JSON: it contains {token}")


@pytest.mark.slow
def test_mlflow_models_serve_answers(store: str, tmp_path: Path) -> None:
    port = _free_port()
    bin_dir = REPO / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": store}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (kept open for the server's lifetime)
    proc = subprocess.Popen(
        [
            *(str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/qsave@champion"),
            *("--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ping", proc, 120, tmp_path / "serve.log")
        body = {
            "dataframe_split": {
                "columns": ["video", "prompt"],
                "data": [[str(VIDEO), PROMPT], [str(tmp_path / "missing.mp4"), PROMPT]],
            }
        }
        status, answer = _post(f"{base}/invocations", body)
        (tmp_path / "answer.json").write_text(json.dumps(answer, indent=2))
        assert status == 200, answer
        rows = answer["predictions"]
        assert 1.0 <= rows[0]["pred_overall"] <= 5.0 and rows[0]["level_vq"]
        assert rows[1]["error"] == "video_missing" and rows[1]["pred_vq"] is None  # null, not NaN
        status, refused = _post(
            f"{base}/invocations", {"dataframe_split": {"columns": ["prompt"], "data": [[PROMPT]]}}
        )
        assert status == 400 and "video" in refused["message"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
