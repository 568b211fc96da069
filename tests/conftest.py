"""Test-wide settings: nothing writes to the real $HOME, nothing phones home, runs are offline."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

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
