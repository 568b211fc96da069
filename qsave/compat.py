"""Environment shims that must run before torch/transformers are imported.

The torchvision wheels reachable from PyPI are CUDA builds. Beside the CPU build of torch they fail at
import with ``operator torchvision::nms does not exist``, because two registration modules register
CUDA/meta kernels for ops the CPU torch does not have. transformers' Qwen3-VL video processor needs
torchvision, so on a CPU-only torch we pre-register two empty stand-ins for exactly those modules.
With a CUDA torch (GPU images) nothing is touched.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

_STAND_INS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def torch_has_cuda_library() -> bool:
    """True when the installed torch ships CUDA kernels (checked on disk, without importing torch)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    lib = Path(spec.origin).parent / "lib"
    return any(lib.glob("libtorch_cuda*.so*")) or any(lib.glob("torch_cuda*.dll"))


def ensure_torchvision_importable() -> bool:
    """Install the CPU stand-ins when needed; returns True when they were installed."""
    if "torchvision" in sys.modules or torch_has_cuda_library():
        return False
    if importlib.util.find_spec("torchvision") is None:
        return False
    for name in _STAND_INS:
        sys.modules.setdefault(name, types.ModuleType(name))
    return True
