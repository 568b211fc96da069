"""The classical no-reference baseline: hand-crafted pixel features and a regressor per dimension.

It is the floor a learned assessor must beat. Features are computed per video from evenly spaced frames
(:func:`qsave.video.read_frames`), all on grey levels in [0, 1] unless noted:

* ``sharpness`` — log Laplacian energy (variance of the 4-neighbour Laplacian), mean over frames;
* ``noise`` — log of Immerkær's noise σ (a Laplacian-difference mask that cancels smooth structure);
* ``blockiness`` — gradient across 8-pixel block boundaries ÷ gradient elsewhere (≈ 1 when unblocked);
* ``grey_levels`` — share of the 256 grey levels in use (posterised, flat frames use few);
* ``colourfulness`` — Hasler–Süsstrunk colourfulness of the RGB frames;
* ``brightness_mean``, ``contrast``, ``clipped_dark``, ``clipped_bright`` — exposure statistics;
* ``flicker`` / ``flicker_pulse`` — mean |Δ| and mean |Δ²| of the frame-mean brightness (pulsing
  brightness has large second differences; a slow fade does not);
* ``motion`` — mean |frame difference| after removing the brightness change; ``motion_variation`` (its
  coefficient of variation) and ``motion_jerk`` (mean |Δ| of it, relative) — unsteady motion;
* ``freeze_ratio`` — share of consecutive frame pairs that are (almost) identical.

The only learning is one regressor per dimension on standardised features, fitted on the train split:
gradient-boosted regression trees by default (fitted by scikit-learn's ``GradientBoostingRegressor``,
stored as plain arrays and evaluated here), or a closed-form ridge (``BaselineConfig(regressor="ridge")``).
Boosting is the real floor: visual quality falls with noise *and* with blur, opposite directions of the
same high-frequency energy, which no linear reading captures (held-out SRCC on the default corpus, VQ /
MQ / TA / overall: boosting 0.78 / 0.79 / 0.29 / 0.60, ridge 0.50 / 0.74 / 0.22 / 0.48;
``benchmarks/bench_baseline.py``). A :class:`BaselineModel` is saved and loaded as JSON (no pickle).
Videos that cannot be read become reported rows (:class:`FeatureTable.failures`), never crashes.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from qsave.manifest import resolve_video_path
from qsave.schema import DIMENSIONS, SCORE_MAX, SCORE_MIN, mos_column
from qsave.storage import write_text_atomic
from qsave.video import DecodeLimits

if TYPE_CHECKING:
    import pandas as pd

FEATURE_NAMES: Final = (
    "sharpness",
    "noise",
    "blockiness",
    "grey_levels",
    "colourfulness",
    "brightness_mean",
    "contrast",
    "clipped_dark",
    "clipped_bright",
    "flicker",
    "flicker_pulse",
    "motion",
    "motion_variation",
    "motion_jerk",
    "freeze_ratio",
)

REGRESSORS: Final = ("boosting", "ridge")
_EPS = 1e-6
_BLOCK = 8


@dataclass(frozen=True)
class BaselineConfig:
    num_frames: int = 16
    """Frames decoded per video, evenly spaced over the clip."""
    size: tuple[int, int] = (256, 256)
    """(width, height) frames are resized to, so features are comparable across resolutions."""
    regressor: str = "boosting"
    """``boosting`` (gradient-boosted trees) or ``ridge`` (closed form); see the module docstring."""
    alpha: float = 1.0
    """Ridge penalty on standardised features."""
    n_trees: int = 300
    """Boosting: trees per dimension, each fitted to the residual of the ones before."""
    learning_rate: float = 0.05
    """Boosting: shrinkage of each tree's contribution."""
    max_depth: int = 3
    """Boosting: depth of each tree (3: interactions of up to three features)."""
    seed: int = 0
    """Boosting: random state of the tree fitting (ties between equally good splits)."""
    freeze_threshold: float = 0.5 / 255
    """Mean |grey difference| below which two consecutive sampled frames count as frozen."""
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    workers: int = 2
    """Processes that decode videos and compute their features (1: in this process). Results do not
    depend on it; on the 1,200-clip default, 2 workers halve the evaluation's ~170 s of feature time."""

    def __post_init__(self) -> None:
        if self.regressor not in REGRESSORS:
            raise ValueError(f"regressor={self.regressor!r}: use one of {', '.join(REGRESSORS)}")


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def _laplacian(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    g = grey
    return g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]


def _noise_sigma(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    """Immerkær (1996): σ = √(π/2) / (6 (W−2)(H−2)) · Σ |I ∗ M|, M = [[1,−2,1],[−2,4,−2],[1,−2,1]] — the
    outer product of [1, −2, 1] with itself, so two second differences, one per axis."""
    across = grey[:, :, :-2] - 2 * grey[:, :, 1:-1] + grey[:, :, 2:]
    conv = across[:, :-2] - 2 * across[:, 1:-1] + across[:, 2:]
    return math.sqrt(math.pi / 2) * np.abs(conv).mean(axis=(1, 2)) / 6.0


def _blockiness(grey: NDArray[np.float32]) -> float:
    ratios = []
    for axis in (1, 2):
        grad = np.abs(np.diff(grey, axis=axis)).mean(axis=3 - axis)  # (frames, positions)
        positions = np.arange(grad.shape[1])
        boundary = (positions % _BLOCK) == _BLOCK - 1
        if boundary.any() and (~boundary).any():
            ratios.append((grad[:, boundary].mean() + _EPS) / (grad[:, ~boundary].mean() + _EPS))
    return float(np.mean(ratios)) if ratios else 1.0


def _colourfulness(rgb: NDArray[np.float32]) -> float:
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    spread = np.sqrt(rg.std(axis=axes) ** 2 + yb.std(axis=axes) ** 2)
    centre = np.sqrt(rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2)
    return float((spread + 0.3 * centre).mean())


def frame_features(frames: NDArray[np.uint8], freeze_threshold: float = 0.5 / 255) -> dict[str, float]:
    """The baseline's features of one clip, from ``(N, H, W, 3)`` uint8 RGB frames (N ≥ 1, H, W ≥ 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < 3 or not len(frames):
        raise ValueError(f"frames must be (N ≥ 1, H ≥ 3, W ≥ 3, 3) uint8, got shape {frames.shape}")
    # float32: 0.46x the time of float64; features agree to ~1e-6 relative (docs/learning.md, session 16)
    rgb = frames.astype(np.float32) / np.float32(255.0)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    means = grey.mean(axis=(1, 2))
    quantised = np.round(grey * 255).astype(np.uint8).reshape(len(grey), -1)
    levels = [np.count_nonzero(np.bincount(q, minlength=256)) / 256 for q in quantised]
    features = {
        "sharpness": float(np.log(_laplacian(grey).var(axis=(1, 2)).mean() + _EPS)),
        "noise": float(np.log(_noise_sigma(grey).mean() + _EPS)),
        "blockiness": _blockiness(grey),
        "grey_levels": float(np.mean(levels)),
        "colourfulness": _colourfulness(rgb),
        "brightness_mean": float(means.mean()),
        "contrast": float(grey.std(axis=(1, 2)).mean()),
        "clipped_dark": float((grey < 0.02).mean()),
        "clipped_bright": float((grey > 0.98).mean()),
    }
    if len(grey) < 2:
        temporal = dict.fromkeys(("flicker", "flicker_pulse", "motion", "motion_variation"), 0.0)
        return features | temporal | {"motion_jerk": 0.0, "freeze_ratio": 0.0}
    brightness_change = np.diff(means)
    frame_diff = np.diff(grey, axis=0)
    raw_diff = np.abs(frame_diff).mean(axis=(1, 2))
    motion = np.abs(frame_diff - brightness_change[:, None, None]).mean(axis=(1, 2))
    motion_mean = float(motion.mean())
    pulse = float(np.abs(np.diff(means, n=2)).mean()) if len(means) > 2 else 0.0
    jerk = float(np.abs(np.diff(motion)).mean() / (motion_mean + _EPS)) if len(motion) > 1 else 0.0
    return features | {
        "flicker": float(np.abs(brightness_change).mean()),
        "flicker_pulse": pulse,
        "motion": motion_mean,
        "motion_variation": float(motion.std() / (motion_mean + _EPS)),
        "motion_jerk": jerk,
        "freeze_ratio": float((raw_diff < freeze_threshold).mean()),
    }


def sample_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced over ``num_frames`` (all of them when fewer)."""
    if num_frames <= 0:
        return []
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


def video_features(path: str | os.PathLike[str], config: BaselineConfig | None = None) -> dict[str, float]:
    """Decode a video's sampled frames and compute its features (raises :class:`qsave.video.VideoError`)."""
    from qsave.video import probe, read_frames

    config = config or BaselineConfig()
    info = probe(path, config.limits)
    frames = read_frames(path, sample_indices(info.num_frames, config.num_frames), config.size, config.limits)
    return frame_features(frames, config.freeze_threshold)


@dataclass(frozen=True)
class FeatureTable:
    features: pd.DataFrame
    """``video_id`` plus one column per :data:`FEATURE_NAMES`, for every readable video."""
    failures: pd.DataFrame
    """``video_id``, ``video_path``, ``reason``, ``detail`` for every video that could not be read."""


def _features_row(job: tuple[dict[str, str], str, BaselineConfig]) -> dict[str, Any]:
    """One manifest record's feature row, or its failure row (``reason`` and ``detail`` instead)."""
    from qsave.video import VideoError

    record, path, config = job
    try:
        return {"video_id": record["video_id"], **video_features(path, config)}
    except VideoError as exc:
        return {**record, "reason": exc.reason, "detail": exc.detail}
    except ValueError as exc:
        return {**record, "reason": "bad_frames", "detail": str(exc)}


def extract_features(
    manifest: pd.DataFrame,
    base_dir: str | os.PathLike[str] | None = None,
    config: BaselineConfig | None = None,
    progress: bool = False,
    stop: threading.Event | None = None,
) -> FeatureTable:
    """Features for every manifest row (in ``config.workers`` processes); unreadable videos are listed in
    ``failures`` with the reason. ``stop``: see :func:`qsave.parallel.map_in_processes`."""
    import pandas as pd

    from qsave.parallel import map_in_processes

    config = config or BaselineConfig()
    ids, paths = manifest["video_id"].astype(str), manifest["video_path"].astype(str)
    jobs = [
        ({"video_id": i, "video_path": p}, str(resolve_video_path(p, base_dir)), config)
        for i, p in zip(ids, paths, strict=True)
    ]
    results = list(map_in_processes(_features_row, jobs, config.workers, "baseline features", progress, stop))
    failed = [r for r in results if "reason" in r]
    read = [r for r in results if "reason" not in r]
    return FeatureTable(
        features=pd.DataFrame(read, columns=["video_id", *FEATURE_NAMES]),
        failures=pd.DataFrame(failed, columns=["video_id", "video_path", "reason", "detail"]),
    )


# --------------------------------------------------------------------------------------------------
# Regressors: plain JSON-able dicts, one per dimension
# --------------------------------------------------------------------------------------------------


def fit_ridge(x: NDArray[np.float64], y: NDArray[np.float64], alpha: float) -> dict[str, Any]:
    """Closed-form ridge on already standardised ``x`` (the intercept is not penalised)."""
    centre = float(y.mean())
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ (y - centre))
    return {"kind": "ridge", "weights": [float(w) for w in weights], "intercept": centre}


def fit_boosting(x: NDArray[np.float64], y: NDArray[np.float64], config: BaselineConfig) -> dict[str, Any]:
    """Gradient-boosted regression trees (squared error) fitted by scikit-learn, kept as arrays: per tree
    the split feature and threshold, the children (−1 at a leaf) and the node values."""
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(
        n_estimators=config.n_trees,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        random_state=config.seed,
    ).fit(x, y)
    trees = []
    for estimator in model.estimators_[:, 0]:
        tree = estimator.tree_
        trees.append(
            {
                "feature": tree.feature.tolist(),
                "threshold": tree.threshold.tolist(),
                "left": tree.children_left.tolist(),
                "right": tree.children_right.tolist(),
                "value": tree.value[:, 0, 0].tolist(),
            }
        )
    init = float(model.init_.constant_.ravel()[0])
    return {"kind": "boosting", "init": init, "learning_rate": config.learning_rate, "trees": trees}


def _tree_values(tree: Mapping[str, list[Any]], x: NDArray[np.float32]) -> NDArray[np.float64]:
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    left, right, value = np.asarray(tree["left"]), np.asarray(tree["right"]), np.asarray(tree["value"])
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    while (inner := left[node] >= 0).any():
        at = node[inner]
        go_left = x[rows[inner], feature[at]] <= threshold[at]
        node[inner] = np.where(go_left, left[at], right[at])
    return np.asarray(value[node], dtype=np.float64)


def predict_regressor(regressor: Mapping[str, Any], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Predictions of a :func:`fit_ridge` or :func:`fit_boosting` regressor for standardised ``x``."""
    if regressor["kind"] == "ridge":
        return np.asarray(x @ np.asarray(regressor["weights"]) + regressor["intercept"], dtype=np.float64)
    # scikit-learn's trees compare float32 features with their thresholds; do the same to match exactly
    x32 = x.astype(np.float32)
    total = sum((_tree_values(tree, x32) for tree in regressor["trees"]), np.zeros(len(x)))
    return np.asarray(regressor["init"] + regressor["learning_rate"] * total, dtype=np.float64)


@dataclass(frozen=True)
class BaselineModel:
    """Standardisation over :data:`FEATURE_NAMES` and one regressor per dimension."""

    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    regressors: dict[str, dict[str, Any]]
    n_train: dict[str, int]
    config: dict[str, Any]

    @classmethod
    def fit(
        cls, features: pd.DataFrame, ratings: pd.DataFrame, config: BaselineConfig | None = None
    ) -> BaselineModel:
        """Fit on the rows of ``features`` and ``ratings`` (``mos_<dim>``) that share a ``video_id``;
        rows with a missing MOS are left out of that dimension's fit only."""
        config = config or BaselineConfig()
        joined = features.merge(ratings, on="video_id", how="inner", suffixes=("", "_rating"))
        x_all = joined[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
        finite = np.all(np.isfinite(x_all), axis=1)
        if not finite.any():
            raise ValueError(
                "no training rows: the features and ratings share no video_id with finite features"
            )
        mean = x_all[finite].mean(axis=0)
        scale = x_all[finite].std(axis=0)
        scale[scale < 1e-12] = 1.0
        regressors, n_train = {}, {}
        for dim in DIMENSIONS:
            if mos_column(dim) not in joined.columns:
                continue
            y = joined[mos_column(dim)].to_numpy(dtype=np.float64)
            keep = finite & np.isfinite(y)
            if keep.sum() < 2:
                continue
            x = (x_all[keep] - mean) / scale
            if config.regressor == "ridge":
                regressors[dim] = fit_ridge(x, y[keep], config.alpha)
            else:
                regressors[dim] = fit_boosting(x, y[keep], config)
            n_train[dim] = int(keep.sum())
        if not regressors:
            raise ValueError("no dimension has two or more training rows with a MOS")
        settings = asdict(config) | {"limits": asdict(config.limits)}
        return cls(list(FEATURE_NAMES), mean.tolist(), scale.tolist(), regressors, n_train, settings)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """``video_id`` and ``pred_<dim>`` (clipped to the 1–5 scale; NaN where a feature is not finite)
        for each feature row."""
        import pandas as pd

        x = (features[self.feature_names].to_numpy(dtype=np.float64) - self.mean) / np.array(self.scale)
        finite = np.all(np.isfinite(x), axis=1)
        out = pd.DataFrame({"video_id": features["video_id"].astype(str).to_numpy()})
        for dim, regressor in self.regressors.items():
            pred = np.full(len(x), np.nan)
            pred[finite] = np.clip(predict_regressor(regressor, x[finite]), SCORE_MIN, SCORE_MAX)
            out[f"pred_{dim}"] = pred
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineModel:
        names = list(data["feature_names"])
        if names != list(FEATURE_NAMES):
            raise ValueError(
                f"baseline model features {names} differ from this version's {list(FEATURE_NAMES)}"
            )
        if "regressors" not in data:
            raise ValueError("baseline model has no 'regressors' (written by an older qsave): refit it")
        kinds = {dict(r).get("kind") for r in data["regressors"].values()}
        if not kinds <= set(REGRESSORS):
            raise ValueError(f"baseline model regressors {sorted(map(str, kinds))}: expected {REGRESSORS}")
        return cls(
            feature_names=names,
            mean=[float(v) for v in data["mean"]],
            scale=[float(v) for v in data["scale"]],
            regressors={k: dict(r) for k, r in data["regressors"].items()},
            n_train={k: int(v) for k, v in data["n_train"].items()},
            config=dict(data["config"]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BaselineModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read baseline model {path}: {exc}") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class BaselineRun:
    model: BaselineModel
    predictions: pd.DataFrame
    """``video_id``, ``split`` and ``pred_<dim>`` for every readable video (all splits)."""
    failures: pd.DataFrame


def run_baseline(
    manifest: pd.DataFrame,
    base_dir: str | os.PathLike[str] | None = None,
    config: BaselineConfig | None = None,
    train_split: str = "train",
    progress: bool = False,
    stop: threading.Event | None = None,
) -> BaselineRun:
    """Features for every video, regressors fit on the ``train_split`` rows, predictions for every split.
    ``stop`` ends the feature extraction early (:class:`qsave.parallel.Stopped`)."""
    config = config or BaselineConfig()
    table = extract_features(manifest, base_dir, config, progress, stop)
    ids = manifest["video_id"].astype(str)
    train_ids = set(ids[manifest["split"].astype(str) == train_split])
    train = table.features[table.features["video_id"].isin(train_ids)]
    if train.empty:
        raise ValueError(
            f"no readable {train_split!r} rows to fit the baseline on "
            f"({len(train_ids)} in the manifest, {len(table.failures)} videos unreadable)"
        )
    ratings = manifest.assign(video_id=ids)
    model = BaselineModel.fit(train, ratings, config)
    predictions = model.predict(table.features)
    predictions.insert(1, "split", predictions["video_id"].map(dict(zip(ids, manifest["split"].astype(str)))))
    return BaselineRun(model=model, predictions=predictions, failures=table.failures)
