"""Test-wide settings: nothing writes to the real $HOME, nothing phones home, runs are offline."""

from __future__ import annotations

import os
import tempfile
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
