"""Test-wide settings: nothing writes to the real $HOME, nothing phones home, runs are offline."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="qsave-test-home-"))
for key, value in {
    "HOME": str(_HOME),
    "MPLCONFIGDIR": str(_HOME / ".matplotlib"),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "QSAVE_HOME": str(_HOME / ".qsave"),
}.items():
    os.environ[key] = value

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("QSAVE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_SETS = ("aigve-bench-toy", "vbench-lavie-style")
"""The real AI-generated sample videos the tests decode (``shared/data`` beside the checkout)."""


def missing_sample_data(root: Path) -> list[str]:
    """The sample sets of :data:`SAMPLE_SETS` that ``root`` lacks."""
    return [name for name in SAMPLE_SETS if not (root / name).is_dir()]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before collecting when the real sample videos are not there: without them some thirty tests
    would fail one by one on a missing file, and no test should quietly skip the real decoding."""
    missing = missing_sample_data(SHARED_DATA)
    if missing:
        pytest.exit(
            f"the real sample videos ({', '.join(missing)}) are not under {SHARED_DATA}: the tests decode "
            "them. Check the project out beside its shared/ folder (../shared/data), or set "
            "QSAVE_SHARED_DATA=/path/to/shared/data",
            returncode=4,
        )


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def training_corpus(root: Path, n: int, side: int = 64, frames: int = 16) -> tuple[Path, Path]:
    """An ``n``-clip synthetic dataset of ``side``×``side``, ``frames``-frame videos under ``root/dataset``,
    SlowFast-sampled with the local sampler; returns the dataset directory and its clip table
    (``root/clips.parquet``, clip paths relative to root)."""
    from qsave.manifest import read_manifest
    from qsave.preprocess import merge_results, preprocess_shard
    from qsave.slowfast import LOCAL_SAMPLER
    from qsave.synthetic import MANIFEST_NAME, SynthConfig, generate_corpus
    from qsave.video import DecodeLimits

    dataset = root / "dataset"
    generate_corpus(SynthConfig(n=n, width=side, height=side, num_frames=frames, workers=1), dataset)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    shard = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), root / "clips", base_dir=dataset)
    table = merge_results([shard.table])
    table["clip_path"] = [str(Path(p).relative_to(root)) for p in table["clip_path"]]
    table.to_parquet(root / "clips.parquet")
    return dataset, root / "clips.parquet"
