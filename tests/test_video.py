"""qsave.video on real files: generated mp4s, the shared AIGV clips, and hostile files."""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from qsave.video import WORKER_CALLS, DecodeLimits, VideoError, probe, read_frames, run_isolated

AIGVE_CLIP = SHARED_DATA / "aigve-bench-toy" / "videos" / "cogvideox_0.mp4"
LAVIE_CLIP = (
    SHARED_DATA
    / "vbench-lavie-style"
    / "videos"
    / "A beautiful coastal beach in spring, waves lapping on sand, "
    "Claude Monet style-0.mp4"
)


def write_mp4(
    path: Path, n: int, width: int = 64, height: int = 48, fps: int = 10, noise: bool = False, **options: str
) -> Path:
    """An H.264 mp4 whose frame i is a flat grey of value 8·i (or random noise, for larger files)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            if noise:
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                image = np.full((height, width, 3), (8 * i) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def patched(source: Path, dest: Path, box: bytes, offset: int, values: tuple[int, ...]) -> Path:
    """Copy an mp4, overwriting big-endian uint32 fields ``offset`` bytes after a box's type tag."""
    data = bytearray(source.read_bytes())
    at = data.find(box)
    struct.pack_into(f">{len(values)}I", data, at + offset, *values)
    dest.write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    ok = write_mp4(root / "ok.mp4", 30)
    faststart = write_mp4(root / "faststart.mp4", 60, noise=True, movflags="faststart")
    data = faststart.read_bytes()
    longer = write_mp4(root / "longer.mp4", 120, noise=True, movflags="faststart").read_bytes()
    files = {
        "ok": ok,
        "faststart": faststart,
        "one_frame": write_mp4(root / "one.mp4", 1),
        "wide": write_mp4(root / "wide.mp4", 3, width=3856, height=16),
        "zero": root / "zero.mp4",
        "text": root / "text.mp4",
        "truncated": root / "truncated.mp4",
        "truncated_faststart": root / "truncated_faststart.mp4",
        "tail_cut": root / "tail_cut.mp4",
        "tail_cut_longer": root / "tail_cut_longer.mp4",
        # stts sample count and stsz sample count both say 50 million frames (a hostile header)
        "many_frames": patched(
            patched(ok, root / "many.tmp", b"stts", 12, (50_000_000,)),
            root / "many_frames.mp4",
            b"stsz",
            8,
            (80, 50_000_000),
        ),
        # stts sample delta of 30 million ticks per frame: a declared duration of days
        "long": patched(ok, root / "long.mp4", b"stts", 16, (30_000_000,)),
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 50)
    files["truncated"].write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])  # moov atom lost
    files["truncated_faststart"].write_bytes(data[: int(len(data) * 0.7)])  # header says 60, ~40 decode
    files["tail_cut"].write_bytes(data[: len(data) - 600])  # decord opens it, the last 3 frames fail
    files["tail_cut_longer"].write_bytes(longer[: len(longer) - 3000])  # decord refuses it, PyAV decodes
    return files


def test_probe_measures_a_generated_video(videos: dict[str, Path]) -> None:
    info = probe(videos["ok"])
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 30, 10.0)
    assert info.duration_s == pytest.approx(3.0)
    assert info.backend == "decord"
    assert info.size_bytes == videos["ok"].stat().st_size
    assert Path(info.path).is_absolute()


def test_probe_real_aigv_clips() -> None:
    aigve = probe(AIGVE_CLIP)
    assert (aigve.width, aigve.height, aigve.num_frames, aigve.fps) == (1360, 768, 81, 16.0)
    lavie = probe(LAVIE_CLIP)  # spaces and commas in the name
    assert (lavie.width, lavie.height, lavie.num_frames, lavie.fps) == (512, 512, 16, 8.0)


def test_read_frames_picks_resizes_orders_and_clamps(videos: dict[str, Path]) -> None:
    frames = read_frames(videos["ok"], [5, 0, 5, 29, 400, -3], size=(32, 24))
    assert frames.shape == (6, 24, 32, 3) and frames.dtype == np.uint8
    grey = frames.reshape(6, -1).mean(axis=1)
    assert grey == pytest.approx([40, 0, 40, 232, 232, 0], abs=4)  # 400 → last frame, -3 → first
    native = read_frames(videos["ok"], [1, 2])
    assert native.shape == (2, 48, 64, 3)
    assert read_frames(videos["ok"], [], size=(8, 8)).shape == (0, 8, 8, 3)


def test_read_frames_real_clips() -> None:
    clip = read_frames(AIGVE_CLIP, list(range(0, 81, 10)), size=(224, 128))
    assert clip.shape == (9, 128, 224, 3) and clip.std() > 1
    lavie = read_frames(LAVIE_CLIP, [0, 15], size=(64, 64))
    assert lavie.shape == (2, 64, 64, 3)


@pytest.mark.parametrize(
    ("name", "backend", "declared"), [("tail_cut", "decord", 60), ("tail_cut_longer", "pyav", 120)]
)
def test_small_tail_loss_is_clamped(videos: dict[str, Path], name: str, backend: str, declared: int) -> None:
    # The container declares more frames than decode: count what decodes. Where a bisection over a cut
    # GOP lands varies by a frame between runs, so allow up to 10 % missing here (the default is 5 %).
    limits = DecodeLimits(max_missing_fraction=0.1)
    info = probe(videos[name], limits)
    assert info.backend == backend and declared - 6 <= info.num_frames < declared
    last = read_frames(videos[name], [info.num_frames - 1], size=(16, 16), limits=limits)
    frames = read_frames(videos[name], [0, declared - 1, 10_000], size=(16, 16), limits=limits)
    assert frames.shape == (3, 16, 16, 3)
    assert np.array_equal(frames[1], last[0]) and np.array_equal(frames[2], last[0])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero", "video_empty"),
        ("text", "undecodable"),
        ("truncated", "undecodable"),
        ("truncated_faststart", "undecodable"),
        ("one_frame", "too_few_frames"),
        ("wide", "resolution_too_large"),
        ("many_frames", "too_many_frames"),
        ("long", "duration_too_long"),
    ],
)
def test_hostile_files_fail_with_their_reason(videos: dict[str, Path], name: str, reason: str) -> None:
    start = time.perf_counter()
    with pytest.raises(VideoError) as caught:
        probe(videos[name], DecodeLimits(timeout_s=10))
    assert caught.value.reason == reason
    assert str(videos[name].name) in str(caught.value)
    assert time.perf_counter() - start < 10
    with pytest.raises(VideoError) as again:
        read_frames(videos[name], [0], size=(8, 8), limits=DecodeLimits(timeout_s=10))
    assert again.value.reason == reason


def test_missing_file_and_configurable_limits(videos: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VideoError) as caught:
        probe(tmp_path / "nope.mp4")
    assert caught.value.reason == "video_missing"
    probe(videos["ok"])  # cached now: stricter limits must still be applied
    for limits, reason in [
        (DecodeLimits(max_file_bytes=100), "file_too_large"),
        (DecodeLimits(max_width=32), "resolution_too_large"),
        (DecodeLimits(max_pixels=1000), "resolution_too_large"),
        (DecodeLimits(max_frames=10), "too_many_frames"),
        (DecodeLimits(max_duration_s=1.0), "duration_too_long"),
        (DecodeLimits(max_fps=5.0), "bad_fps"),
        (DecodeLimits(min_frames=31), "too_few_frames"),
    ]:
        with pytest.raises(VideoError) as limited:
            probe(videos["ok"], limits)
        assert limited.value.reason == reason, limits


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # a decoder that dies (SIGSEGV would print a pytest trace)


def _arrays(n: int) -> tuple[str, np.ndarray, np.ndarray]:
    return "meta", np.arange(n, dtype=np.uint8).reshape(n, 1), np.zeros((0, 3), dtype=np.float32)


def test_run_isolated_times_out_survives_crashes_and_returns_arrays() -> None:
    start = time.perf_counter()
    with pytest.raises(VideoError) as caught:
        run_isolated(_sleep, 30.0, timeout_s=0.5, path="hostile.mp4")
    assert caught.value.reason == "decode_timeout"
    assert time.perf_counter() - start < 3
    with pytest.raises(VideoError) as crashed:
        run_isolated(_crash, timeout_s=5, path="crash.mp4")
    assert crashed.value.reason == "undecodable" and "SIGKILL" in crashed.value.detail
    meta, big, empty = run_isolated(_arrays, 200, timeout_s=5, path="x")
    assert meta == "meta" and big[:, 0].tolist() == [i % 256 for i in range(200)] and empty.shape == (0, 3)
    assert run_isolated(int, "7", timeout_s=5, path="x") == 7


def _refuse(path: str) -> None:
    raise VideoError(path, "undecodable", "not a video")


def _in_thread(fn: Callable[[], int]) -> int:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def test_run_isolated_reuses_a_decoder_process_until_an_error_or_its_call_limit() -> None:
    def pid() -> int:
        return int(run_isolated(os.getpid, timeout_s=5, path="x"))

    first = pid()
    assert first != os.getpid()
    run_isolated(_arrays, 0, timeout_s=5, path="x")  # empty arrays keep the protocol in step
    assert pid() == first
    with pytest.raises(VideoError, match="not a video"):
        run_isolated(_refuse, "bad.mp4", timeout_s=5, path="bad.mp4")
    after_error = pid()
    assert after_error != first  # a file that failed never shares a decoder with the next one
    served = {pid() for _ in range(WORKER_CALLS + 1)}
    assert len(served) == 2 and after_error in served  # replaced once its call limit is reached
    assert _in_thread(pid) not in served | {os.getpid()}  # each thread has its own


def test_a_forked_child_gets_its_own_decoder_process_and_leaves_the_parents_alone() -> None:
    before = int(run_isolated(os.getpid, timeout_s=5, path="x"))
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        try:
            os.write(write_fd, str(run_isolated(os.getpid, timeout_s=5, path="x")).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(child, 0)
    in_child = int(os.read(read_fd, 64).decode())
    os.close(read_fd)
    assert in_child not in {before, child, os.getpid()}
    assert int(run_isolated(os.getpid, timeout_s=5, path="x")) == before
