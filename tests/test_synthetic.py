import json
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import pytest

from qsave.cli import main
from qsave.manifest import read_manifest, resolve_video_path, write_manifest
from qsave.schema import DIMENSIONS, MANIFEST_COLUMNS, REASON_DIMENSIONS, SPLITS, mos_column, reasons_column
from qsave.storage import file_sha256
from qsave.synthetic import GENERATORS, SynthConfig, assign_splits, corpus_rows, generate_corpus, plan_corpus
from qsave.taxonomy import is_known

CFG = SynthConfig(n=15, seed=3, workers=1)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_corpus(CFG, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def manifest(corpus) -> pd.DataFrame:
    return read_manifest(corpus)


def test_manifest_schema_ranges_and_truth_columns(corpus, manifest):
    assert corpus.name == "manifest.parquet"
    assert len(manifest) == CFG.n and manifest["video_id"].is_unique
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    for extra in ("prompt_id", "caption", "artefacts", *(f"true_{d}" for d in DIMENSIONS)):
        assert extra in manifest.columns
    for d in DIMENSIONS:
        assert manifest[mos_column(d)].between(1.0, 5.0).all()
        assert manifest[f"true_{d}"].between(1.0, 5.0).all()
        assert (manifest[f"n_raters_{d}"] >= 1).all() and (manifest[f"std_{d}"] >= 0).all()
    for d in REASON_DIMENSIONS:
        assert all(is_known(code, d) for codes in manifest[reasons_column(d)] for code in codes)
    for row in manifest.itertuples():
        assert row.video_path == f"videos/{row.video_id}.mp4"
        assert resolve_video_path(row.video_path, corpus.parent).is_file()
        assert set(json.loads(row.artefacts)) == set(REASON_DIMENSIONS)
        assert row.explanation.startswith("Visual quality is ")
        if not json.loads(row.artefacts)["ta"]:
            assert row.caption == row.prompt
    assert set(manifest["generator"]) <= set(GENERATORS)


def test_videos_are_h264_mp4_that_pyav_and_decord_read(corpus, manifest):
    path = resolve_video_path(manifest["video_path"].iloc[0], corpus.parent)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert _frames(path).shape == (CFG.num_frames, CFG.height, CFG.width, 3)
    reader = decord.VideoReader(str(path))
    assert len(reader) == CFG.num_frames and reader.get_avg_fps() == pytest.approx(CFG.fps)
    assert reader[0].shape == (CFG.height, CFG.width, 3)


def test_splits_are_prompt_disjoint_and_each_prompt_has_several_generators(manifest):
    assert set(manifest["split"]) == set(SPLITS)
    assert (manifest.groupby("prompt")["split"].nunique() == 1).all()
    assert (manifest.groupby("prompt_id")["prompt"].nunique() == 1).all()
    per_prompt = manifest.groupby("prompt")["generator"]
    assert (per_prompt.nunique() == per_prompt.size()).all()
    assert (per_prompt.size() == CFG.renders_per_prompt).all()


def test_split_shares_follow_the_fractions():
    ids = [f"p{i}" for i in range(100)]
    splits = assign_splits(ids, (0.7, 0.15, 0.15), np.random.default_rng(0))
    assert pd.Series(splits).value_counts().to_dict() == {"train": 70, "val": 15, "test": 15}
    assert set(assign_splits(ids[:3], (0.7, 0.15, 0.15), np.random.default_rng(0)).values()) == set(SPLITS)


def test_same_seed_gives_identical_rows_and_frames_whatever_the_workers(corpus, manifest, tmp_path):
    again = generate_corpus(SynthConfig(n=CFG.n, seed=CFG.seed, workers=2), tmp_path)
    pd.testing.assert_frame_equal(read_manifest(again), manifest)
    for video_path in manifest["video_path"]:
        np.testing.assert_array_equal(
            _frames(resolve_video_path(video_path, tmp_path)),
            _frames(resolve_video_path(video_path, corpus.parent)),
        )
    assert file_sha256(tmp_path / "manifest.parquet") == file_sha256(corpus)


def test_corpus_rows_are_the_manifest_without_rendering(manifest, tmp_path):
    plans, rows = corpus_rows(CFG)
    pd.testing.assert_frame_equal(read_manifest(write_manifest(rows, tmp_path / "m.parquet")), manifest)
    assert [p.video_id for p in plans] == manifest["video_id"].tolist()


def test_another_seed_gives_another_corpus():
    first, _ = plan_corpus(SynthConfig(n=6, seed=0))
    second, _ = plan_corpus(SynthConfig(n=6, seed=1))
    assert [p.prompt for p in first] != [p.prompt for p in second]


def test_generators_differ_per_dimension_and_panel_mos_tracks_the_truth():
    from scipy.stats import spearmanr

    from qsave.raters import rate

    cfg = SynthConfig(n=300, seed=5)
    plans, truth = plan_corpus(cfg)
    panel = rate(truth, [p.severities for p in plans], cfg.panel, np.random.default_rng(0))
    for k in range(len(DIMENSIONS)):
        assert spearmanr(panel.mos[:, k], truth[:, k])[0] > 0.8
    means = pd.DataFrame(truth, columns=DIMENSIONS).groupby([p.generator for p in plans]).mean()
    weakest = means[["vq", "mq", "ta"]].idxmin()
    assert weakest.nunique() == 3, f"each dimension should have its own weakest generator: {weakest}"
    assert np.corrcoef(truth[:, :3].T)[np.triu_indices(3, 1)].max() < 0.5


def test_a_crash_leaves_no_manifest(tmp_path):
    cfg = SynthConfig(n=3, seed=0, workers=1)
    (tmp_path / "manifest.parquet").write_bytes(b"stale manifest from an earlier run")
    first_video = plan_corpus(cfg)[0][0].video_id
    (tmp_path / "videos" / f"{first_video}.mp4").mkdir(parents=True)
    with pytest.raises(OSError):
        generate_corpus(cfg, tmp_path)
    assert not (tmp_path / "manifest.parquet").exists()


def test_config_rejects_bad_settings_with_the_setting_named():
    with pytest.raises(ValueError, match="multiples of 16"):
        SynthConfig(width=100)
    with pytest.raises(ValueError, match="gen-omega"):
        SynthConfig(generators=("gen-alpha", "gen-omega"))
    with pytest.raises(ValueError, match="sum to 1"):
        SynthConfig(split_fractions=(0.5, 0.2, 0.2))


def test_cli_synth_end_to_end(tmp_path, capsys):
    out = tmp_path / "synth out"
    assert (
        main(
            ["data", "synth", "--n", "6", "--out", str(out), "--workers", "1", "--seed", "2", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    df = read_manifest(out / "manifest.parquet")
    assert len(df) == 6 and f"wrote 6 clips and {out / 'manifest.parquet'}" in printed
    assert all(resolve_video_path(p, out).is_file() for p in df["video_path"])
    assert main(["data", "synth", "--n", "2", "--out", str(tmp_path / "x"), "--width", "100"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "2", "--out", str(tmp_path / "x"), "--splits", "0.8,0.1"]) == 2
    assert "give three non-negative shares" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "2", "--out", str(tmp_path / "x"), "--splits", "0.8,a,0.1"]) == 2
    assert "write three numbers" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
