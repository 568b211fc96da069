"""End-to-end runs of the Flyte workflow, in-process (flytekit local execution) and through pyflyte."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA

from qsave.ingest import IngestConfig
from qsave.preprocess import load_clip, read_exported
from workflows.qsave import qsave_pipeline


def test_pipeline_on_imported_aigve_quarantines_the_missing_videos():
    out = qsave_pipeline(
        data=IngestConfig(source="aigve", uri=str(SHARED_DATA / "aigve-bench-toy")), max_quarantine=0.5
    )
    summary = json.loads(out.validation.summary)
    assert (summary["rows_in"], summary["valid"], summary["quarantined"]) == (10, 6, 4)
    assert summary["by_reason"]["video_missing"] == 4
    validation = out.validation
    quarantine = pd.read_parquet(validation.quarantine_manifest.path)
    assert sorted(quarantine["video_id"]) == ["cogvideox_13", "cogvideox_2", "cogvideox_4", "cogvideox_5"]
    assert len(pd.read_parquet(validation.valid_manifest.path)) == 6
    assert os.path.isfile(os.path.join(validation.data_docs.path, "index.html"))
    clips = read_exported(out.clips.path)
    assert len(clips) == 6 and set(clips["status"]) <= {"processed", "cached"}
    clip = load_clip(clips["clip_path"][0])
    assert clip.slow.num_frames == 4 and clip.fast.num_frames % 2 == 0
    assert clip.slow.width % 32 == 0 and clip.slow.height % 32 == 0


def test_pipeline_fails_clearly_when_too_much_is_quarantined():
    with pytest.raises(Exception, match=r"4 of 10 rows quarantined"):
        qsave_pipeline(data=IngestConfig(source="aigve", uri=str(SHARED_DATA / "aigve-bench-toy")))


def test_readme_run_command_on_the_synthetic_default(tmp_path):
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flytekit.clis.sdk_in_container.pyflyte",
            "run",
            "workflows/qsave.py",
            "qsave_pipeline",
            "--data",
            json.dumps({"n_videos": 12, "seed": 3}),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "valid_manifest=" in done.stdout and "data_docs=" in done.stdout
    assert '"rows_in": 12' in done.stdout and "clips=" in done.stdout
