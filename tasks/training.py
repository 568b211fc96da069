"""Training: SFT → GRPO → final SFT. Each stage hands a merged model directory to the next.

On a cluster these run in the GPU image on H100-class nodes; locally the GPU requests are ignored and
the same code trains the tiny model on the CPU. A stage's output directory holds ``model/`` (merged,
loadable by ``qsave.modeling.load_model``), ``metrics.jsonl`` (per-step log) and ``skipped.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flytekit import Resources, current_context, task
from flytekit.extras.accelerators import H100
from flytekit.types.directory import FlyteDirectory

from qsave.recipe import Recipe
from tasks import CODE_CACHE
from tasks.images import GPU_IMAGE

GPU_TASK = {
    "cache": CODE_CACHE,
    "container_image": GPU_IMAGE,
    "requests": Resources(cpu="16", mem="200Gi", gpu="8", ephemeral_storage="200Gi"),
    "accelerator": H100,
    "shared_memory": True,
    "retries": 2,
    "interruptible": True,
}
"""One node of 8×H100 per stage (the qwen3-vl-8b profile); ignored by local runs."""


def _stage_dir(name: str) -> Path:
    return Path(current_context().working_directory) / name


def _finish(root: Path) -> FlyteDirectory:
    """Keep the merged model and the logs; checkpoints only serve a retry of this task."""
    shutil.rmtree(root / "checkpoints", ignore_errors=True)
    return FlyteDirectory(str(root))


@task(**GPU_TASK)
def sft(recipe: Recipe, dataset: FlyteDirectory, clips: FlyteDirectory) -> FlyteDirectory:
    """Stage 1: SFT on CoT targets with the dual-supervision loss, from the profile's base model."""
    from qsave.preprocess import read_exported
    from qsave.recipe import base_model, stage_configs
    from qsave.sft import run_sft

    cfg = stage_configs(recipe)[0]
    root = _stage_dir("sft")
    run_sft(base_model(recipe), dataset.download(), read_exported(clips.download()), cfg, root)
    return _finish(root)


@task(**GPU_TASK)
def grpo(
    recipe: Recipe, model: FlyteDirectory, dataset: FlyteDirectory, clips: FlyteDirectory
) -> FlyteDirectory:
    """Stage 2: GRPO with format, score-accuracy and attribution rewards (video in every log-prob pass)."""
    from qsave.grpo import run_grpo
    from qsave.preprocess import read_exported
    from qsave.recipe import stage_configs

    cfg = stage_configs(recipe)[1]
    root = _stage_dir("grpo")
    source = Path(model.download()) / "model"
    if cfg is None:
        shutil.copytree(source, root / "model")
        return FlyteDirectory(str(root))
    run_grpo(source, dataset.download(), read_exported(clips.download()), cfg, root)
    return _finish(root)


@task(**GPU_TASK)
def final_sft(
    recipe: Recipe, model: FlyteDirectory, dataset: FlyteDirectory, clips: FlyteDirectory
) -> FlyteDirectory:
    """Stage 3: SFT again at a lower learning rate, starting from GRPO's model, for stability."""
    from qsave.preprocess import read_exported
    from qsave.recipe import stage_configs
    from qsave.sft import run_sft

    cfg = stage_configs(recipe)[2]
    root = _stage_dir("final_sft")
    source = Path(model.download()) / "model"
    if cfg is None:
        shutil.copytree(source, root / "model")
        return FlyteDirectory(str(root))
    run_sft(source, dataset.download(), read_exported(clips.download()), cfg, root)
    return _finish(root)
