"""Importers on the real shared samples and on small generated tables."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import SAMPLE_SETS, SHARED_DATA, missing_sample_data

from qsave.cli import main
from qsave.importers import ImportFailed, import_source, parse_mapping
from qsave.manifest import read_manifest

AIGVE = SHARED_DATA / "aigve-bench-toy"
LAVIE = SHARED_DATA / "vbench-lavie-style"
MISSING_AIGVE = ["cogvideox_2", "cogvideox_4", "cogvideox_5", "cogvideox_13"]


def test_aigve_mapping_keeps_and_reports_missing_videos() -> None:
    result = import_source("aigve", AIGVE / "annotations.json")
    frame = result.manifest.set_index("video_id")
    assert len(frame) == 10 and result.missing == MISSING_AIGVE
    assert set(frame["generator"]) == {"cogvideox"} and set(frame["split"]) == {"test"}
    assert all(Path(p).is_absolute() for p in frame["video_path"])
    row = frame.loc["cogvideox_3"]  # tq 5, dynamic 1, physics 5, element 4, action 1, overall 3
    assert (row.mos_vq, row.mos_mq, row.mos_ta, row.mos_overall) == (5.0, 3.0, 2.5, 3.0)
    assert frame.loc["cogvideox_0", "mos_ta"] == 5.0  # action_presentence 0 = not applicable
    assert frame.loc["cogvideox_3", "prompt"].startswith("A broad, grassy plain")


def test_cli_import_aigve_prints_missing_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "aigve.parquet"
    assert main(["data", "import", "--format", "aigve", str(AIGVE), "--out", str(out), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "4 row(s) have no video file" in printed and all(vid in printed for vid in MISSING_AIGVE)
    manifest = read_manifest(out)
    assert len(manifest) == 10 and set(manifest["split"]) == {"val"}


def test_prompt_only_folder_with_annotations_and_plain() -> None:
    annotated = import_source("folder", LAVIE).manifest
    assert len(annotated) == 11 and annotated[["mos_vq", "mos_overall"]].isna().all().all()
    assert all(Path(p).is_file() for p in annotated["video_path"])
    assert "A beautiful coastal beach in spring, waves lapping on sand, pixel art" in set(annotated["prompt"])
    plain = import_source("folder", LAVIE / "videos", generator="lavie").manifest
    assert sorted(plain["prompt"]) == sorted(annotated["prompt"])  # prompt = stem without "-0"
    assert set(plain["generator"]) == {"lavie"}


def test_t2vqa_style_csv_rescales_one_mos_to_overall(tmp_path: Path) -> None:
    shutil.copy(AIGVE / "videos" / "cogvideox_0.mp4", tmp_path / "a video, 1.mp4")
    pd.DataFrame(
        {"video_name": ["a video, 1.mp4", "gone.mp4"], "prompt": ["a desert", "a city"], "mos": ["75", "0"]}
    ).to_csv(tmp_path / "t2vqa.csv", index=False)
    mapping = parse_mapping(["video_path=video_name", "mos_overall=mos"])
    result = import_source("csv", tmp_path / "t2vqa.csv", mapping=mapping, mos_range=(0, 100))
    frame = result.manifest
    assert frame["video_id"].tolist() == ["a video, 1", "gone"] and result.missing == ["gone"]
    assert frame["mos_overall"].tolist() == [4.0, 1.0] and math.isnan(frame["mos_vq"][0])
    assert frame["video_path"][0] == str(tmp_path / "a video, 1.mp4")


def test_jsonl_with_mapping_and_split_column(tmp_path: Path) -> None:
    rows = [
        {
            "id": "x1",
            "file": str(AIGVE / "videos" / "cogvideox_9.mp4"),
            "text": "dunes",
            "visual_score": 3.5,
            "part": "train",
        },
        {
            "id": "x2",
            "file": str(AIGVE / "videos" / "cogvideox_7.mp4"),
            "text": "streets",
            "visual_score": 2,
            "part": "",
        },
    ]
    src = tmp_path / "scores.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = ["video_id=id", "video_path=file", "prompt=text", "mos_vq=visual_score", "split=part"]
    frame = import_source("jsonl", src, mapping=parse_mapping(pairs), split="val").manifest
    assert frame["mos_vq"].tolist() == [3.5, 2.0] and frame["split"].tolist() == ["train", "val"]


def test_bad_mappings_and_sources_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ImportFailed, match="not a manifest column"):
        parse_mapping(["score=mos"])
    with pytest.raises(ImportFailed, match="MANIFEST_COLUMN=SOURCE_COLUMN"):
        parse_mapping(["mos_vq"])
    src = tmp_path / "t.csv"
    src.write_text("name,prompt\na.mp4,hi\n")
    with pytest.raises(ImportFailed, match="mapped column"):
        import_source("csv", src, mapping={"video_path": "file"})
    code = main(["data", "import", "--format", "csv", str(src), "--out", str(tmp_path / "m.parquet")])
    assert code == 2 and "no video path column" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()


def test_the_suite_names_the_sample_sets_it_lacks(tmp_path: Path) -> None:
    """The session-start guard (``conftest.pytest_sessionstart``) stops on exactly the missing sets."""
    assert missing_sample_data(tmp_path) == list(SAMPLE_SETS)
    (tmp_path / SAMPLE_SETS[0]).mkdir()
    assert missing_sample_data(tmp_path) == list(SAMPLE_SETS[1:])
    assert missing_sample_data(SHARED_DATA) == []
