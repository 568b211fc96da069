"""The container images tasks run in: set in one place, overridable by environment variables.

Build them with the Dockerfiles in ``containers/`` (see the README's cluster section). Local
``pyflyte run`` ignores images; ``pyflyte run --remote`` and ``pyflyte register`` use these URIs.
"""

from __future__ import annotations

import os

VERSION = "0.1.0"
REGISTRY = os.environ.get("QSAVE_REGISTRY", "ghcr.io/qsave")
CPU_IMAGE = os.environ.get("QSAVE_CPU_IMAGE", f"{REGISTRY}/qsave-cpu:{VERSION}")
GPU_IMAGE = os.environ.get("QSAVE_GPU_IMAGE", f"{REGISTRY}/qsave-gpu:{VERSION}")
