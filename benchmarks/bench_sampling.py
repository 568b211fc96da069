"""Benchmark: SlowFast sampling against the usual ways of feeding video to Qwen3-VL.

Side by side, per video, wall time and visual tokens of

(a) ``slowfast``        — :func:`qsave.slowfast.sample_clip` (probe + one decode pass, both pathways);
(b) ``qwen_vl_utils``   — qwen-vl-utils ``fetch_video`` at the same coverage (same fps, same window),
                          its default resizing (decord backend, the one installed);
(c) ``processor``       — the transformers Qwen3-VL video processor with its defaults (decord decode at its
                          default 2 fps, then its resize/normalise/patchify);
(d) ``naive``           — decoding every frame at full resolution (PyAV, RGB), the cost of not sampling;
and ``uniform``         — :func:`qsave.slowfast.sample_uniform`: every 8 fps frame at the slow (high)
                          resolution, the Qwen3-VL default path at SlowFast's coverage; token ratios use it.

Clips: the real ones in ``../shared/data`` (AIGVE 1360×768, LaVie 512×512) and synthetic ones written
with PyAV into a temp dir (128×128, a 10 s and a 30 s 1080p). Peak memory of ``sample_clip`` is measured
in fresh processes on the 1080p clips (decoder child's and caller's peak RSS above the starting RSS).

Run: ``.venv/bin/python benchmarks/bench_sampling.py [--json] [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import qsave  # noqa: F401  (torchvision shim before transformers)
from qsave.slowfast import SamplerConfig, sample_clip, sample_uniform, segment_tokens, window_frames
from qsave.video import probe

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("QSAVE_SHARED_DATA", REPO.parent / "shared" / "data"))
METHODS = ("slowfast", "uniform", "qwen_vl_utils", "processor", "naive")


@dataclass(frozen=True)
class Clip:
    dataset: str
    path: Path


# --------------------------------------------------------------------------- clips


def write_synthetic(path: Path, width: int, height: int, seconds: float, fps: int) -> Path:
    """An H.264 clip of a drifting textured scene (x264 veryfast, yuv420p), like a real camera pan."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8 + 2, width // 4 + 2, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 8, axis=0), 8, axis=1)  # coarse blocks: compressible but busy
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "26"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            dx = i * 3 % (texture.shape[1] - width)
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(texture[:height, dx : dx + width]), "rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def collect_clips(workdir: Path, quick: bool) -> list[Clip]:
    """Real clips copied into ``workdir`` (fresh files: no probe cached in this process) + synthetic ones."""
    clips = []
    for dataset, folder in (("aigve_1360x768", "aigve-bench-toy"), ("lavie_512x512", "vbench-lavie-style")):
        paths = sorted((SHARED_DATA / folder / "videos").glob("*.mp4"))
        for i, source in enumerate(paths[: 3 if quick else None]):
            clips.append(Clip(dataset, Path(shutil.copy(source, workdir / f"{folder}-{i}.mp4"))))
    long_s = 15.0 if quick else 30.0
    synthetic = [
        ("synthetic_128x128", 128, 128, 4.0, 24),
        ("synthetic_1080p_10s", 1920, 1080, 10.0, 24),
        (f"synthetic_1080p_{long_s:g}s", 1920, 1080, long_s, 24),
    ]
    for name, width, height, seconds, fps in synthetic:
        print(f"writing {name} …", file=sys.stderr)
        clips.append(Clip(name, write_synthetic(workdir / f"{name}.mp4", width, height, seconds, fps)))
    return clips


# --------------------------------------------------------------------------- methods


def fresh(path: Path) -> None:
    """Touch the file so qsave.video's per-process probe cache misses: every timed run pays its probe."""
    os.utime(path)


def run_slowfast(path: Path, cfg: SamplerConfig) -> int:
    fresh(path)
    return sample_clip(path, cfg).tokens


def run_uniform(path: Path, cfg: SamplerConfig) -> int:
    fresh(path)
    return sample_uniform(path, cfg).tokens


def run_qwen_vl_utils(path: Path, cfg: SamplerConfig) -> int:
    from qwen_vl_utils import fetch_video

    info = probe(path)  # only to set the same window; cached, not part of the cost
    window_s = window_frames(info.num_frames, info.fps, cfg) / info.fps
    element: dict[str, Any] = {"video": str(path), "fps": cfg.fps}
    if window_s < info.duration_s:
        element["video_end"] = window_s
    video = fetch_video(element, image_patch_size=16)
    frames, _, height, width = video.shape
    return segment_tokens(frames, width, height)


def run_processor(path: Path, processor: Any) -> int:
    from transformers.video_utils import load_video

    video, metadata = load_video(  # a path is a valid input; the stub's union type omits str
        str(path),  # type: ignore[arg-type]
        backend="decord",
        sample_indices_fn=processor.sample_frames,
    )
    out = processor(videos=[video], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    return int(math.prod(out["video_grid_thw"][0].tolist())) // processor.merge_size**2


def run_naive(path: Path) -> int:
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median wall time over ``repeats`` runs and the (deterministic) result."""
    times, result = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# --------------------------------------------------------------------------- memory


_MEMORY_PROBE = """
import json, resource, sys
import qsave
from qsave.slowfast import SamplerConfig, sample_clip
import av, decord, numpy

def status_kb(key):  # VmRSS now / VmHWM: this process's peak (unlike ru_maxrss, not inherited over exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))

before = status_kb("VmRSS") * 1024
clip = sample_clip(sys.argv[1], SamplerConfig())
child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the forked decoder's peak
info = clip.info
print(json.dumps({
    "duration_s": info.duration_s, "width": info.width, "height": info.height, "num_frames": info.num_frames,
    "rss_before_mb": before / 2**20,
    "caller_peak_growth_mb": (status_kb("VmHWM") * 1024 - before) / 2**20,
    "decoder_child_peak_growth_mb": (child_peak - before) / 2**20,
    "frames_kept_mb": (clip.slow.frames.nbytes + clip.fast.frames.nbytes) / 2**20,
    "all_frames_full_res_mb": info.num_frames * info.width * info.height * 3 / 2**20,
}))
"""


def measure_memory(path: Path) -> dict[str, Any]:
    """Peak RSS growth of one ``sample_clip`` call, in a fresh interpreter (peaks only ever grow)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path)], capture_output=True, text=True, check=True, cwd=REPO
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


# --------------------------------------------------------------------------- report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset: mean seconds and tokens per video for each method, and the headline ratios."""
    out: dict[str, Any] = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        entry: dict[str, Any] = {"videos": len(subset)}
        for method in METHODS:
            entry[f"{method}_s"] = round(statistics.mean(r[f"{method}_s"] for r in subset), 4)
            entry[f"{method}_tokens"] = round(statistics.mean(r[f"{method}_tokens"] for r in subset), 1)
        entry["naive_frames"] = entry.pop("naive_tokens")  # naive has no tokens: it is every frame
        entry["speedup_vs_qwen_vl_utils"] = round(entry["qwen_vl_utils_s"] / entry["slowfast_s"], 2)
        entry["speedup_vs_processor"] = round(entry["processor_s"] / entry["slowfast_s"], 2)
        entry["speedup_vs_naive"] = round(entry["naive_s"] / entry["slowfast_s"], 2)
        entry["token_ratio_vs_uniform"] = round(entry["slowfast_tokens"] / entry["uniform_tokens"], 3)
        entry["token_ratio_vs_qwen_vl_utils"] = round(
            entry["slowfast_tokens"] / entry["qwen_vl_utils_tokens"], 3
        )
        entry["token_ratio_vs_processor"] = round(entry["slowfast_tokens"] / entry["processor_tokens"], 3)
        out[dataset] = entry
    return out


def print_table(summary: dict[str, Any], memory: dict[str, Any], result: dict[str, Any]) -> None:
    header = f"{'dataset':<22}{'n':>3}  " + "".join(f"{m + ' s':>16}" for m in METHODS)
    print(header)
    for dataset, e in summary.items():
        print(f"{dataset:<22}{e['videos']:>3}  " + "".join(f"{e[f'{m}_s']:>16.3f}" for m in METHODS))
    print()
    print(
        f"{'dataset':<22}{'n':>3}  "
        + "".join(f"{m + ' tok':>16}" for m in METHODS[:4])
        + f"{'naive frames':>16}"
    )
    for dataset, e in summary.items():
        tokens = "".join(f"{e[f'{m}_tokens']:>16.0f}" for m in METHODS[:4])
        print(f"{dataset:<22}{e['videos']:>3}  {tokens}{e['naive_frames']:>16.0f}")
    print()
    speed_header = f"{'vs fetch_video':>15}{'vs processor':>14}{'vs naive':>10}"
    print(f"{'dataset':<22}{speed_header}{'tok/uniform':>13}{'tok/fetch':>11}")
    for dataset, e in summary.items():
        print(
            f"{dataset:<22}{e['speedup_vs_qwen_vl_utils']:>14.2f}×{e['speedup_vs_processor']:>13.2f}×"
            f"{e['speedup_vs_naive']:>9.2f}×{e['token_ratio_vs_uniform']:>13.3f}{e['token_ratio_vs_qwen_vl_utils']:>11.3f}"
        )
    print()
    for name, m in memory.items():
        print(
            f"memory {name}: {m['num_frames']} frames {m['width']}×{m['height']} ({m['duration_s']:.0f} s); "
            f"decoder child peak +{m['decoder_child_peak_growth_mb']:.0f} MB, caller peak "
            f"+{m['caller_peak_growth_mb']:.0f} MB; frames kept {m['frames_kept_mb']:.1f} MB; "
            f"all frames at full resolution would be {m['all_frames_full_res_mb']:.0f} MB"
        )
    print()
    print(
        f"headline (AIGVE 1360×768): {result['speedup_vs_qwen_vl_utils']:.2f}× faster than fetch_video "
        f"(target ≥ 3×), tokens {result['token_ratio_vs_uniform']:.3f} of uniform 8 fps (target ≤ 0.333)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--quick", action="store_true", help="3 clips per real set, a shorter long clip, 1 repeat"
    )
    args = parser.parse_args(argv)

    import transformers
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    transformers.logging.set_verbosity_error()
    processor = Qwen3VLVideoProcessor()
    cfg = SamplerConfig()
    repeats = 1 if args.quick else 3
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="qsave-bench-") as tmp:
        clips = collect_clips(Path(tmp), args.quick)
        for clip in clips[:1]:  # warm-up: imports and first-call costs are nobody's per-video time
            (
                run_slowfast(clip.path, cfg),
                run_qwen_vl_utils(clip.path, cfg),
                run_processor(clip.path, processor),
            )
        for i, clip in enumerate(clips, 1):
            print(f"[{i}/{len(clips)}] {clip.dataset}: {clip.path.name}", file=sys.stderr)
            row: dict[str, Any] = {"dataset": clip.dataset, "video": clip.path.name}
            runs: dict[str, Callable[[], int]] = {
                "slowfast": functools.partial(run_slowfast, clip.path, cfg),
                "uniform": functools.partial(run_uniform, clip.path, cfg),
                "qwen_vl_utils": functools.partial(run_qwen_vl_utils, clip.path, cfg),
                "processor": functools.partial(run_processor, clip.path, processor),
                "naive": functools.partial(run_naive, clip.path),
            }
            for method, fn in runs.items():
                row[f"{method}_s"], row[f"{method}_tokens"] = timed(fn, repeats)
            rows.append(row)
        for clip in clips:
            if "1080p" in clip.dataset:
                print(f"memory: {clip.dataset}", file=sys.stderr)
                memory[clip.dataset] = measure_memory(clip.path)

    summary = summarise(rows)
    aigve = summary.get("aigve_1360x768")
    if aigve is None:
        raise SystemExit(f"no AIGVE clips under {SHARED_DATA}: the headline ratios need them")
    result = {
        "speedup_vs_qwen_vl_utils": aigve["speedup_vs_qwen_vl_utils"],
        "token_ratio_vs_uniform": aigve["token_ratio_vs_uniform"],
        "headline_dataset": "aigve_1360x768",
        "sampler_config": asdict(cfg),
        "repeats": repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "datasets": summary,
        "memory": memory,
        "videos": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(summary, memory, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
