"""SlowFast sampler: index, pair, size and budget math, real decoding, and the processor's token count."""

from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

import qsave  # noqa: F401  (installs the torchvision shim before transformers)
from qsave.slowfast import (
    LOCAL_SAMPLER,
    PATCH_FACTOR,
    SamplerConfig,
    plan_sampling,
    plan_uniform,
    sample_clip,
    sample_indices,
    sample_uniform,
    segment_tokens,
    snap_size,
    spread_pairs,
)
from qsave.video import DecodeLimits, VideoError

AIGVE = SHARED_DATA / "aigve-bench-toy" / "videos" / "cogvideox_0.mp4"


def write_clip(
    path: Path, width: int, height: int, num_frames: int, fps: int = 24, pts_ms: list[int] | None = None
) -> Path:
    """An H.264 clip of moving gradients (yuv444p, so odd sizes work); ``pts_ms`` makes it variable-rate."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(num_frames):
            rgb = np.stack(
                [(xs * 3 + i * 7) % 256, (ys * 2 + i * 5) % 256, np.full_like(xs, i * 9 % 256)], -1
            )
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# --------------------------------------------------------------------------- pure math


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [
        ((1360, 768), 448, (448, 256)),
        ((768, 1360), 448, (256, 448)),
        ((512, 512), 448, (448, 448)),
        ((512, 512), 160, (160, 160)),
        ((1360, 768), 160, (160, 96)),
        ((1920, 1080), 224, (224, 128)),
        ((131, 75), 448, (128, 64)),  # never upscales: long side capped at the source's
        ((20, 10), 448, (32, 32)),  # at least one token each way
        ((2000, 40), 448, (448, 32)),  # extreme aspect
    ],
)
def test_snap_size(size: tuple[int, int], long_side: int, expected: tuple[int, int]) -> None:
    w, h = snap_size(*size, long_side)
    assert (w, h) == expected
    assert w % PATCH_FACTOR == 0 and h % PATCH_FACTOR == 0


def test_segment_tokens_rounds_frames_up_to_pairs() -> None:
    assert segment_tokens(40, 448, 256) == 20 * 14 * 8
    assert segment_tokens(3, 64, 64) == 2 * 2 * 2
    with pytest.raises(ValueError, match="multiple of 32"):
        segment_tokens(2, 100, 64)


def test_indices_at_eight_fps_from_16_fps() -> None:
    indices, rate = sample_indices(81, 16.0, SamplerConfig())
    assert rate == 8.0
    assert indices.tolist() == list(range(0, 80, 2))  # 41 samples fit; the odd one out is dropped


def test_indices_window_caps_long_clips_at_max_duration() -> None:
    indices, _ = sample_indices(900, 30.0, SamplerConfig())  # 30 s clip, 10 s window
    assert len(indices) == 80
    assert indices[-1] < 300
    assert np.all(np.diff(indices) > 0)
    np.testing.assert_allclose(indices / 30.0, np.arange(80) / 8.0, atol=0.5 / 30.0)


def test_indices_slow_source_is_not_duplicated() -> None:
    indices, rate = sample_indices(20, 4.0, SamplerConfig())
    assert rate == 4.0
    assert indices.tolist() == list(range(20))


@pytest.mark.parametrize(
    ("num_frames", "expected"), [(1, [0, 0]), (2, [0, 1]), (3, [0, 1]), (5, [0, 1, 2, 3])]
)
def test_indices_short_clips_are_whole_pairs(num_frames: int, expected: list[int]) -> None:
    indices, _ = sample_indices(num_frames, 8.0, SamplerConfig())
    assert indices.tolist() == expected


def test_spread_pairs_is_even_and_centred() -> None:
    assert spread_pairs(20, 2).tolist() == [5, 15]
    assert spread_pairs(8, 2).tolist() == [2, 6]
    assert spread_pairs(1, 2).tolist() == [0]
    assert spread_pairs(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_plan_pairs_are_adjacent_samples_and_slow_is_within_fast() -> None:
    plan = plan_sampling(81, 16.0, 1360, 768, SamplerConfig())
    fast, slow = plan.fast.source_indices, plan.slow.source_indices
    assert len(fast) == 40 and len(slow) == 4
    assert np.all(fast[1::2] - fast[0::2] == 2)  # each pair: two consecutive 8 fps samples
    assert np.all(slow[1::2] - slow[0::2] == 2)
    assert set(slow.tolist()) <= set(fast.tolist())
    assert slow.tolist() == [20, 22, 60, 62]
    assert (plan.slow.width, plan.slow.height, plan.fast.width, plan.fast.height) == (448, 256, 160, 96)
    assert plan.slow.tokens == 2 * 14 * 8 and plan.fast.tokens == 20 * 5 * 3
    uniform = plan_uniform(81, 16.0, 1360, 768, SamplerConfig())
    assert uniform.tokens == 20 * 14 * 8
    assert plan.tokens <= uniform.tokens / 3


def test_small_sources_keep_the_fast_pathway_proportionally_smaller() -> None:
    plan = plan_sampling(96, 24.0, 128, 128, SamplerConfig())
    assert (plan.slow.width, plan.slow.height) == (128, 128)
    assert (plan.fast.width, plan.fast.height) == (32, 32)  # 128 × 160/448, snapped
    local = plan_sampling(96, 24.0, 128, 128, LOCAL_SAMPLER)
    assert (local.slow.width, local.fast.width) == (128, 64)


def test_budget_shrinks_fast_resolution_first() -> None:
    full = plan_sampling(161, 16.0, 1360, 768, SamplerConfig())
    cfg = SamplerConfig(max_visual_tokens=full.tokens - 1)
    plan = plan_sampling(161, 16.0, 1360, 768, cfg)
    assert plan.tokens <= cfg.max_visual_tokens
    assert (plan.slow.width, plan.slow.height) == (full.slow.width, full.slow.height)
    assert plan.fast.width < full.fast.width
    assert len(plan.fast.source_indices) == len(full.fast.source_indices)


def test_budget_then_drops_fast_pairs_keeping_them_adjacent() -> None:
    cfg = SamplerConfig(max_visual_tokens=400)
    plan = plan_sampling(161, 16.0, 1360, 768, cfg)
    assert plan.tokens <= 400
    assert max(plan.fast.width, plan.fast.height) == cfg.fast_min_long_side
    fast = plan.fast.source_indices
    assert 2 <= len(fast) < 80 and len(fast) % 2 == 0
    assert np.all(fast[1::2] - fast[0::2] == 2)
    assert (plan.slow.width, plan.slow.height) == (448, 256)


@pytest.mark.parametrize("budget", [3, 5, 17, 60, 150, 700, 5000])
@pytest.mark.parametrize("source", [(1360, 768, 81, 16.0), (768, 1360, 300, 30.0), (131, 75, 7, 24.0)])
def test_budget_is_always_respected(budget: int, source: tuple[int, int, int, float]) -> None:
    width, height, frames, fps = source
    cfg = SamplerConfig(max_visual_tokens=budget)
    plan = plan_sampling(frames, fps, width, height, cfg)
    assert plan.tokens <= budget
    assert len(plan.slow.source_indices) % 2 == 0 and len(plan.fast.source_indices) % 2 == 0
    assert len(plan.fast.source_indices) >= 2


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(ValueError, match="slow_frames"):
        SamplerConfig(slow_frames=3)
    with pytest.raises(ValueError, match="fast_long_side"):
        SamplerConfig(fast_long_side=512)
    with pytest.raises(ValueError, match="max_visual_tokens"):
        SamplerConfig(max_visual_tokens=2)
    assert SamplerConfig().fingerprint() != SamplerConfig(fps=4).fingerprint()
    assert SamplerConfig().fingerprint() == SamplerConfig().fingerprint()


# --------------------------------------------------------------------------- decoding


def check_clip_consistent(clip_path: Path, cfg: SamplerConfig) -> None:
    clip = sample_clip(clip_path, cfg)
    info = clip.info
    plan = plan_sampling(info.num_frames, info.fps, info.width, info.height, cfg)
    for pathway, planned in ((clip.slow, plan.slow), (clip.fast, plan.fast)):
        assert pathway.frames.dtype == np.uint8
        assert pathway.frames.shape == (len(planned.source_indices), planned.height, planned.width, 3)
        assert pathway.source_indices.tolist() == planned.source_indices.tolist()
        np.testing.assert_allclose(pathway.timestamps, pathway.source_indices / info.fps)
        assert pathway.tokens == planned.tokens
        assert pathway.source_fps == info.fps
    assert clip.tokens <= cfg.max_visual_tokens


def test_sample_clip_real_aigve() -> None:
    cfg = SamplerConfig()
    check_clip_consistent(AIGVE, cfg)
    clip = sample_clip(AIGVE, cfg)
    assert clip.slow.frames.shape == (4, 256, 448, 3)
    assert clip.fast.frames.shape == (40, 96, 160, 3)
    np.testing.assert_allclose(clip.slow.timestamps, [1.25, 1.375, 3.75, 3.875])
    assert clip.fast.fps == pytest.approx(40 / (81 / 16))
    # fast frames are the slow frames' content at lower resolution
    slow_mean = clip.slow.frames[0].mean(axis=(0, 1))
    fast_mean = clip.fast.frames[list(clip.fast.source_indices).index(20)].mean(axis=(0, 1))
    np.testing.assert_allclose(slow_mean, fast_mean, atol=4)


@pytest.mark.parametrize(
    ("width", "height", "frames", "fps"),
    [(96, 160, 12, 24), (131, 75, 7, 25), (64, 64, 1, 8), (200, 120, 3, 5)],
    ids=["portrait", "odd", "one-frame", "short-slow-fps"],
)
def test_sample_clip_synthetic_shapes(tmp_path: Path, width: int, height: int, frames: int, fps: int) -> None:
    clip_path = write_clip(tmp_path / "clip.mp4", width, height, frames, fps)
    limits = DecodeLimits(min_frames=1)
    clip = sample_clip(clip_path, LOCAL_SAMPLER, limits)
    assert clip.slow.num_frames % 2 == 0 and clip.fast.num_frames % 2 == 0
    assert clip.fast.width % 32 == 0 and clip.fast.height % 32 == 0
    assert (clip.slow.width >= clip.slow.height) == (width >= height)
    assert clip.tokens <= LOCAL_SAMPLER.max_visual_tokens


def test_sample_clip_variable_frame_rate(tmp_path: Path) -> None:
    gaps = [40, 40, 80, 20, 40, 120, 40, 40, 60, 40, 40, 40, 100, 40, 40, 40]
    pts = np.concatenate([[0], np.cumsum(gaps)]).astype(int).tolist()
    clip_path = write_clip(tmp_path / "vfr.mp4", 128, 96, len(pts), fps=25, pts_ms=pts)
    check_clip_consistent(clip_path, LOCAL_SAMPLER)
    clip = sample_clip(clip_path, LOCAL_SAMPLER)
    assert np.all(np.diff(clip.fast.timestamps) > 0)


def test_sample_uniform_matches_its_plan(tmp_path: Path) -> None:
    clip_path = write_clip(tmp_path / "clip.mp4", 160, 96, 24, 16)
    uniform = sample_uniform(clip_path, LOCAL_SAMPLER)
    assert uniform.frames.shape == (12, 64, 128, 3)
    assert uniform.tokens == 6 * 2 * 4
    assert uniform.source_indices.tolist() == list(range(0, 24, 2))


# --------------------------------------------------------------------------- hostile files


def _patched_stts(source: Path, dest: Path, sample_count: int) -> Path:
    """A copy of an MP4 whose sample table declares ``sample_count`` frames."""
    data = bytearray(source.read_bytes())
    at = data.index(b"stts") + 4 + 4 + 4  # box type, version/flags, entry count
    data[at : at + 4] = sample_count.to_bytes(4, "big")
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("kind", ["truncated", "wrong-container", "huge-frame-count"])
def test_hostile_files_fail_clearly_within_timeout(tmp_path: Path, kind: str) -> None:
    good = write_clip(tmp_path / "good.mp4", 128, 96, 48, 24)
    bad = tmp_path / f"{kind}.mp4"
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "wrong-container":
        bad.write_bytes(b"This is a manifest, not a video.\n" * 200)
    else:
        _patched_stts(good, bad, 2_000_000_000)
    limits = DecodeLimits(timeout_s=10.0)
    started = time.monotonic()
    with pytest.raises(VideoError) as caught:
        sample_clip(bad, LOCAL_SAMPLER, limits)
    assert time.monotonic() - started < limits.timeout_s + 5
    assert caught.value.path.endswith(bad.name)
    assert caught.value.reason in {"undecodable", "too_many_frames", "duration_too_long", "too_few_frames"}
    assert caught.value.detail


# --------------------------------------------------------------------------- the model's processor


def processor_tokens(frames: np.ndarray) -> int:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    processor = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2)
    out = processor(
        videos=[frames],
        do_resize=False,
        do_sample_frames=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    grid = out["video_grid_thw"][0].tolist()
    assert out["pixel_values_videos"].shape[0] == math.prod(grid)
    return math.prod(grid) // processor.merge_size**2


def test_processor_token_count_matches_sampler(tmp_path: Path) -> None:
    clips = [
        sample_clip(AIGVE, SamplerConfig()),
        sample_clip(AIGVE, SamplerConfig(max_visual_tokens=300)),
        sample_clip(write_clip(tmp_path / "p.mp4", 90, 170, 9, 12), LOCAL_SAMPLER),
    ]
    for clip in clips:
        for pathway in (clip.slow, clip.fast):
            assert processor_tokens(pathway.frames) == pathway.tokens
    uniform = sample_uniform(tmp_path / "p.mp4", LOCAL_SAMPLER)
    assert processor_tokens(uniform.frames) == uniform.tokens
