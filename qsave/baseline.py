"""The classical no-reference baseline: hand-crafted pixel features and a ridge fit per dimension.

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

The only learning is a closed-form ridge regression on standardised features, per dimension, fitted on
the train split; a :class:`BaselineModel` is saved and loaded as JSON. Videos that cannot be read become
reported rows (:class:`FeatureTable.failures`), never crashes.
"""

from __future__ import annotations

import json
import math
import os
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

_EPS = 1e-6
_BLOCK = 8


@dataclass(frozen=True)
class BaselineConfig:
    num_frames: int = 16
    """Frames decoded per video, evenly spaced over the clip."""
    size: tuple[int, int] = (256, 256)
    """(width, height) frames are resized to, so features are comparable across resolutions."""
    alpha: float = 1.0
    """Ridge penalty on standardised features."""
    freeze_threshold: float = 0.5 / 255
    """Mean |grey difference| below which two consecutive sampled frames count as frozen."""
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    workers: int = 2
    """Processes that decode videos and compute their features (1: in this process). Results do not
    depend on it; on the 1,200-clip default, 2 workers halve the evaluation's ~170 s of feature time."""


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def _grey(frames: NDArray[np.uint8]) -> NDArray[np.float64]:
    rgb = frames.astype(np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def _laplacian(grey: NDArray[np.float64]) -> NDArray[np.float64]:
    g = grey
    return g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]


def _noise_sigma(grey: NDArray[np.float64]) -> NDArray[np.float64]:
    """Immerkær (1996): σ = √(π/2) / (6 (W−2)(H−2)) · Σ |I ∗ M|, M = [[1,−2,1],[−2,4,−2],[1,−2,1]]."""
    g = grey
    conv = (
        g[:, :-2, :-2] - 2 * g[:, :-2, 1:-1] + g[:, :-2, 2:]
        - 2 * g[:, 1:-1, :-2] + 4 * g[:, 1:-1, 1:-1] - 2 * g[:, 1:-1, 2:]
        + g[:, 2:, :-2] - 2 * g[:, 2:, 1:-1] + g[:, 2:, 2:]
    )  # fmt: skip
    return math.sqrt(math.pi / 2) * np.abs(conv).mean(axis=(1, 2)) / 6.0


def _blockiness(grey: NDArray[np.float64]) -> float:
    ratios = []
    for axis in (1, 2):
        grad = np.abs(np.diff(grey, axis=axis)).mean(axis=3 - axis)  # (frames, positions)
        positions = np.arange(grad.shape[1])
        boundary = (positions % _BLOCK) == _BLOCK - 1
        if boundary.any() and (~boundary).any():
            ratios.append((grad[:, boundary].mean() + _EPS) / (grad[:, ~boundary].mean() + _EPS))
    return float(np.mean(ratios)) if ratios else 1.0


def _colourfulness(frames: NDArray[np.uint8]) -> float:
    rgb = frames.astype(np.float64) / 255.0
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
    grey = _grey(frames)
    means = grey.mean(axis=(1, 2))
    levels = [np.unique(np.round(g * 255).astype(np.uint8)).size / 256 for g in grey]
    features = {
        "sharpness": float(np.log(_laplacian(grey).var(axis=(1, 2)).mean() + _EPS)),
        "noise": float(np.log(_noise_sigma(grey).mean() + _EPS)),
        "blockiness": _blockiness(grey),
        "grey_levels": float(np.mean(levels)),
        "colourfulness": _colourfulness(frames),
        "brightness_mean": float(means.mean()),
        "contrast": float(grey.std(axis=(1, 2)).mean()),
        "clipped_dark": float((grey < 0.02).mean()),
        "clipped_bright": float((grey > 0.98).mean()),
    }
    if len(grey) < 2:
        temporal = dict.fromkeys(("flicker", "flicker_pulse", "motion", "motion_variation"), 0.0)
        return features | temporal | {"motion_jerk": 0.0, "freeze_ratio": 0.0}
    brightness_change = np.diff(means)
    raw_diff = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    motion = np.abs(np.diff(grey, axis=0) - brightness_change[:, None, None]).mean(axis=(1, 2))
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
) -> FeatureTable:
    """Features for every manifest row (in ``config.workers`` processes); unreadable videos are listed in
    ``failures`` with the reason."""
    import pandas as pd

    from qsave.parallel import map_in_processes

    config = config or BaselineConfig()
    ids, paths = manifest["video_id"].astype(str), manifest["video_path"].astype(str)
    jobs = [
        ({"video_id": i, "video_path": p}, str(resolve_video_path(p, base_dir)), config)
        for i, p in zip(ids, paths, strict=True)
    ]
    results = list(map_in_processes(_features_row, jobs, config.workers, "baseline features", progress))
    failed = [r for r in results if "reason" in r]
    read = [r for r in results if "reason" not in r]
    return FeatureTable(
        features=pd.DataFrame(read, columns=["video_id", *FEATURE_NAMES]),
        failures=pd.DataFrame(failed, columns=["video_id", "video_path", "reason", "detail"]),
    )


# --------------------------------------------------------------------------------------------------
# Ridge model
# --------------------------------------------------------------------------------------------------


def ridge(x: NDArray[np.float64], y: NDArray[np.float64], alpha: float) -> tuple[NDArray[np.float64], float]:
    """Closed-form ridge on already standardised ``x``: weights and intercept (the intercept is not
    penalised)."""
    centre = float(y.mean())
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    weights = np.asarray(np.linalg.solve(gram, x.T @ (y - centre)), dtype=np.float64)
    return weights, centre


@dataclass(frozen=True)
class BaselineModel:
    """Standardisation and per-dimension ridge weights over :data:`FEATURE_NAMES`."""

    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    weights: dict[str, list[float]]
    intercepts: dict[str, float]
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
        weights, intercepts, n_train = {}, {}, {}
        for dim in DIMENSIONS:
            if mos_column(dim) not in joined.columns:
                continue
            y = joined[mos_column(dim)].to_numpy(dtype=np.float64)
            keep = finite & np.isfinite(y)
            if keep.sum() < 2:
                continue
            w, b = ridge((x_all[keep] - mean) / scale, y[keep], config.alpha)
            weights[dim], intercepts[dim], n_train[dim] = w.tolist(), b, int(keep.sum())
        if not weights:
            raise ValueError("no dimension has two or more training rows with a MOS")
        settings = asdict(config) | {"limits": asdict(config.limits)}
        return cls(list(FEATURE_NAMES), mean.tolist(), scale.tolist(), weights, intercepts, n_train, settings)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """``video_id`` and ``pred_<dim>`` (clipped to the 1–5 scale) for each feature row."""
        import pandas as pd

        x = (features[self.feature_names].to_numpy(dtype=np.float64) - self.mean) / np.array(self.scale)
        out = pd.DataFrame({"video_id": features["video_id"].astype(str).to_numpy()})
        for dim, w in self.weights.items():
            out[f"pred_{dim}"] = np.clip(x @ np.array(w) + self.intercepts[dim], SCORE_MIN, SCORE_MAX)
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
        return cls(
            feature_names=names,
            mean=[float(v) for v in data["mean"]],
            scale=[float(v) for v in data["scale"]],
            weights={k: [float(v) for v in w] for k, w in data["weights"].items()},
            intercepts={k: float(v) for k, v in data["intercepts"].items()},
            n_train={k: int(v) for k, v in data["n_train"].items()},
            config=dict(data["config"]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

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
) -> BaselineRun:
    """Features for every video, ridge fit on the ``train_split`` rows, predictions for every split."""
    config = config or BaselineConfig()
    table = extract_features(manifest, base_dir, config, progress)
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
