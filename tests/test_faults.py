"""Fault injection: nothing is lost and every error names its cause.

- **Kills**: an SFT stage SIGKILLed mid-run (a real subprocess) resumes from its last complete checkpoint
  and ends with the weights and losses of an uninterrupted run; a half-written checkpoint is skipped. A
  registration SIGKILLed between register and gate leaves ``champion`` where it was.
- **Full disk**: every artefact writer (manifest, clip, video, model directory, predictions, report files,
  JSON logs) on a 1 MB tmpfs (ENOSPC; skipped where mounting is not allowed) and under ``RLIMIT_FSIZE`` in
  a subprocess (EFBIG, works everywhere) leaves no file at its destination and no temporary behind, keeps
  an older complete file intact, and raises an ``OSError`` that names the artefact.
- **Registry**: concurrent promotions converge; MLflow unreachable fails the registration clearly
  (credentials redacted), the model directory is untouched, and ``qsave registry register`` adds it later.
- **Hostile videos** (text named .mp4, truncated, 50M declared frames, 4096 px wide, a decode timeout)
  through validation, preprocessing, scoring and the served pyfunc: per-row reason codes, no crash, 400
  for an oversized request.
- **Supply chain**: safetensors only, no remote code, models-from-code pyfunc, the MLflow script binds
  127.0.0.1, no credentials in configs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, SHARED_DATA, training_corpus
from safetensors.torch import load_file

from qsave import registry, tracking
from qsave.cli import main
from qsave.gate import GateConfig
from qsave.manifest import read_manifest, write_manifest
from qsave.modeling import load_model, tiny_model_path
from qsave.preprocess import preprocess_shard, save_clip
from qsave.schema import DIMENSIONS
from qsave.sft import SFTStageConfig, run_sft
from qsave.slowfast import LOCAL_SAMPLER, sample_clip
from qsave.storage import write_bytes_atomic, write_text_atomic
from qsave.synthetic import MANIFEST_NAME, encode_mp4
from qsave.training import last_checkpoint, read_metrics, save_stage_model
from qsave.video import DecodeLimits, VideoError, probe

PYTHON = sys.executable
REAL_VIDEO = SHARED_DATA / "aigve-bench-toy" / "videos" / "cogvideox_0.mp4"
SFT_KNOBS: dict[str, Any] = {
    "per_device_batch_size": 2,
    "max_steps": 3,
    "save_steps": 1,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "linear",
    "think_fraction": 0.0,
    "seed": 3,
}
"""Flat SFTStageConfig fields, so the killed subprocess and this process train the same run."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}


# ---------------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An 8-clip synthetic dataset and its clip table (Parquet, relative clip paths)."""
    return training_corpus(tmp_path_factory.mktemp("faults"), 8)


# ---------------------------------------------------------------------------------- 1. kills

_SFT_SCRIPT = """
import json, sys
import qsave
from qsave.sft import SFTStageConfig, run_sft
dataset, table, out, knobs = sys.argv[1:5]
run_sft("tiny", dataset, table, SFTStageConfig(**json.loads(knobs)), out)
"""


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared in time")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkilled_sft_resumes_from_its_last_complete_checkpoint(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset, table = corpus
    out = tmp_path / "killed"
    checkpoints = out / "checkpoints"
    proc = subprocess.Popen(
        [PYTHON, "-c", _SFT_SCRIPT, str(dataset), str(table), str(out), json.dumps(SFT_KNOBS)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_when(proc, lambda: last_checkpoint(checkpoints) is not None)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()  # nothing a rerun or a cache could take as the stage's output

    # A checkpoint half-written when the kill landed: weights there, optimizer and state cut short.
    newest = last_checkpoint(checkpoints)
    assert newest is not None
    step = int(newest.name.split("-")[1])
    assert step < SFT_KNOBS["max_steps"]
    assert (newest / "model.safetensors").is_file() and not list(newest.glob("pytorch_model*.bin"))
    torn = checkpoints / f"checkpoint-{step + 1}"
    shutil.rmtree(torn, ignore_errors=True)
    shutil.copytree(newest, torn)
    (torn / "optimizer.pt").unlink()
    state = (
        (torn / "trainer_state.json")
        .read_text()
        .replace(f'"global_step": {step}', f'"global_step": {step + 1}')
    )
    (torn / "trainer_state.json").write_text(state[: len(state) // 2])
    assert last_checkpoint(checkpoints) == newest

    cfg = SFTStageConfig(**SFT_KNOBS)
    resumed = run_sft("tiny", dataset, table, cfg, out, resume=True)
    straight = run_sft("tiny", dataset, table, cfg, tmp_path / "straight")

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    losses = [
        [e["loss"] for e in read_metrics(d.parent / "metrics.jsonl") if "loss" in e]
        for d in (straight, resumed)
    ]
    assert len(losses[0]) == SFT_KNOBS["max_steps"]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


# ---------------------------------------------------------------------------------- 2. full disk


def _write_every_artefact(out: Path, video: Path) -> dict[str, str]:
    """Run each artefact writer into ``out`` with content too large for the fault (over 1 MB each; the
    clip is sampled from ``video`` at production sizes); ``{writer: outcome}``, the outcome being ``ok``
    or the error with its notes."""
    from qsave.predictions import write_predictions
    from qsave.slowfast import SamplerConfig

    rng = np.random.default_rng(0)
    blob = rng.integers(0, 255, 3 * 2**20, dtype=np.uint8)
    big_text = blob.tobytes().hex()
    model, processor = load_model("tiny")
    writers: dict[str, Callable[[], Any]] = {
        "manifest": lambda: write_manifest(_manifest([big_text]), out / "manifest.parquet"),
        "clip": lambda: save_clip(sample_clip(video, SamplerConfig()), out / "clip.npz"),
        "video": lambda: encode_mp4(
            rng.integers(0, 255, (24, 256, 256, 3), dtype=np.uint8), out / "video.mp4", 8, 0
        ),
        "model": lambda: save_stage_model(model, processor, str(tiny_model_path()), out / "model"),
        "predictions": lambda: write_predictions(pd.DataFrame({"video_id": [big_text]}), out / "pred.csv"),
        "report": lambda: write_bytes_atomic(out / "scatter.png", blob.tobytes()),
        "metrics": lambda: write_text_atomic(out / "metrics.jsonl", big_text),
    }
    outcomes = {}
    for name, write in writers.items():
        try:
            write()
            outcomes[name] = "ok"
        except Exception as exc:  # OSError, or a library's own error type (safetensors)
            outcomes[name] = " | ".join([str(exc), *getattr(exc, "__notes__", [])])
    return outcomes


def _check_nothing_partial(out: Path, outcomes: dict[str, str], cause: str) -> None:
    for name, outcome in outcomes.items():
        assert cause in outcome and "while writing" in outcome, (name, outcome)
    left = sorted(p.name for p in out.iterdir())
    assert left == ["manifest.parquet"], left  # only the older complete file, untouched
    assert read_manifest(out / "manifest.parquet")["video_id"].tolist() == ["v-old"]


def _manifest(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"video_id": ids, "video_path": "a.mp4", "prompt": "a red ball", "split": "train"})


def _old_manifest(out: Path) -> None:
    write_manifest(_manifest(["v-old"]), out / "manifest.parquet")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (a full disk for every artefact here); skipped where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_no_partial_artefact(small_disk: Path) -> None:
    _old_manifest(small_disk)
    outcomes = _write_every_artefact(small_disk, REAL_VIDEO)
    _check_nothing_partial(small_disk, outcomes, "No space left on device")


_FSIZE_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
import qsave
import test_faults
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
out = Path(sys.argv[1])
test_faults._old_manifest(out)
test_faults.tiny_model_path()  # built (and cached) before the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
print(json.dumps(test_faults._write_every_artefact(out, test_faults.REAL_VIDEO)))
"""


def test_file_size_limit_leaves_no_partial_artefact(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a subprocess gives real EFBIG errors mid-write, without root."""
    done = subprocess.run(
        [PYTHON, "-c", _FSIZE_SCRIPT, str(tmp_path)], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    _check_nothing_partial(tmp_path, outcomes, "File too large")


def test_a_writer_failing_midway_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _old_manifest(tmp_path)

    def half_then_fail(self: pd.DataFrame, path: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"PAR1 half a parquet file")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_fail)
    with pytest.raises(OSError, match="Input/output error") as failed:
        write_manifest(_manifest(["v-new"]), tmp_path / "manifest.parquet")
    assert any("manifest.parquet" in note for note in failed.value.__notes__)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]
    assert read_manifest(tmp_path / "manifest.parquet")["video_id"].tolist() == ["v-old"]


# ---------------------------------------------------------------------------------- 3. registry


def _flat(value: float) -> dict[str, float]:
    return {f"{m}_{d}": value for m in ("srcc", "plcc") for d in DIMENSIONS}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A sqlite registry and a trained model directory (a copy of the tiny model) as a stage output."""
    root = tmp_path_factory.mktemp("registry")
    model_dir = root / "final_sft" / "model"
    shutil.copytree(tiny_model_path(), model_dir)
    return f"sqlite:///{root / 'mlflow.db'}", model_dir


def _aliases(uri: str, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in tracking.client(uri).get_registered_model(name).aliases.items()}


_REGISTER_THEN_DIE = """
import os, signal, sys
import qsave
from qsave import registry
from qsave.gate import GateConfig
model_dir, uri, name = sys.argv[1:4]
metrics = {f"{m}_{d}": 0.9 for m in ("srcc", "plcc") for d in ("vq", "mq", "ta", "overall")}
lineage = registry.Lineage("data-1", "eval-1", "code-1", "exec-killed", "cfg-1")
version = registry.register_model(model_dir, metrics, lineage, name=name, uri=uri)
print(version, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the task dies between register and gate/alias
registry.gate_model_version(version, GateConfig(auto_promote=True), name=name, uri=uri)
"""


def _report(tmp_path: Path, value: float) -> Path:
    report = {
        "models": {
            "candidate": {"dimensions": {d: {"instance": {"srcc": value, "plcc": value}} for d in DIMENSIONS}}
        }
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


def test_kill_between_register_and_alias_keeps_champion(
    store: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, model_dir = store
    name = "qsave-killed"
    good = registry.register_model(
        tiny_model_path(),
        _flat(0.7),
        registry.Lineage("d", "eval-1", "c", "exec-good", "h"),
        name=name,
        uri=uri,
    )
    registry.gate_model_version(good, GateConfig(auto_promote=True), name=name, uri=uri)

    done = subprocess.run(
        [PYTHON, "-c", _REGISTER_THEN_DIE, str(model_dir), uri, name],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    orphan = done.stdout.strip().splitlines()[-1]
    assert _aliases(uri, name) == {"champion": good, "challenger": good}
    assert registry.get_version(orphan, name=name, uri=uri).gate() == "pending"
    with pytest.raises(registry.RegistryError, match="gate=pending"):
        registry.promote(orphan, name=name, uri=uri)

    # The retry (the same command an operator runs) finds the orphan instead of adding a duplicate.
    args = ["registry", "register", str(model_dir), "--report", str(_report(tmp_path, 0.9))]
    args += ["--data-version", "data-1", "--eval-data-version", "eval-1", "--config-hash", "cfg-1"]
    args += ["--execution-id", "exec-killed", "--auto-promote", "--tracking-uri", uri, "--name", name]
    assert main(args) == 0
    assert f"v{orphan}; gate passed" in capsys.readouterr().out
    assert len(registry.list_versions(name=name, uri=uri)) == 2
    assert _aliases(uri, name) == {"champion": orphan, "challenger": orphan, "previous-champion": good}


def test_concurrent_promotions_are_idempotent(store: tuple[str, Path]) -> None:
    uri, model_dir = store
    name = "qsave-concurrent"
    versions = []
    for i, value in enumerate((0.7, 0.8)):
        lineage = registry.Lineage("d", "eval-1", "c", f"exec-conc-{i}", "h")
        version = registry.register_model(model_dir, _flat(value), lineage, name=name, uri=uri)
        registry.gate_model_version(version, GateConfig(), name=name, uri=uri)
        versions.append(version)
    first, second = versions
    registry.promote(first, name=name, uri=uri)

    results: list[Any] = []

    def promote() -> None:
        try:
            results.append(registry.promote(second, name=name, uri=uri))
        except Exception as exc:  # collected, so a failure in a thread fails the test
            results.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, registry.AliasChange) for r in results), results
    aliases = _aliases(uri, name)
    assert aliases["champion"] == second and aliases["previous-champion"] == first
    assert not registry.promote(second, name=name, uri=uri).changed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mlflow_outage_keeps_the_model_and_one_command_registers_it(
    store: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, model_dir = store
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://ci-bot:s3cret-token@127.0.0.1:{_free_port()}"
    before = registry.model_digest(model_dir)
    lineage = registry.Lineage("d", "eval-1", "c", "exec-outage", "h")
    with pytest.raises(tracking.TrackingError) as failed:
        registry.register_model(model_dir, _flat(0.8), lineage, name="qsave-outage", uri=dead)
    message = str(failed.value)
    assert "MLflow at http://***@127.0.0.1" in message and "s3cret" not in message
    assert f"qsave registry register {model_dir}" in message
    assert registry.model_digest(model_dir) == before  # the trained artefacts are untouched

    args = ["registry", "register", str(model_dir), "--report", str(_report(tmp_path, 0.8))]
    args += ["--data-version", "d", "--eval-data-version", "eval-1", "--config-hash", "h"]
    args += ["--execution-id", "exec-outage", "--tracking-uri", uri, "--name", "qsave-outage"]
    assert main(args) == 0
    assert "registered qsave-outage v1; gate passed" in capsys.readouterr().out
    assert main([*args[:-4], "--tracking-uri", dead, "--name", "qsave-outage"]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "s3cret" not in err


def test_redact_hides_credentials() -> None:
    text = "MLflow at https://alice:pw@mlflow.example.com/x?token=abc&run=1 failed"
    assert tracking.redact(text) == "MLflow at https://***@mlflow.example.com/x?token=***&run=1 failed"
    assert tracking.redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


# ---------------------------------------------------------------------------------- 4. hostile videos


@pytest.fixture(scope="module")
def hostile(corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    """Hostile files and the reason code each must get."""
    dataset, _ = corpus
    root = tmp_path_factory.mktemp("hostile")
    good = next((dataset / "videos").glob("*.mp4"))
    data = good.read_bytes()
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    frames = bytearray(data)  # the sample table claims 50 million frames
    struct.pack_into(">I", frames, frames.find(b"stts") + 12, 50_000_000)
    (root / "frames.mp4").write_bytes(bytes(frames))
    encode_mp4(np.zeros((2, 16, 4096, 3), np.uint8), root / "wide.mp4", 8, 23)
    return [
        ("undecodable", root / "text.mp4"),
        ("undecodable", root / "truncated.mp4"),
        ("too_many_frames", root / "frames.mp4"),
        ("resolution_too_large", root / "wide.mp4"),
        ("ok", good),
    ]


def _expected(hostile: list[tuple[str, Path]]) -> dict[str, str]:
    return {path.name: reason for reason, path in hostile}


def test_probe_rejects_hostile_files_and_times_out(hostile: list[tuple[str, Path]], tmp_path: Path) -> None:
    for reason, path in hostile:
        if reason == "ok":
            assert probe(path).num_frames == 16
            continue
        with pytest.raises(VideoError) as err:
            probe(path)
        assert err.value.reason == reason and str(path) in str(err.value)
    good = hostile[-1][1]
    fresh = tmp_path / "fresh.mp4"  # probes are cached per file; a new one must really be decoded
    shutil.copy(good, fresh)
    with pytest.raises(VideoError, match="decode_timeout"):
        probe(fresh, DecodeLimits(timeout_s=0.001))
    with pytest.raises(VideoError, match="file_too_large"):
        probe(good, DecodeLimits(max_file_bytes=1000))


def test_validation_and_preprocessing_file_hostile_rows_with_reasons(
    corpus: tuple[Path, Path], hostile: list[tuple[str, Path]], tmp_path: Path
) -> None:
    from qsave.validation import ValidationConfig, validate_manifest

    dataset, _ = corpus
    rows = read_manifest(dataset / MANIFEST_NAME).iloc[: len(hostile)].copy()
    rows["video_path"] = [str(p) for _, p in hostile]
    result = validate_manifest(rows, ValidationConfig(max_quarantine_fraction=1.0), tmp_path / "validation")
    expected = _expected(hostile)
    got = {
        Path(p).name: r
        for p, r in zip(result.quarantine["video_path"], result.quarantine["quarantine_reason"])
    }
    assert got == {k: v for k, v in expected.items() if v != "ok"}
    assert [Path(p).name for p in result.valid["video_path"]] == [hostile[-1][1].name]

    shard = preprocess_shard(rows, LOCAL_SAMPLER, DecodeLimits(), tmp_path / "clips").table
    got = {
        Path(p).name: r if s == "failed" else "ok"
        for p, s, r in zip(shard["video_path"], shard["status"], shard["reason"])
    }
    assert got == expected
    failed = shard[shard["status"] == "failed"]
    assert all(failed["clip_path"] == "") and all(failed["detail"].str.len() > 0)


def test_scoring_reports_hostile_rows_and_scores_the_rest(hostile: list[tuple[str, Path]]) -> None:
    from qsave.scoring import ScoreRequest, ScoringConfig, score_videos

    model, processor = load_model("tiny")
    requests = [ScoreRequest(p.stem, str(p), "a red ball") for _, p in hostile]
    records = list(score_videos(requests, model, processor, LOCAL_SAMPLER, ScoringConfig()))
    got = {Path(r["path"]).name: r.get("error", "ok") for r in records}
    assert got == _expected(hostile)
    strict = ScoringConfig(limits=DecodeLimits(max_file_bytes=1000))
    [record] = score_videos(requests[-1:], model, processor, LOCAL_SAMPLER, strict)
    assert record["error"] == "file_too_large"  # the caller's limits reach the decoder


def test_served_model_rejects_hostile_rows_and_oversized_requests(
    store: tuple[str, Path], hostile: list[tuple[str, Path]], tmp_path: Path
) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from qsave.serving import ServingConfig

    uri, model_dir = store
    lineage = registry.Lineage("d", "eval-1", "c", "exec-serve", "h")
    version = registry.register_model(
        model_dir,
        _flat(0.8),
        lineage,
        name="qsave-serve",
        uri=uri,
        serving=ServingConfig(max_rows=8, max_file_mb=1),
    )
    tracking.configure(uri)
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/qsave-serve/{version}", dst_path=str(tmp_path))
    )
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.bin"))  # code + safetensors only
    assert "serving.py" in (local / "MLmodel").read_text()
    served = mlflow.pyfunc.load_model(str(local))

    big = tmp_path / "big.mp4"
    big.write_bytes(hostile[-1][1].read_bytes() + b"\0" * 2**20)
    videos = [*(p for _, p in hostile), big]
    out = served.predict(
        pd.DataFrame({"video": [str(p) for p in videos], "prompt": ["a red ball"] * len(videos)})
    )
    got = {Path(v).name: e or "ok" for v, e in zip(out["video"], out["error"])}
    assert got == {**_expected(hostile), "big.mp4": "file_too_large"}
    assert all(isinstance(d, str) and d for d, e in zip(out["error_detail"], out["error"]) if e)

    with pytest.raises(MlflowException, match="at most 8 per request") as refused:
        served.predict(pd.DataFrame({"video": [str(big)] * 9, "prompt": ["a red ball"] * 9}))
    assert refused.value.get_http_status_code() == 400


# ---------------------------------------------------------------------------------- 5. supply chain

SOURCES = [p for d in ("qsave", "tasks", "workflows") for p in sorted((REPO / d).rglob("*.py"))]


def test_no_remote_code_and_safetensors_only() -> None:
    remote, unsafe_loads = [], []
    for path in SOURCES:
        text = path.read_text()
        if re.search(r"trust_remote_code\s*=\s*True", text):
            remote.append(path.name)
        for call in re.finditer(r"(AutoModel\w*|For\w+Generation)\.from_pretrained\(", text):
            window = text[call.end() : call.end() + 400]
            if "use_safetensors=True" not in window:
                unsafe_loads.append(f"{path.name}:{text[: call.start()].count(chr(10)) + 1}")
        if re.search(r"torch\.load\(|pickle\.loads?\(", text):
            unsafe_loads.append(f"{path.name}: pickle load")
        if "save_pretrained(" in text and "safe_serialization=False" in text:
            unsafe_loads.append(f"{path.name}: pickled save")
    assert not remote and not unsafe_loads, (remote, unsafe_loads)
    assert re.search(
        r"model_init_kwargs=\{\"use_safetensors\": True\}", (REPO / "qsave" / "grpo.py").read_text()
    )


def test_mlflow_script_binds_localhost_unless_told(tmp_path: Path) -> None:
    fake = tmp_path / "mlflow"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "MLFLOW_BIN": str(fake), "QSAVE_STORE": str(tmp_path)}
    env.pop("MLFLOW_HOST", None)
    script = str(REPO / "infra" / "mlflow-local.sh")
    default = subprocess.run(["bash", script], env=env, capture_output=True, text=True, check=True).stdout
    assert "--host 127.0.0.1 " in default
    told = subprocess.run(
        ["bash", script], env={**env, "MLFLOW_HOST": "0.0.0.0"}, capture_output=True, text=True, check=True
    )
    assert "--host 0.0.0.0 " in told.stdout


def test_no_credentials_in_configs_or_sources() -> None:
    """URI credentials, AWS keys and secret assignments; special tokens (``<|im_end|>``) and the redaction
    docs' ``user:pass`` placeholder are not secrets."""
    secret = re.compile(
        r"://(?!user:pass@)[^/\s:@'\"]+:[^/\s@'\"]+@|AKIA[0-9A-Z]{16}"
        r"|(?i:(password|secret|api_key|token)\s*[:=]\s*['\"](?!<\|)[^'\"]{6,})"
    )
    files = [*SOURCES, *(p for p in (REPO / "configs").rglob("*") if p.is_file()), REPO / "pyproject.toml"]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in files for m in secret.finditer(p.read_text())]
    assert not found, found
    assert secret.search('uri = "https://bot:hunter22@mlflow.example.com"')  # the pattern does catch one


def test_set_alias_retries_only_a_lost_create_race() -> None:
    from mlflow.exceptions import MlflowException

    class RacingClient:
        """Fails like the SQL store does for the slower of two concurrent alias creations, then works."""

        def __init__(self, error: str) -> None:
            self.error, self.calls = error, 0

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise MlflowException(self.error)

    racing = RacingClient("(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.alias")
    registry.set_alias(racing, "m", "champion", "2")
    assert racing.calls == 2
    other = RacingClient("RESOURCE_DOES_NOT_EXIST: model version 9")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        registry.set_alias(other, "m", "champion", "9")
    assert other.calls == 1
