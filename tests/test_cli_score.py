"""``qsave score`` end to end on real sample videos with the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from qsave.cli import main
from qsave.schema import DIMENSIONS, LEVELS

LAVIE = SHARED_DATA / "vbench-lavie-style" / "videos"


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for video in sorted(LAVIE.glob("*.mp4"))[:2]:
        shutil.copy(video, folder / video.name)
    return folder


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_a_folder_of_real_videos(two_videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(two_videos), "--model", "tiny", "--batch-size", "2", "--out", str(out)]) == 0
    lines = read_lines(out)
    assert [line["video_id"] for line in lines] == sorted(p.stem for p in two_videos.glob("*.mp4"))
    for line in lines:
        assert line["prompt"].startswith("A beautiful coastal beach in spring") and not line[
            "prompt"
        ].endswith("-0")
        assert set(line["scores"]) == set(DIMENSIONS)
        assert all(1.0 <= s <= 5.0 for s in line["scores"].values())
        assert all(level in LEVELS for level in line["levels"].values())
        for dim in DIMENSIONS:
            assert list(line["level_probs"][dim]) == list(LEVELS)
            assert sum(line["level_probs"][dim].values()) == pytest.approx(1.0, abs=1e-4)
        assert line["reasons"] is None and line["explanation"] is None
        assert set(line["timing_ms"]) == {"decode", "score", "explain"}


def test_unreadable_videos_get_error_lines_and_the_batch_goes_on(
    two_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"video_id": "missing", "video_path": "missing.mp4", "prompt": "a cat"},
        {"video_id": "broken", "video_path": str(broken), "prompt": "a dog"},
        {"video_id": "real", "video_path": str(next(two_videos.glob("*.mp4"))), "prompt": "a beach"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", str(manifest), "--explain", "--max-new-tokens", "8"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["video_id"] for line in lines] == ["missing", "broken", "real"]
    assert lines[0]["error"] == "video_missing" and lines[1]["error"] == "undecodable"
    assert lines[1]["detail"]
    assert lines[2]["prompt"] == "a beach" and set(lines[2]["reasons"]) == {"vq", "mq", "ta"}
    assert isinstance(lines[2]["explanation"], str)
    # Every video failing is the one non-zero exit.
    assert main(["score", str(broken), "--prompt", "a dog", "--out", str(tmp_path / "none.jsonl")]) == 1
    assert read_lines(tmp_path / "none.jsonl")[0]["error"] == "undecodable"


def test_inputs_without_prompts_are_refused_before_loading_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", str(tmp_path / "clip.mp4")]) == 2
    assert "needs --prompt" in capsys.readouterr().err
    assert main(["score", str(tmp_path)]) == 2  # an empty folder
