import pandas as pd
import pytest
from conftest import SHARED_DATA

from qsave.ingest import IngestConfig, ingest, synth_config
from qsave.manifest import read_manifest, resolve_video_path
from qsave.synthetic import corpus_rows


def test_import_makes_a_self_contained_dataset_and_keeps_missing_rows(tmp_path):
    manifest = ingest(IngestConfig(source="aigve", uri=str(SHARED_DATA / "aigve-bench-toy")), tmp_path / "ds")
    df = read_manifest(manifest)
    assert len(df) == 10, "rows with missing videos are kept for validation to quarantine"
    present = [p for p in df["video_path"] if resolve_video_path(p, manifest.parent).is_file()]
    assert len(present) == 6
    assert all(p.startswith("videos/") for p in present), "present videos live inside the dataset"
    missing = df.loc[~df["video_path"].str.startswith("videos/"), "video_id"]
    assert sorted(missing) == ["cogvideox_13", "cogvideox_2", "cogvideox_4", "cogvideox_5"]


def test_manifest_source_resolves_relative_paths_and_moves_videos(tmp_path):
    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    (src / "clips" / "a b,c.mp4").write_bytes(b"not decoded here")
    pd.DataFrame(
        {"video_id": ["x"], "video_path": ["clips/a b,c.mp4"], "prompt": ["a cat"], "split": ["train"]}
    ).to_parquet(src / "m.parquet")
    manifest = ingest(IngestConfig(source="manifest", uri=str(src / "m.parquet")), tmp_path / "ds")
    row = read_manifest(manifest).iloc[0]
    assert (manifest.parent / row["video_path"]).read_bytes() == b"not decoded here"
    assert row["split"] == "train"


def test_bad_source_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'youtube'"):
        ingest(IngestConfig(source="youtube"), tmp_path / "ds")
    with pytest.raises(ValueError, match="needs a uri"):
        ingest(IngestConfig(source="csv"), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_manifest_snapshot_behind_a_url_is_downloaded_with_its_videos(tmp_path):
    snapshot = tmp_path / "bucket" / "snapshots" / "2026-11-23"
    (snapshot / "videos").mkdir(parents=True)
    (snapshot / "videos" / "a.mp4").write_bytes(b"video bytes")
    pd.DataFrame({"video_id": ["a"], "video_path": ["videos/a.mp4"], "prompt": ["a dog"]}).to_parquet(
        snapshot / "manifest.parquet"
    )
    uri = f"file://{snapshot}/manifest.parquet"
    manifest = ingest(IngestConfig(source="manifest", uri=uri), tmp_path / "ds")
    row = read_manifest(manifest).iloc[0]
    assert (manifest.parent / row["video_path"]).read_bytes() == b"video bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "ds"], "no download folder left behind"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(
            IngestConfig(source="manifest", uri=f"file://{tmp_path}/nope/manifest.parquet"), tmp_path / "x"
        )


def test_default_synthetic_corpus_trains_on_2040_clips_and_holds_out_180_each():
    _, rows = corpus_rows(synth_config(IngestConfig()))
    assert rows["split"].value_counts().to_dict() == {"train": 2040, "val": 180, "test": 180}
    assert rows.groupby("prompt")["split"].nunique().max() == 1, "splits are prompt-disjoint"


def test_shares_that_leave_no_training_prompts_are_refused():
    with pytest.raises(ValueError, match="leave some prompts for train"):
        synth_config(IngestConfig(val_fraction=0.5, test_fraction=0.5))
    with pytest.raises(ValueError, match="non-negative"):
        synth_config(IngestConfig(val_fraction=-0.1))
