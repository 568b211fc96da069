"""The one place that opens video files: a safe probe and a fast frame reader.

Every decode of a (possibly hostile) file runs in a forked decoder process with a hard timeout
(:func:`run_isolated`): a file that hangs or crashes the decoder costs at most ``timeout_s`` and ends in a
:class:`VideoError`, never a hung or dead caller. The process returns small results pickled through a pipe
and frame arrays as raw bytes; it serves one thread's calls one after another and is replaced after any
error, so the overhead of a call is a message and one copy.

Order of checks in :func:`probe` (cheap first): the file exists and is non-empty and not too large; the
container header (PyAV, no decoding) has a video stream, a resolution, fps, declared frame count and
duration within :class:`DecodeLimits`; decord opens the file (PyAV decodes it when decord cannot) and a
frame near the start and the last frame actually decode. Containers can over-report their frame count
(and decord 0.6 can deadlock in ``get_batch`` on such files), so ``VideoInfo.num_frames`` is the number of
frames that really decode, and :func:`read_frames` clamps indices to it.

Failure reasons (``VideoError.reason``) are stable codes: ``video_missing``, ``video_empty``,
``file_too_large``, ``undecodable``, ``too_few_frames``, ``resolution_too_large``, ``too_many_frames``,
``duration_too_long``, ``bad_fps``, ``decode_timeout``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np

REASONS: Final = (
    "video_missing",
    "video_empty",
    "file_too_large",
    "undecodable",
    "too_few_frames",
    "resolution_too_large",
    "too_many_frames",
    "duration_too_long",
    "bad_fps",
    "decode_timeout",
)
"""Every :attr:`VideoError.reason`, in the order the probe checks them (timeouts can happen anywhere)."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a video may be before we decode it. Defaults admit up to 4K-ish clips of 10 minutes."""

    max_file_bytes: int = 512 * 2**20
    max_width: int = 3840
    max_height: int = 3840
    max_pixels: int = 3840 * 2160
    max_frames: int = 36_000
    max_duration_s: float = 600.0
    min_frames: int = 2
    max_fps: float = 240.0
    max_missing_fraction: float = 0.05
    """Share of the declared frames (at least 2 frames) that may fail to decode: containers over-report by
    a frame or two; a larger shortfall means a truncated or corrupt file."""
    timeout_s: float = 30.0


@dataclass(frozen=True)
class VideoInfo:
    """A probed video; ``num_frames`` counts frames that really decode, ``duration_s = num_frames / fps``."""

    path: str
    size_bytes: int
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    backend: str


class VideoError(Exception):
    """A video that cannot be used: ``reason`` is a stable code (see :data:`REASONS`)."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        super().__init__(path, reason, detail)
        self.path = str(path)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"video {self.path}: {self.reason}: {self.detail}"


# --------------------------------------------------------------------------- isolation


def _send_result(conn: Connection, value: Any) -> None:
    """Send ``value`` (or each item of a tuple): arrays as raw bytes, everything else pickled."""
    import numpy as np

    items = value if isinstance(value, tuple) else (value,)
    header = [
        ("array", item.shape, item.dtype.str) if isinstance(item, np.ndarray) else ("obj", item)
        for item in items
    ]
    conn.send(("ok", isinstance(value, tuple), header))
    for item in items:
        if isinstance(item, np.ndarray):  # (a memoryview of an empty array cannot be cast)
            conn.send_bytes(np.ascontiguousarray(item).data.cast("B") if item.nbytes else b"")


def _receive_result(conn: Connection, is_tuple: bool, header: list[tuple[Any, ...]]) -> Any:
    import numpy as np

    items: list[Any] = []
    for entry in header:
        if entry[0] == "array":
            array = np.empty(entry[1], dtype=np.dtype(entry[2]))
            if array.nbytes:
                conn.recv_bytes_into(array.data.cast("B"))
            else:
                conn.recv_bytes()
            items.append(array)
        else:
            items.append(entry[1])
    return tuple(items) if is_tuple else items[0]


WORKER_CALLS: Final = 64
"""Calls a decoder process serves before it is replaced (bounds what a decoder's leaks can grow to)."""


def _serve(conn: Connection) -> None:
    """The decoder process's loop: run each ``(fn, args, path)`` it is sent, send back the result."""
    path = "?"
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)  # decoders print to stderr; the error travels back
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        while True:
            try:
                fn, args, path = conn.recv()
            except EOFError:  # the caller is gone or let it go
                break
            try:
                result = fn(*args)
            except VideoError as exc:
                conn.send(("error", exc.reason, exc.detail))
            except Exception as exc:
                conn.send(("error", "undecodable", f"{type(exc).__name__}: {str(exc).strip()[-300:]}"))
            else:
                _send_result(conn, result)
    except BaseException:  # never let the child return into the caller's code
        with contextlib.suppress(BaseException):
            conn.send(("error", "undecodable", f"decoder child failed for {path}"))
    finally:
        os._exit(0)


_fork_lock = threading.Lock()  # one pipe-and-fork at a time: no decoder inherits another's child end
_live: weakref.WeakSet[_Worker] = weakref.WeakSet()
_local = threading.local()


def _end_worker(pid: int, conn: Connection, owner: int) -> None:
    """Kill and reap a decoder process (idle or stuck) — only in the process that started it; elsewhere
    (a forked copy of the owner) just close the inherited end of its pipe."""
    if os.getpid() == owner:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    conn.close()


class _Worker:
    """A forked decoder process serving one thread's isolated calls, one after another."""

    def __init__(self) -> None:
        from multiprocessing import Pipe

        with _fork_lock:
            conn, child_end = Pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which always exits via os._exit
                conn.close()
                _serve(child_end)
            child_end.close()
            self.pid, self.conn, self.owner, self.calls = pid, conn, os.getpid(), 0
            _live.add(self)
        self._end = weakref.finalize(self, _end_worker, pid, conn, self.owner)  # also at exit

    def retire(self) -> None:
        with _fork_lock:
            _live.discard(self)
        self._end()

    def died(self) -> str:
        """Reap the process after its pipe closed; how it ended."""
        _, status = os.waitpid(self.pid, 0)
        self._end.detach()
        with _fork_lock:
            _live.discard(self)
        self.conn.close()
        if os.WIFSIGNALED(status):
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.WEXITSTATUS(status)}"


def _forget_inherited_workers() -> None:
    """In a forked child: the parent's decoder processes are not ours; close our copies of their pipes
    (and take a fresh lock: another thread of the parent may have held it at the fork)."""
    global _fork_lock
    _fork_lock = threading.Lock()
    for worker in list(_live):
        worker._end.detach()
        worker.conn.close()
    _live.clear()
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_forget_inherited_workers)


def _thread_worker() -> _Worker:
    worker: _Worker | None = getattr(_local, "worker", None)
    if worker is None or worker.owner != os.getpid():
        worker = _local.worker = _Worker()
    return worker


def run_isolated(fn: Callable[..., Any], *args: Any, timeout_s: float, path: str | os.PathLike[str]) -> Any:
    """Run ``fn(*args)`` in a decoder process; return its result or raise :class:`VideoError` for ``path``.

    Each thread has its own decoder process, forked on first use, that serves calls one after another
    (a fork per call cost 15–30 ms, more than decoding a small clip: ``benchmarks/bench_isolation.py``).
    A process that has not answered within ``timeout_s`` is killed (reason ``decode_timeout``); one that
    dies (e.g. a decoder segfault) gives ``undecodable``. Either way, and after any error or
    :data:`WORKER_CALLS` calls, the next call starts a fresh process, so a file that upset a decoder never
    shares one with the files after it. ``fn`` must pickle by reference (a module-level function); it may
    return any picklable value, numpy arrays (alone or inside a tuple) travel as raw bytes. Uses
    ``os.fork`` directly, so it also works inside daemonic workers (e.g. a torch DataLoader) and threads.
    """
    path = str(path)
    worker = _thread_worker()
    try:
        worker.conn.send((fn, args, path))
    except OSError:  # the idle process was killed from outside: start another
        worker.retire()
        worker = _local.worker = _Worker()
        worker.conn.send((fn, args, path))
    keep = False
    try:
        if not worker.conn.poll(timeout_s):
            raise VideoError(path, "decode_timeout", f"decoding took longer than {timeout_s:g} s; killed it")
        try:
            message = worker.conn.recv()
        except (EOFError, ConnectionResetError):  # reset: it died with our request unread
            _local.worker = None
            raise VideoError(path, "undecodable", f"the decoder process died ({worker.died()})") from None
        if message[0] == "error":
            raise VideoError(path, message[1], message[2])
        result = _receive_result(worker.conn, message[1], message[2])
        worker.calls += 1
        keep = worker.calls < WORKER_CALLS
        return result
    finally:
        if not keep and getattr(_local, "worker", None) is worker:
            _local.worker = None
            worker.retire()


# --------------------------------------------------------------------------- checks


def _check_file(path: str | os.PathLike[str], limits: DecodeLimits) -> tuple[str, os.stat_result]:
    resolved = str(Path(path).expanduser().resolve())
    try:
        stat = os.stat(resolved)
    except FileNotFoundError:
        raise VideoError(
            resolved, "video_missing", "the file does not exist; fix the path or add the video"
        ) from None
    if not Path(resolved).is_file():
        raise VideoError(resolved, "video_missing", "the path is not a regular file")
    if stat.st_size == 0:
        raise VideoError(resolved, "video_empty", "the file is empty (0 bytes)")
    if stat.st_size > limits.max_file_bytes:
        raise VideoError(
            resolved,
            "file_too_large",
            f"{stat.st_size} bytes exceeds DecodeLimits.max_file_bytes={limits.max_file_bytes}",
        )
    return resolved, stat


def _check_geometry(path: str, width: int, height: int, fps: float, limits: DecodeLimits) -> None:
    if width <= 0 or height <= 0:
        raise VideoError(path, "undecodable", f"the video stream has no valid resolution ({width}×{height})")
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise VideoError(
            path,
            "resolution_too_large",
            f"{width}×{height} exceeds the limits (max {limits.max_width}×{limits.max_height}, "
            f"{limits.max_pixels} pixels)",
        )
    if not math.isfinite(fps) or fps <= 0 or fps > limits.max_fps:
        raise VideoError(path, "bad_fps", f"frame rate {fps!r} is not in (0, {limits.max_fps:g}]")


def _check_length(path: str, num_frames: int, fps: float, limits: DecodeLimits, *, declared: bool) -> None:
    what = "declares" if declared else "has"
    if num_frames > limits.max_frames:
        raise VideoError(
            path, "too_many_frames", f"the video {what} {num_frames} frames; the limit is {limits.max_frames}"
        )
    duration = num_frames / fps
    if duration > limits.max_duration_s:
        raise VideoError(
            path,
            "duration_too_long",
            f"the video {what} {duration:.1f} s; the limit is {limits.max_duration_s:g} s",
        )
    if not declared and num_frames < limits.min_frames:
        raise VideoError(
            path,
            "too_few_frames",
            f"only {num_frames} decodable frame(s); at least {limits.min_frames} are needed",
        )


def _check_info(info: VideoInfo, limits: DecodeLimits) -> None:
    """Re-check a cached probe against (possibly different) limits, without opening the file."""
    if info.size_bytes > limits.max_file_bytes:
        raise VideoError(
            info.path, "file_too_large", f"{info.size_bytes} bytes exceeds {limits.max_file_bytes}"
        )
    _check_geometry(info.path, info.width, info.height, info.fps, limits)
    _check_length(info.path, info.num_frames, info.fps, limits, declared=False)


# --------------------------------------------------------------------------- child-side decoding


def _read_header(path: str, limits: DecodeLimits) -> tuple[int, int, float, int]:
    """Width, height, fps and declared frames from the header (PyAV, no decoding); checks them."""
    import av

    try:
        container = av.open(path)
    except Exception as exc:
        raise VideoError(path, "undecodable", f"not a readable video container ({exc})") from None
    with container:
        if not container.streams.video:
            raise VideoError(path, "undecodable", "the file has no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else float("nan")
        _check_geometry(path, width, height, fps, limits)
        declared = int(stream.frames)
        if declared <= 0 and stream.duration is not None and stream.time_base is not None:
            declared = round(float(stream.duration * stream.time_base) * fps)
        elif declared <= 0 and container.duration is not None:
            declared = round(container.duration / 1e6 * fps)
        _check_length(path, declared, fps, limits, declared=True)
    return width, height, fps, declared


def _decodable_decord(reader: Any, path: str) -> int:
    """How many frames of a decord reader really decode (checks the first and last; bisects on failure)."""
    total = len(reader)
    if total == 0:
        return 0
    try:
        reader[0]
    except Exception as exc:
        raise VideoError(path, "undecodable", f"the first frame does not decode ({exc})") from None
    try:
        reader[total - 1]
        return total
    except Exception:
        good, bad = 0, total - 1  # over-reported frame count: find the last frame that decodes
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            reader[middle]
            good = middle
        except Exception:
            bad = middle
    return good + 1


def _pyav_frames(path: str, keep: set[int] | None, size: tuple[int, int] | None, limits: DecodeLimits) -> Any:
    """Decode with PyAV from the start: (count decoded, {index: rgb array} for indices in ``keep``).

    Stops after the last kept index (or at the end when ``keep`` is None); a decoding error means the
    file is corrupt or truncated (``undecodable``), naming how far decoding got.
    """
    import av

    last = max(keep) if keep else None
    frames: dict[int, Any] = {}
    count = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if keep is not None and count in keep:
                    if size is None:
                        frames[count] = frame.to_ndarray(format="rgb24")
                    else:
                        frames[count] = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                count += 1
                if last is not None and count > last:
                    break
                if count > limits.max_frames:
                    raise VideoError(path, "too_many_frames", f"more than {limits.max_frames} frames decode")
        except av.FFmpegError as exc:
            raise VideoError(
                path,
                "undecodable",
                f"decoding failed after {count} frame(s); truncated or corrupt file ({exc})",
            ) from None
    return count, frames


def _open_decord(path: str, size: tuple[int, int] | None) -> Any:
    """A decord reader (resized at decode time when ``size`` is given), or None when decord cannot open it."""
    import decord

    try:
        if size is None:
            return decord.VideoReader(path, ctx=decord.cpu(0))
        return decord.VideoReader(path, ctx=decord.cpu(0), width=size[0], height=size[1])
    except (decord.DECORDError, RuntimeError):
        return None


def _decord_batch(path: str, indices: list[int], size: tuple[int, int] | None) -> np.ndarray | None:
    """Frames via decord, or None when decord fails (it cannot resize to some small widths, e.g. 16 or 48)."""
    import decord

    reader = _open_decord(path, size)
    if reader is None:
        return None
    try:
        return reader.get_batch(indices).asnumpy()
    except decord.DECORDError:
        return None


def _inspect(path: str, size_bytes: int, limits: DecodeLimits) -> VideoInfo:
    width, height, fps, declared = _read_header(path, limits)
    reader = _open_decord(path, None)
    if reader is not None:
        declared = max(declared, len(reader))
        _check_length(path, declared, fps, limits, declared=True)
        num_frames, backend = _decodable_decord(reader, path), "decord"
    else:
        num_frames, _ = _pyav_frames(path, None, None, limits)
        backend = "pyav"
    if declared - num_frames > max(2.0, limits.max_missing_fraction * declared):
        raise VideoError(
            path,
            "undecodable",
            f"only {num_frames} of {declared} declared frames decode: truncated or corrupt file "
            f"(DecodeLimits.max_missing_fraction={limits.max_missing_fraction:g})",
        )
    info = VideoInfo(path, size_bytes, width, height, num_frames, fps, num_frames / fps, backend)
    _check_length(path, num_frames, fps, limits, declared=False)
    return info


def _decode(
    path: str,
    size_bytes: int,
    indices: list[int],
    size: tuple[int, int] | None,
    limits: DecodeLimits,
    known: VideoInfo | None,
) -> tuple[VideoInfo, np.ndarray]:
    import numpy as np

    info = known if known is not None else _inspect(path, size_bytes, limits)
    wanted = np.clip(np.asarray(indices, dtype=np.int64), 0, info.num_frames - 1)
    unique, inverse = np.unique(wanted, return_inverse=True)
    width, height = size if size is not None else (info.width, info.height)
    if len(unique) == 0:
        return info, np.zeros((0, height, width, 3), dtype=np.uint8)
    batch = _decord_batch(path, unique.tolist(), size) if info.backend == "decord" else None
    if batch is None:
        _, decoded = _pyav_frames(path, set(unique.tolist()), size, limits)
        batch = np.stack([decoded[int(i)] for i in unique])
    return info, np.ascontiguousarray(batch[inverse.reshape(-1)])


# --------------------------------------------------------------------------- public API

_CACHE_SIZE: Final = 4096
_cache: dict[tuple[str, int, int], VideoInfo] = {}
_cache_lock = threading.Lock()  # validation probes from a thread pool


def _cached(path: str, stat: os.stat_result) -> VideoInfo | None:
    with _cache_lock:
        return _cache.get((path, stat.st_size, stat.st_mtime_ns))


def _remember(path: str, stat: os.stat_result, info: VideoInfo) -> None:
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[(path, stat.st_size, stat.st_mtime_ns)] = info


def _preload_decoders() -> None:
    """Import the decoders in the parent once, so forked children start without import work."""
    import av  # noqa: F401
    import decord  # noqa: F401
    import numpy  # noqa: F401


def probe(path: str | os.PathLike[str], limits: DecodeLimits = DecodeLimits()) -> VideoInfo:
    """Open, check and measure a video; raise :class:`VideoError` (with a stable reason) when it is unusable.

    Results are cached per (path, size, mtime) in this process; a cached result is re-checked against
    ``limits`` without opening the file again.
    """
    resolved, stat = _check_file(path, limits)
    info = _cached(resolved, stat)
    if info is None:
        _preload_decoders()
        info = run_isolated(
            _inspect, resolved, stat.st_size, limits, timeout_s=limits.timeout_s, path=resolved
        )
        _remember(resolved, stat, info)
    else:
        _check_info(info, limits)
    return info


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> np.ndarray:
    """Decode only the frames at ``indices`` as a ``(len(indices), H, W, 3)`` uint8 RGB array.

    ``size`` is ``(width, height)``; frames are resized while decoding. Indices are clamped to the
    decodable range, may repeat and come back in the order asked. Only the requested frames are kept in
    memory. The file is checked as by :func:`probe` (once per process), and decoding runs isolated with
    ``limits.timeout_s``.
    """
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise ValueError(f"size must be a positive (width, height), got {size}")
    resolved, stat = _check_file(path, limits)
    known = _cached(resolved, stat)
    if known is not None:
        _check_info(known, limits)
    _preload_decoders()
    info, frames = run_isolated(
        _decode,
        resolved,
        stat.st_size,
        [int(i) for i in indices],
        size,
        limits,
        known,
        timeout_s=limits.timeout_s,
        path=resolved,
    )
    if known is None:
        _remember(resolved, stat, info)
    return frames


__all__ = [
    "REASONS",
    "DecodeLimits",
    "VideoError",
    "VideoInfo",
    "probe",
    "read_frames",
    "run_isolated",
]
