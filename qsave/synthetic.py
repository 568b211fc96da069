"""The synthetic AIGV corpus: the embedded default dataset and a test-bed whose truth is known.

:func:`generate_corpus` samples distinct prompts (:mod:`qsave.scenes`), renders each with several
simulated generators, each of which leaves its own mix of artefacts (:mod:`qsave.artefacts`) with
its own strengths per dimension, has the clips rated by a simulated panel (:mod:`qsave.raters`),
splits the prompts into train/val/test, and writes::

    DIR/videos/<video_id>.mp4   H.264 (libx264, yuv420p), width×height, num_frames at fps
    DIR/manifest.parquet        the manifest (qsave.schema columns) plus truth columns

``video_path`` is relative to DIR (``videos/<video_id>.mp4``), so the folder can move: resolve it with
``qsave.manifest.resolve_video_path(row.video_path, manifest_path.parent)``. Extra columns: ``prompt_id``
(the split group), ``caption`` (what is actually rendered, in the prompt vocabulary; no quality
words), ``true_vq``/``true_mq``/``true_ta``/``true_overall`` (the truth the raters perceive) and
``artefacts`` (JSON: ``{"vq": {"blur": 0.41}, "mq": {}, "ta": {}}`` with severities in 0–1).

Everything is drawn from seeded streams (one per purpose and clip), so the same config gives
byte-identical manifest rows and identical decoded frames, whatever the number of workers. Videos are
written atomically one by one and the manifest last, after removing a stale one: a crash leaves no
manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from qsave.artefacts import artefact_codes, degrade_frames, deviate_scene, motion_params, snap_severity
from qsave.artefacts import true_scores as artefact_true_scores
from qsave.raters import RaterPanelConfig, rate
from qsave.scenes import DrawnScene, caption, describe, render, sample_scene
from qsave.schema import (
    DIMENSIONS,
    REASON_DIMENSIONS,
    SPLITS,
    count_column,
    mos_column,
    reasons_column,
    std_column,
)
from qsave.storage import atomic_path

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_NAME: Final = "manifest.parquet"
VIDEO_DIR: Final = "videos"
_SEVERITY_CONCENTRATION: Final = 4.0
_STREAM_SCENES, _STREAM_CLIP, _STREAM_RENDER, _STREAM_PANEL, _STREAM_SPLIT = range(5)


@dataclass(frozen=True)
class DimensionProfile:
    rate: float
    """Probability that each artefact family of the dimension appears in a clip."""
    severity: float
    """Mean severity (0–1) of an artefact that appears."""


@dataclass(frozen=True)
class GeneratorProfile:
    name: str
    description: str
    vq: DimensionProfile
    mq: DimensionProfile
    ta: DimensionProfile

    def dimension(self, dim: str) -> DimensionProfile:
        profile: DimensionProfile = getattr(self, dim)
        return profile


GENERATORS: Final[dict[str, GeneratorProfile]] = {
    g.name: g
    for g in (
        GeneratorProfile(
            "gen-alpha",
            "strong all round",
            DimensionProfile(0.06, 0.30),
            DimensionProfile(0.06, 0.30),
            DimensionProfile(0.05, 0.40),
        ),
        GeneratorProfile(
            "gen-beta",
            "crisp frames, unstable motion",
            DimensionProfile(0.06, 0.30),
            DimensionProfile(0.35, 0.55),
            DimensionProfile(0.10, 0.50),
        ),
        GeneratorProfile(
            "gen-gamma",
            "smooth motion, soft low-fidelity frames",
            DimensionProfile(0.35, 0.55),
            DimensionProfile(0.06, 0.30),
            DimensionProfile(0.12, 0.50),
        ),
        GeneratorProfile(
            "gen-delta",
            "good-looking but often ignores the prompt",
            DimensionProfile(0.10, 0.40),
            DimensionProfile(0.12, 0.40),
            DimensionProfile(0.35, 0.65),
        ),
        GeneratorProfile(
            "gen-epsilon",
            "weak everywhere",
            DimensionProfile(0.25, 0.50),
            DimensionProfile(0.25, 0.50),
            DimensionProfile(0.25, 0.55),
        ),
    )
}
"""The simulated generators, each with its own artefact profile per dimension."""


@dataclass(frozen=True)
class SynthConfig:
    n: int = 1200
    """Number of clips."""
    seed: int = 0
    width: int = 128
    height: int = 128
    num_frames: int = 24
    fps: int = 8
    workers: int = 2
    """Processes that render and encode; 1 renders in this process."""
    generators: tuple[str, ...] = tuple(GENERATORS)
    renders_per_prompt: int = 3
    """How many generators render each prompt (rotating through ``generators``)."""
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    """train/val/test shares of the prompts (splits are prompt-disjoint)."""
    max_alignment_artefacts: int = 2
    crf: int = 17
    """libx264 constant rate factor: low, so the artefacts are the ones rendered, not the encoder's."""
    panel: RaterPanelConfig = field(default_factory=RaterPanelConfig)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n}: ask for at least one clip")
        if self.width % 16 or self.height % 16 or self.width < 64 or self.height < 64:
            raise ValueError(
                f"frame size {self.width}x{self.height}: width and height must be multiples of 16, "
                "at least 64"
            )
        if self.num_frames < 2 or self.fps < 1:
            raise ValueError(f"num_frames={self.num_frames}, fps={self.fps}: need ≥ 2 frames and fps ≥ 1")
        unknown = [g for g in self.generators if g not in GENERATORS]
        if unknown or not self.generators:
            raise ValueError(
                f"unknown generator(s) {unknown or '(none given)'}; known: {', '.join(GENERATORS)}"
            )
        if not 1 <= self.renders_per_prompt <= len(self.generators):
            raise ValueError(
                f"renders_per_prompt={self.renders_per_prompt} must be between 1 and the "
                f"{len(self.generators)} generators"
            )
        if len(self.split_fractions) != len(SPLITS) or any(f < 0 for f in self.split_fractions):
            raise ValueError(f"split_fractions={self.split_fractions}: give three non-negative shares")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions={self.split_fractions} must sum to 1")


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip, decided in the parent process."""

    index: int
    video_id: str
    prompt_id: str
    prompt: str
    generator: str
    drawn: DrawnScene
    severities: dict[str, float]


def _rng(cfg: SynthConfig, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stream, *keys])


def sample_severities(
    profile: GeneratorProfile, rng: np.random.Generator, max_alignment_artefacts: int = 2
) -> dict[str, float]:
    """The artefacts one clip of this generator shows, with severities rounded to 3 decimals."""
    severities: dict[str, float] = {}
    for dim in REASON_DIMENSIONS:
        spec = profile.dimension(dim)
        present = [c for c in artefact_codes(dim) if rng.random() < spec.rate]
        if dim == "ta" and len(present) > max_alignment_artefacts:
            present = sorted(rng.choice(present, size=max_alignment_artefacts, replace=False).tolist())
        for code in present:
            a = spec.severity * _SEVERITY_CONCENTRATION
            b = (1.0 - spec.severity) * _SEVERITY_CONCENTRATION
            severity = float(np.clip(rng.beta(a, b), 0.05, 1.0))
            severities[code] = round(snap_severity(code, severity), 3)
    return severities


def _distinct_prompts(cfg: SynthConfig, n_prompts: int) -> list[tuple[str, DrawnScene]]:
    rng = _rng(cfg, _STREAM_SCENES)
    seen: set[str] = set()
    out: list[tuple[str, DrawnScene]] = []
    while len(out) < n_prompts:
        spec = sample_scene(rng)
        prompt = describe(spec)
        if prompt not in seen:
            seen.add(prompt)
            out.append((prompt, DrawnScene.from_spec(spec)))
    return out


def plan_corpus(cfg: SynthConfig) -> tuple[list[ClipPlan], np.ndarray]:
    """The clips to render and their true scores (N, 4) in :data:`qsave.schema.DIMENSIONS` order."""
    n_prompts = -(-cfg.n // cfg.renders_per_prompt)
    plans = []
    truth = []
    for p, (prompt, faithful) in enumerate(_distinct_prompts(cfg, n_prompts)):
        for j in range(cfg.renders_per_prompt):
            index = p * cfg.renders_per_prompt + j
            if index >= cfg.n:
                break
            generator = cfg.generators[(p + j) % len(cfg.generators)]
            rng = _rng(cfg, _STREAM_CLIP, index)
            severities = sample_severities(GENERATORS[generator], rng, cfg.max_alignment_artefacts)
            drawn = deviate_scene(faithful, severities, rng)
            scores = artefact_true_scores(severities, rng)
            truth.append([scores[d] for d in DIMENSIONS])
            prompt_id = f"s{cfg.seed}-p{p:05d}"
            plans.append(
                ClipPlan(
                    index, f"syn-{prompt_id}-{generator}", prompt_id, prompt, generator, drawn, severities
                )
            )
    return plans, np.asarray(truth)


def assign_splits(
    prompt_ids: list[str], fractions: tuple[float, ...], rng: np.random.Generator
) -> dict[str, str]:
    """Prompt id → split. Shares are met by largest remainder; with ≥ 3 prompts no split with a positive
    share is left empty."""
    unique = sorted(set(prompt_ids))
    order = rng.permutation(len(unique))
    exact = np.asarray(fractions) * len(unique)
    sizes = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - sizes), kind="stable")[: len(unique) - sizes.sum()]:
        sizes[k] += 1
    if len(unique) >= len(SPLITS):
        for k in range(len(SPLITS)):
            if fractions[k] > 0 and sizes[k] == 0:
                sizes[k] += 1
                sizes[int(np.argmax(sizes))] -= 1
    bounds = np.cumsum(sizes)
    return {
        unique[i]: SPLITS[int(np.searchsorted(bounds, rank, side="right"))] for rank, i in enumerate(order)
    }


# --- rendering and encoding (runs in worker processes) ---------------------------------------------


def render_clip(plan: ClipPlan, cfg: SynthConfig) -> np.ndarray:
    """The clip's frames as uint8 ``(T, H, W, 3)``."""
    rng = _rng(cfg, _STREAM_RENDER, plan.index)
    motion = motion_params(plan.severities, cfg.num_frames, rng)
    frames = render(plan.drawn, motion, cfg.width, cfg.height, rng)
    frames = degrade_frames(frames, plan.severities, rng)
    return np.round(frames * 255.0).astype(np.uint8)


def encode_mp4(frames: np.ndarray, dest: Path, fps: int, crf: int) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` as an H.264 (yuv420p) mp4, atomically."""
    import av

    with atomic_path(dest) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"crf": str(crf), "preset": "fast", "threads": "1"}
        )
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return dest


def _write_clip(job: tuple[ClipPlan, SynthConfig, str]) -> str:
    plan, cfg, out_dir = job
    encode_mp4(render_clip(plan, cfg), _video_path(Path(out_dir), plan.video_id), cfg.fps, cfg.crf)
    return plan.video_id


def _video_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / VIDEO_DIR / f"{video_id}.mp4"


def _write_all(plans: list[ClipPlan], cfg: SynthConfig, out_dir: Path, progress: bool) -> None:
    """Render and encode every clip, in ``cfg.workers`` spawned processes (or in this one)."""
    from qsave.parallel import map_in_processes

    jobs = [(plan, cfg, str(out_dir)) for plan in plans]
    list(map_in_processes(_write_clip, jobs, cfg.workers, "synth clips", progress))


# --- assembly --------------------------------------------------------------------------------------


def _artefacts_json(severities: dict[str, float]) -> str:
    by_dim = {d: {c: s for c, s in severities.items() if c in artefact_codes(d)} for d in REASON_DIMENSIONS}
    return json.dumps(by_dim, sort_keys=True)


def corpus_rows(cfg: SynthConfig) -> tuple[list[ClipPlan], pd.DataFrame]:
    """The clips to render and the manifest rows the corpus will have (rated and split), without
    rendering anything: what :func:`generate_corpus` writes, for analyses of the labels alone."""
    import pandas as pd

    plans, truth = plan_corpus(cfg)
    panel = rate(truth, [p.severities for p in plans], cfg.panel, _rng(cfg, _STREAM_PANEL))
    splits = assign_splits([p.prompt_id for p in plans], cfg.split_fractions, _rng(cfg, _STREAM_SPLIT))
    rows = []
    for i, plan in enumerate(plans):
        row: dict[str, object] = {
            "video_id": plan.video_id,
            "video_path": f"{VIDEO_DIR}/{plan.video_id}.mp4",
            "prompt": plan.prompt,
            "generator": plan.generator,
        }
        for k, d in enumerate(DIMENSIONS):
            row[mos_column(d)] = round(float(panel.mos[i, k]), 4)
            row[std_column(d)] = round(float(panel.std[i, k]), 4)
            row[count_column(d)] = int(panel.count[i, k])
        for d in REASON_DIMENSIONS:
            row[reasons_column(d)] = panel.reasons[i][d]
        row["explanation"] = panel.explanations[i]
        row["split"] = splits[plan.prompt_id]
        row["prompt_id"] = plan.prompt_id
        row["caption"] = caption(plan.drawn)
        for k, d in enumerate(DIMENSIONS):
            row[f"true_{d}"] = round(float(truth[i, k]), 4)
        row["artefacts"] = _artefacts_json(plan.severities)
        rows.append(row)
    return plans, pd.DataFrame(rows)


def generate_corpus(cfg: SynthConfig, out_dir: str | os.PathLike[str], progress: bool = False) -> Path:
    """Render, rate, split and write the corpus under ``out_dir``; returns the manifest's path."""
    from qsave.manifest import write_manifest

    out = Path(out_dir)
    manifest_path = out / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    plans, rows = corpus_rows(cfg)
    _write_all(plans, cfg, out, progress)
    return write_manifest(rows, manifest_path)
