"""qsave: an explainable quality assessor for AI-generated video (after Q-Save).

The package never imports Flyte; heavy libraries (torch, transformers, mlflow, great_expectations)
are imported inside the functions that need them, so ``import qsave`` and the CLI start fast.
"""

from qsave.compat import ensure_torchvision_importable

__version__ = "0.1.0"

ensure_torchvision_importable()
