"""The classical baseline: features respond to the artefacts they measure; ridge; JSON; real videos."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from scipy.ndimage import gaussian_filter

from qsave.baseline import (
    FEATURE_NAMES,
    BaselineConfig,
    BaselineModel,
    extract_features,
    frame_features,
    run_baseline,
    sample_indices,
)
from qsave.manifest import write_manifest
from qsave.schema import DIMENSIONS

FRAMES, SIZE = 12, 96


def _clip(speeds: list[float] | None = None) -> np.ndarray:
    """A sharp random-cell texture over a gradient, panning right at ``speeds`` px per frame."""
    rng = np.random.default_rng(0)
    cells = np.kron(rng.uniform(40, 215, (SIZE // 4, 3 * SIZE // 4)), np.ones((4, 4)))
    texture = cells + np.linspace(-20, 20, cells.shape[1])[None, :]
    offsets = np.concatenate([[0.0], np.cumsum(speeds or [2.0] * (FRAMES - 1))]).round().astype(int)
    grey = np.stack([texture[:, o : o + SIZE] for o in offsets])
    rgb = np.stack([grey, grey * 0.9 + 10, grey * 0.8 + 20], axis=-1)
    return rgb


def _features(frames: np.ndarray) -> dict[str, float]:
    return frame_features(np.clip(frames, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def clean() -> dict[str, float]:
    return _features(_clip())


def test_blur_lowers_sharpness(clean) -> None:
    blurred = _features(np.stack([gaussian_filter(f, (1.5, 1.5, 0)) for f in _clip()]))
    assert blurred["sharpness"] < clean["sharpness"] - 1.0  # log scale: > e-fold less Laplacian energy


def test_noise_raises_the_noise_estimate(clean) -> None:
    rng = np.random.default_rng(1)
    noisy = _features(_clip() + rng.normal(0, 12, (FRAMES, SIZE, SIZE, 3)))
    assert noisy["noise"] > clean["noise"] + 0.5
    assert noisy["grey_levels"] >= clean["grey_levels"]


def test_noise_estimate_recovers_the_sigma_of_white_noise_and_levels_are_counted() -> None:
    """Immerkær's estimator is unbiased for white Gaussian noise on a flat image; levels are exact."""
    rng = np.random.default_rng(2)
    grey = 128 + rng.normal(0, 12.75, (FRAMES, SIZE, SIZE))  # σ = 0.05 of the grey range
    features = _features(np.repeat(grey[..., None], 3, axis=-1))
    assert np.exp(features["noise"]) == pytest.approx(0.05, rel=0.03)
    steps = np.repeat(np.arange(0, 250, 10, dtype=np.uint8)[None, None, :], SIZE, axis=1)  # 25 grey levels
    assert frame_features(np.repeat(steps[..., None], 3, axis=-1))["grey_levels"] == 25 / 256


def test_flicker_is_seen_as_flicker_not_motion(clean) -> None:
    pulse = np.where(np.arange(FRAMES) % 2, 25.0, -25.0)[:, None, None, None]
    flicker = _features(_clip() + pulse)
    assert flicker["flicker"] > 0.1 > clean["flicker"]
    assert flicker["flicker_pulse"] > 10 * (clean["flicker_pulse"] + 1e-3)
    assert flicker["motion"] == pytest.approx(clean["motion"], rel=0.25)


def test_freeze_and_unsteady_motion(clean) -> None:
    frozen = _features(np.repeat(_clip()[:1], FRAMES, axis=0))
    assert frozen["freeze_ratio"] == 1.0 and frozen["motion"] == 0.0
    assert clean["freeze_ratio"] == 0.0 and clean["motion"] > 0.01
    stutter = _features(_clip([0.0, 6.0] * 5 + [0.0]))
    assert stutter["freeze_ratio"] > 0.4
    assert stutter["motion_variation"] > clean["motion_variation"] + 0.5
    assert stutter["motion_jerk"] > clean["motion_jerk"] + 0.5


def test_blocks_and_posterisation(clean) -> None:
    frames = _clip()
    blocks = frames.reshape(FRAMES, SIZE // 8, 8, SIZE // 8, 8, 3).mean(axis=(2, 4), keepdims=True)
    blocky = _features(np.broadcast_to(blocks, (FRAMES, SIZE // 8, 8, SIZE // 8, 8, 3)).reshape(frames.shape))
    assert blocky["blockiness"] > clean["blockiness"] + 1.0
    posterised = _features(np.round(frames / 64) * 64)
    assert posterised["grey_levels"] < clean["grey_levels"] / 4


def test_exposure_statistics(clean) -> None:
    dark = _features(_clip() * 0.15)
    assert dark["brightness_mean"] < clean["brightness_mean"] / 4
    assert dark["contrast"] < clean["contrast"]
    bright = _features(_clip() + 200)
    assert bright["clipped_bright"] > 0.5 > clean["clipped_bright"]


def test_single_frame_and_bad_shapes() -> None:
    one = _features(_clip()[:1])
    assert set(one) == set(FEATURE_NAMES)
    assert one["motion"] == 0.0
    with pytest.raises(ValueError, match="frames must be"):
        frame_features(np.zeros((2, 2, 2, 3), dtype=np.uint8))


def test_sample_indices() -> None:
    assert sample_indices(81, 5) == [0, 20, 40, 60, 80]
    assert sample_indices(3, 16) == [0, 1, 2]
    assert sample_indices(0, 4) == []


def _feature_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    frame.insert(0, "video_id", [f"v{seed}_{i}" for i in range(n)])
    return frame


def _ratings(frame: pd.DataFrame, score: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"video_id": frame["video_id"], **{f"mos_{d}": score for d in DIMENSIONS}})


def test_ridge_learns_a_linear_relation_and_round_trips_as_json(tmp_path) -> None:
    train, test = _feature_frame(200, 0), _feature_frame(50, 1)

    def ratings(frame: pd.DataFrame) -> pd.DataFrame:
        return _ratings(frame, 3 + 0.6 * frame["sharpness"] - 0.4 * frame["noise"] + 0.3 * frame["flicker"])

    model = BaselineModel.fit(train, ratings(train), BaselineConfig(regressor="ridge", alpha=0.1))
    predicted = model.predict(test)
    truth = ratings(test)["mos_vq"].clip(1, 5)
    assert np.corrcoef(predicted["pred_vq"], truth)[0, 1] > 0.99
    assert model.n_train == dict.fromkeys(DIMENSIONS, 200)
    loaded = BaselineModel.load(model.save(tmp_path / "baseline.json"))
    pd.testing.assert_frame_equal(loaded.predict(test), predicted)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        BaselineModel.load(tmp_path / "bad.json")


def test_boosting_reads_a_relation_ridge_cannot_and_matches_scikit_learn(tmp_path) -> None:
    from scipy.stats import spearmanr
    from sklearn.ensemble import GradientBoostingRegressor

    train, test = _feature_frame(400, 0), _feature_frame(200, 1)

    def ratings(frame: pd.DataFrame) -> pd.DataFrame:
        # quality falls as high-frequency energy leaves its middle range, either way (noise or blur)
        return _ratings(frame, 4.5 - 1.2 * frame["sharpness"].abs())

    truth = ratings(test)["mos_vq"]
    config = BaselineConfig(n_trees=60)
    boosted = BaselineModel.fit(train, ratings(train), config)
    ridge = BaselineModel.fit(train, ratings(train), BaselineConfig(regressor="ridge"))
    assert spearmanr(boosted.predict(test)["pred_vq"], truth)[0] > 0.9
    assert abs(spearmanr(ridge.predict(test)["pred_vq"], truth)[0]) < 0.3
    # The JSON trees give scikit-learn's own predictions (the test targets stay inside 1–5, no clipping).
    x = (train[list(FEATURE_NAMES)] - boosted.mean) / boosted.scale
    reference = GradientBoostingRegressor(n_estimators=60, learning_rate=0.05, max_depth=3, random_state=0)
    reference.fit(x.to_numpy(), ratings(train)["mos_vq"])
    x_test = ((test[list(FEATURE_NAMES)] - boosted.mean) / boosted.scale).to_numpy()
    np.testing.assert_allclose(boosted.predict(test)["pred_vq"], reference.predict(x_test).clip(1, 5))
    loaded = BaselineModel.load(boosted.save(tmp_path / "boosted.json"))
    pd.testing.assert_frame_equal(loaded.predict(test), boosted.predict(test))
    # A row with a non-finite feature gets no prediction rather than a made-up one.
    broken = test.head(3).copy()
    broken.loc[broken.index[1], "noise"] = np.nan
    assert boosted.predict(broken)["pred_vq"].isna().tolist() == [False, True, False]
    with pytest.raises(ValueError, match="regressor='lasso'"):
        BaselineConfig(regressor="lasso")
    with pytest.raises(ValueError, match="refit"):
        BaselineModel.from_dict({k: v for k, v in boosted.to_dict().items() if k != "regressors"})


def test_real_videos_and_missing_ones_become_reported_rows(tmp_path, capsys) -> None:
    from qsave.cli import main
    from qsave.importers import import_aigve

    manifest = import_aigve(SHARED_DATA / "aigve-bench-toy", split="train").manifest
    run = run_baseline(manifest, config=BaselineConfig(num_frames=6, size=(192, 108)))
    assert len(run.predictions) + len(run.failures) == len(manifest) == 10
    assert sorted(run.failures["video_id"]) == ["cogvideox_13", "cogvideox_2", "cogvideox_4", "cogvideox_5"]
    assert set(run.failures["reason"]) == {"video_missing"}
    assert run.predictions[[f"pred_{d}" for d in DIMENSIONS]].notna().all().all()
    # The same predictions go through `qsave eval` with the toy set's ratings, beside a baseline that
    # the CLI fits itself from the manifest.
    rows = manifest[["video_id", "generator", *[f"mos_{d}" for d in DIMENSIONS]]]
    predictions = tmp_path / "aigve_baseline.csv"
    rows.merge(run.predictions, on="video_id", how="left").to_csv(predictions, index=False)
    manifest_path = write_manifest(manifest, tmp_path / "manifest.parquet")
    out = tmp_path / "report"
    args = ["eval", "--predictions", str(predictions), "--baseline", str(manifest_path), "--out", str(out)]
    code = main([*args, "--bootstrap", "50", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    numbers = json.loads(captured.out)
    assert numbers["n_vq"] == 6 and numbers["n_excluded_vq"] == 4  # missing videos: rows with empty preds
    assert "delta_baseline_srcc_vq" in numbers
    assert "only 1 generator" in captured.err  # model level needs three generators: flagged, not faked
    assert "cogvideox_2" in captured.err and "video_missing" in captured.err
    assert BaselineModel.load(out / "baseline_model.json").n_train["vq"] == 6
    assert len(pd.read_csv(out / "baseline_failures.csv")) == 4
    assert (out / "report.html").is_file()


def test_worker_processes_give_the_same_rows_in_order_and_keep_the_failures(tmp_path) -> None:
    videos = sorted((SHARED_DATA / "vbench-lavie-style" / "videos").glob("*.mp4"))[:3]
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    paths = [str(videos[0]), str(tmp_path / "gone.mp4"), str(videos[1]), "broken.mp4", str(videos[2])]
    manifest = pd.DataFrame({"video_id": [f"v{i}" for i in range(5)], "video_path": paths})
    config = BaselineConfig(num_frames=4, size=(64, 64))
    alone = extract_features(manifest, tmp_path, BaselineConfig(**{**config.__dict__, "workers": 1}))
    pooled = extract_features(manifest, tmp_path, BaselineConfig(**{**config.__dict__, "workers": 2}))
    pd.testing.assert_frame_equal(alone.features, pooled.features)
    pd.testing.assert_frame_equal(alone.failures, pooled.failures)
    assert pooled.features["video_id"].tolist() == ["v0", "v2", "v4"]
    assert pooled.failures["video_id"].tolist() == ["v1", "v3"]
    assert pooled.failures["reason"].tolist()[0] == "video_missing"
