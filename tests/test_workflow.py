"""End-to-end runs of the Flyte workflow: in-process (flytekit local execution) and through pyflyte.

The two full runs share one Flyte cache (HOME is per test session): the second, through the README's
pyflyte command with the same inputs, must reuse every cached stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA

from qsave.ingest import IngestConfig
from qsave.modeling import load_model
from qsave.preprocess import load_clip, read_exported
from qsave.recipe import Recipe
from qsave.registry import get_version, list_versions
from tasks.data import ingest, validate
from workflows.qsave import qsave_pipeline

SMALL = {"n_videos": 36, "seed": 5, "val_fraction": 0.15, "test_fraction": 0.15}  # 6 test clips, not 3
QUICK = {"sft_epochs": 1.0, "grpo_steps": 1, "final_sft_epochs": 1.0}
OPEN_GATE = {"min_srcc": -1.0, "min_plcc": -1.0}


def test_validate_task_on_imported_aigve_quarantines_the_missing_videos():
    dataset = ingest(data=IngestConfig(source="aigve", uri=str(SHARED_DATA / "aigve-bench-toy")))
    validation = validate(dataset=dataset, max_quarantine=0.5, require_labels=True)
    summary = json.loads(validation.summary)
    assert (summary["rows_in"], summary["valid"], summary["quarantined"]) == (10, 6, 4)
    assert summary["by_reason"]["video_missing"] == 4
    quarantine = pd.read_parquet(validation.quarantine_manifest.path)
    assert sorted(quarantine["video_id"]) == ["cogvideox_13", "cogvideox_2", "cogvideox_4", "cogvideox_5"]
    assert len(pd.read_parquet(validation.valid_manifest.path)) == 6
    assert os.path.isfile(os.path.join(validation.data_docs.path, "index.html"))
    with pytest.raises(Exception, match=r"4 of 10 rows quarantined"):
        validate(dataset=dataset, max_quarantine=0.25, require_labels=True)


@pytest.fixture(scope="module")
def first_run():
    started = time.perf_counter()
    out = qsave_pipeline(data=IngestConfig(**SMALL), recipe=Recipe(**QUICK), **OPEN_GATE)
    return out, time.perf_counter() - started


def test_pipeline_runs_every_stage_on_the_synthetic_default(first_run):
    out, _ = first_run
    summary = json.loads(out.validation.summary)
    assert summary["rows_in"] == summary["valid"] + summary["quarantined"] == SMALL["n_videos"]
    clips = read_exported(out.clips.path)
    assert len(clips) == summary["valid"] and set(clips["status"]) <= {"processed", "cached"}
    clip = load_clip(clips["clip_path"][0])
    assert clip.slow.num_frames == 4 and clip.fast.num_frames % 2 == 0
    assert clip.slow.width % 32 == 0 and clip.slow.height % 32 == 0
    model, _ = load_model(str(Path(out.model.path) / "model"))
    assert sum(p.numel() for p in model.parameters()) > 100_000
    report = json.loads((Path(out.evaluation.path) / "report.json").read_text())
    assert {"candidate", "base", "baseline"} <= set(report["models"])
    reasons = {name: report["models"][name]["dimensions"]["ta"]["reasons"] for name in ("candidate", "base")}
    assert reasons["candidate"] is not None, "the candidate's answers are generated and their reasons scored"
    assert reasons["base"] is None, "the untrained base is scored, not asked to explain"
    assert (Path(out.evaluation.path) / "report.html").stat().st_size > 10_000
    assert out.decision.startswith("gate passed")
    version = get_version("challenger")
    assert (
        version.tags["gate"] == "passed" and version.tags["data_version"] == summary["valid_dataset_version"]
    )


def test_readme_run_command_reuses_the_cache(first_run):
    _, first_seconds = first_run
    pyflyte = str(Path(sys.executable).with_name("pyflyte"))
    args = [
        "run", "workflows/qsave.py", "qsave_pipeline",
        "--data", json.dumps(SMALL), "--recipe", json.dumps(QUICK),
        "--min_srcc", "-1", "--min_plcc", "-1",
    ]  # fmt: skip
    versions_before = len(list_versions())
    started = time.perf_counter()
    done = subprocess.run([pyflyte, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "valid_manifest=" in done.stdout and "data_docs=" in done.stdout
    assert "decision='gate passed" in done.stdout
    log = done.stdout + done.stderr
    assert "train_runtime" not in log, "training stages must come from the cache on an unchanged rerun"
    assert "shard 0:" not in log, "preprocessing must come from the cache on an unchanged rerun"
    print(f"first run {first_seconds:.0f} s, cached rerun {seconds:.0f} s")
    assert len(list_versions()) == versions_before + 1, "every execution is tracked and registered anew"
