"""Validation on the real AIGVE toy set and on a corpus of bad inputs (real files, real GX)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA
from test_video import write_mp4

from qsave.cli import main
from qsave.importers import import_source
from qsave.manifest import read_manifest, write_manifest
from qsave.validation import ValidationConfig, ValidationFailed, validate_manifest
from qsave.video import DecodeLimits

AIGVE = SHARED_DATA / "aigve-bench-toy"
LAVIE_CLIP = (
    SHARED_DATA
    / "vbench-lavie-style"
    / "videos"
    / "A beautiful coastal beach in spring, waves lapping on sand, "
    "Claude Monet style-0.mp4"
)
MISSING_AIGVE = {"cogvideox_2", "cogvideox_4", "cogvideox_5", "cogvideox_13"}


@pytest.fixture(scope="module")
def aigve_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(
        import_source("aigve", AIGVE).manifest, tmp_path_factory.mktemp("aigve") / "m.parquet"
    )


def test_aigve_toy_set_quarantines_exactly_the_missing_videos(
    aigve_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ok"
    args = ["data", "validate", str(aigve_manifest), "--out", str(out), "--json", "--max-quarantine", "0.5"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_in"], summary["valid"], summary["quarantined"]) == (10, 6, 4)
    assert summary["by_reason"]["video_missing"] == 4 and sum(summary["by_reason"].values()) == 4
    quarantine = read_manifest(out / "quarantine.parquet")
    assert set(quarantine["video_id"]) == MISSING_AIGVE
    assert set(quarantine["quarantine_reason"]) == {"video_missing"}
    assert len(read_manifest(out / "valid.parquet")) == 6
    assert (out / "data_docs" / "index.html").is_file() and json.loads((out / "summary.json").read_text())


def test_default_threshold_fails_clearly_after_writing_outputs(
    aigve_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "strict"
    assert main(["data", "validate", str(aigve_manifest), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "4 of 10 rows quarantined (40%), above the limit of 25%" in captured.err
    assert "video_missing 4" in captured.err and "--max-quarantine" in captured.err
    assert "valid: 6" in captured.out and "data_docs/index.html" in captured.out
    assert (out / "valid.parquet").is_file() and (out / "quarantine.parquet").is_file()
    with pytest.raises(ValidationFailed, match="above the limit"):
        validate_manifest(read_manifest(aigve_manifest), ValidationConfig(), tmp_path / "api")


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per kind of bad input plus three valid rows; returns the manifest and the expected reasons."""
    root = tmp_path_factory.mktemp("bad")
    weird = root / "a folder, with spaces"
    weird.mkdir()
    good_generated = write_mp4(weird / "clip, no. 1.mp4", 12)
    ok = write_mp4(root / "ok.mp4", 12)
    (root / "zero.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    (root / "text.mp4").write_text("not a video\n" * 40)
    write_mp4(root / "one.mp4", 1)
    write_mp4(root / "wide.mp4", 3, width=3856, height=16)
    shutil.copy(LAVIE_CLIP, root / "lavie, beach clip.mp4")
    aigve_clip = str(AIGVE / "videos" / "cogvideox_0.mp4")

    def row(vid: str, path: str | Path, prompt: str, split: str = "train", **mos: float) -> dict[str, object]:
        scores = {"mos_vq": 3.0, "mos_mq": 3.5, "mos_ta": 4.0, "mos_overall": 3.0, **mos}
        return {"video_id": vid, "video_path": str(path), "prompt": prompt, "split": split, **scores}

    rows = [
        row("good_aigve", aigve_clip, "a desert at sunset"),
        row("good_lavie", root / "lavie, beach clip.mp4", "a beach, in Monet's style"),
        row("good_spaces", good_generated, "a grey square, fading", split="val"),
        row("zero", root / "zero.mp4", "p zero"),
        row("truncated", root / "truncated.mp4", "p truncated"),
        row("text", root / "text.mp4", "p text"),
        row("one_frame", root / "one.mp4", "p one"),
        row("wide", root / "wide.mp4", "p wide"),
        row("nan_mos", ok, "p nan", mos_vq=math.nan),
        row("out_of_range", ok, "p range", mos_ta=7.0),
        row("good_aigve", ok, "p duplicate"),
        row("empty_prompt", ok, "   "),
        row("leak", ok, "A desert  at sunset", split="test"),
        row("two_problems", root / "gone.mp4", "p two", mos_overall=0.0),
        row("bad_split", ok, "p split", split="holdout"),
    ]
    expected = {
        "zero": "video_empty",
        "truncated": "undecodable",
        "text": "undecodable",
        "one_frame": "too_few_frames",
        "wide": "resolution_too_large",
        "nan_mos": "mos_missing",
        "out_of_range": "mos_out_of_range",
        "good_aigve#dup": "duplicate_id",
        "empty_prompt": "empty_prompt",
        "leak": "split_leakage",
        "two_problems": "mos_out_of_range",
        "bad_split": "bad_split",
    }
    return pd.DataFrame(rows), expected


def test_bad_inputs_each_end_in_quarantine_with_their_reason(
    bad_corpus: tuple[pd.DataFrame, dict[str, str]], tmp_path: Path
) -> None:
    frame, expected = bad_corpus
    cfg = ValidationConfig(limits=DecodeLimits(timeout_s=10), max_quarantine_fraction=0.9)
    result = validate_manifest(frame, cfg, tmp_path)
    assert sorted(result.valid["video_id"]) == ["good_aigve", "good_lavie", "good_spaces"]
    assert result.valid["video_path"].str.contains("a folder, with spaces").any()
    quarantine = result.quarantine
    got = {
        (f"{vid}#dup" if path.endswith("ok.mp4") and vid == "good_aigve" else vid): reason
        for vid, path, reason in zip(
            quarantine["video_id"], quarantine["video_path"], quarantine["quarantine_reason"]
        )
    }
    assert got == expected
    two = quarantine.set_index("video_id").loc["two_problems", "quarantine_detail"]
    assert "mos_out_of_range: mos_overall=0 is outside [1, 5]" in two and "video_missing" in two
    summary = result.summary
    assert summary["rows_in"] == len(frame) == summary["valid"] + summary["quarantined"]
    assert summary["by_reason"]["undecodable"] == 2 and summary["rows_with_problem"]["video_missing"] == 1
    stored = read_manifest(tmp_path / "quarantine.parquet")
    assert list(stored["quarantine_reason"]) == list(quarantine["quarantine_reason"])


def test_unlabelled_prompt_only_data_passes_with_allow_unlabeled(tmp_path: Path) -> None:
    manifest = write_manifest(
        import_source("folder", SHARED_DATA / "vbench-lavie-style").manifest, tmp_path / "m.jsonl"
    )
    assert (
        main(["data", "validate", str(manifest), "--out", str(tmp_path / "a"), "--json", "--allow-unlabeled"])
        == 0
    )
    labelled = validate_manifest(
        read_manifest(manifest), ValidationConfig(max_quarantine_fraction=1.0), tmp_path / "b"
    ).summary
    assert labelled["by_reason"]["mos_missing"] == 11
