"""Preprocess stage: sharding, the content-addressed clip cache, error rows, clip files and merging."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from qsave.preprocess import (
    RESULT_COLUMNS,
    STATUSES,
    clip_cache_dir,
    clip_path_for,
    export_clips,
    exported_sampler,
    load_clip,
    merge_exported,
    merge_results,
    preprocess_shard,
    preview_html,
    read_exported,
    save_clip,
    shard_manifest,
)
from qsave.slowfast import LOCAL_SAMPLER, SamplerConfig, sample_clip
from qsave.storage import file_sha256
from qsave.video import DecodeLimits

LAVIE_DIR = SHARED_DATA / "vbench-lavie-style" / "videos"
LAVIE = sorted(LAVIE_DIR.glob("*.mp4"))

LIMITS = DecodeLimits(timeout_s=10.0)


def by_id(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(row["video_id"]): {str(k): v for k, v in row.items()} for row in table.to_dict("records")}


def test_shard_manifest_is_balanced_complete_and_order_independent() -> None:
    df = pd.DataFrame({"video_id": [f"v{i:02d}" for i in range(11)], "video_path": "x.mp4"})
    shards = shard_manifest(df, 4)
    assert [len(s) for s in shards] == [3, 3, 3, 2]
    assert sorted(pd.concat(shards)["video_id"]) == sorted(df["video_id"])
    shuffled = shard_manifest(df.sample(frac=1.0, random_state=3), 4)
    assert [s["video_id"].tolist() for s in shuffled] == [s["video_id"].tolist() for s in shards]
    assert len(shard_manifest(df, 50)) == 11
    assert [len(s) for s in shard_manifest(df.iloc[:0], 4)] == [0]
    with pytest.raises(ValueError, match="n_shards"):
        shard_manifest(df, 0)


@pytest.fixture
def manifest(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Two real clips (one also under a second id and a relative path), a missing file, a non-video."""
    videos = tmp_path / "videos"
    videos.mkdir()
    first, second = (shutil.copy(p, videos / f"clip{i}.mp4") for i, p in enumerate(LAVIE[:2]))
    (videos / "notes.mp4").write_text("not a video\n" * 100)
    df = pd.DataFrame(
        {
            "video_id": ["a", "b", "a-again", "gone", "junk"],
            "video_path": [
                str(first),
                str(second),
                "videos/clip0.mp4",
                "videos/missing.mp4",
                "videos/notes.mp4",
            ],
        }
    )
    return df, tmp_path


def test_preprocess_caches_by_content_and_reports_errors(manifest: tuple[pd.DataFrame, Path]) -> None:
    df, base = manifest
    cache = base / "cache"
    first = preprocess_shard(df, LOCAL_SAMPLER, LIMITS, cache, base_dir=base)
    table = by_id(first.table)
    assert list(first.table.columns) == list(RESULT_COLUMNS)
    assert first.counts == {"processed": 2, "cached": 1, "failed": 2}
    assert sum(first.counts.values()) == len(df)
    assert first.decoded == 3  # two clips and the junk file; the duplicate content and missing file are not
    assert table["a-again"]["status"] == "cached"
    assert table["a-again"]["clip_path"] == table["a"]["clip_path"]
    assert table["gone"]["reason"] == "video_missing" and "missing.mp4" in table["gone"]["detail"]
    assert table["junk"]["reason"] == "undecodable" and table["junk"]["detail"]
    assert table["a"]["tokens"] == table["a"]["slow_tokens"] + table["a"]["fast_tokens"] > 0

    again = preprocess_shard(df, LOCAL_SAMPLER, LIMITS, cache, base_dir=base)
    assert again.decoded == 0
    assert again.counts == {"processed": 0, "cached": 3, "failed": 2}
    pd.testing.assert_series_equal(again.table["tokens"], first.table["tokens"])
    assert by_id(again.table)["junk"]["reason"] == "undecodable"

    other = preprocess_shard(df.iloc[:1], SamplerConfig(slow_long_side=160, fast_long_side=96), LIMITS, cache)
    assert other.decoded == 1 and other.counts["processed"] == 1  # a new config is a new cache key


def test_clip_file_round_trip_and_key(tmp_path: Path) -> None:
    clip = sample_clip(LAVIE[0], LOCAL_SAMPLER, LIMITS)
    path = save_clip(clip, clip_path_for(tmp_path, file_sha256(LAVIE[0]), LOCAL_SAMPLER))
    assert path.parent.name == LOCAL_SAMPLER.fingerprint() and path.stem == file_sha256(LAVIE[0])
    assert clip_cache_dir() == Path(os.environ["QSAVE_HOME"]) / "clips"
    loaded = load_clip(path)
    for got, want in ((loaded.slow, clip.slow), (loaded.fast, clip.fast)):
        np.testing.assert_array_equal(got.frames, want.frames)
        np.testing.assert_array_equal(got.source_indices, want.source_indices)
        np.testing.assert_allclose(got.timestamps, want.timestamps)
        assert (got.fps, got.source_fps, got.tokens) == (want.fps, want.source_fps, want.tokens)
    assert loaded.info == clip.info
    assert loaded.window_s == clip.window_s and loaded.config_fingerprint == LOCAL_SAMPLER.fingerprint()


def test_merge_results_gives_one_row_per_video(manifest: tuple[pd.DataFrame, Path]) -> None:
    df, base = manifest
    results = [
        preprocess_shard(shard, LOCAL_SAMPLER, LIMITS, base / "cache", base_dir=base)
        for shard in shard_manifest(df, 2)
    ]
    merged = merge_results([r.table for r in results])
    assert merged["video_id"].tolist() == sorted(df["video_id"])
    assert set(merged["status"]) <= set(STATUSES)
    assert (merged["clip_path"] != "").sum() == 3
    with pytest.raises(ValueError, match="more than one row"):
        merge_results([results[0].table, results[0].table])
    assert merge_results([]).columns.tolist() == list(RESULT_COLUMNS)


def test_exported_shards_merge_into_one_self_contained_directory(manifest: tuple[pd.DataFrame, Path]) -> None:
    df, base = manifest
    exported = [
        export_clips(
            preprocess_shard(shard, LOCAL_SAMPLER, LIMITS, base / "cache", base_dir=base).table,
            base / f"shard{i}",
            LOCAL_SAMPLER,
        )
        for i, shard in enumerate(shard_manifest(df, 2))
    ]
    shutil.rmtree(base / "cache")  # the merged directory must not depend on the cache
    merged = merge_exported(exported, base / "merged")
    table = read_exported(base / "merged")
    assert table["video_id"].tolist() == merged["video_id"].tolist() == sorted(df["video_id"])
    ok = table[table["status"] != "failed"]
    assert len(ok) == 3 and all(str(p).startswith(str(base / "merged")) for p in ok["clip_path"])
    clip = load_clip(ok["clip_path"].iloc[0])
    assert clip.slow.num_frames == LOCAL_SAMPLER.slow_frames
    assert exported_sampler(base / "merged") == LOCAL_SAMPLER  # training records it in the model
    html = preview_html(table, max_clips=1)
    assert html.count("data:image/png;base64,") == 2 and "video_missing" in html
    other = export_clips(read_exported(exported[1]), base / "other", SamplerConfig())
    with pytest.raises(ValueError, match="sampled with different configs"):
        merge_exported([exported[0], other], base / "mixed")
    assert not (base / "mixed").exists()
