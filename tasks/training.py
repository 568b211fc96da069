"""Training: SFT → GRPO → final SFT. Each stage hands a merged model directory to the next.

On a cluster these run in the GPU image on H100 nodes, under the Kubeflow PyTorch plugin's ``Elastic``
(torchrun: one worker per GPU, ``nnodes`` pods rendezvousing for a multi-node run); locally the GPU
requests are ignored and the same code trains the tiny model on the CPU in the task's own process.
A stage's output directory holds ``model/`` (merged, loadable by ``qsave.modeling.load_model``),
``metrics.jsonl`` (per-step log) and ``skipped.json``; its Deck shows the training curves.

**Shape** (read once, when this module is imported — at registration and again in the container, which
gets the same values through the tasks' environment): ``QSAVE_NNODES`` (default 1) and
``QSAVE_NPROC_PER_NODE`` (default 1). With more than one process in all, the stages run under
``Elastic(nnodes, nproc_per_node)`` and each node requests ``nproc_per_node`` GPUs; with 1 × 1 they run as
plain tasks, since torchrun for one process only adds a worker spawn (~6 s per stage here) and changes
nothing. ``scripts/register.sh`` registers with 1 × 8 unless told otherwise.

**Interruptible, with checkpoints**: the stages may run on spot nodes and are retried. Every checkpoint the
Trainer writes is saved to Flyte's checkpoint store (``current_context().checkpoint``); a retry restores the
previous attempt's newest checkpoint before training and resumes from it (weights, optimizer, scheduler,
RNG, data position).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flytekit import Deck, FlyteContextManager, Resources, current_context, task
from flytekit.exceptions.user import FlyteDataNotFoundException
from flytekit.extras.accelerators import H100
from flytekit.types.directory import FlyteDirectory

from qsave.recipe import Recipe
from qsave.training import CHECKPOINT_DIR, METRICS_FILE, last_checkpoint
from tasks import code_cache
from tasks.images import GPU_IMAGE

CODE_CACHE = code_cache(__file__)

if TYPE_CHECKING:
    from transformers import TrainerCallback

NNODES_ENV: Final = "QSAVE_NNODES"
NPROC_ENV: Final = "QSAVE_NPROC_PER_NODE"


@dataclass(frozen=True)
class TrainingShape:
    """How many nodes a training stage spans and how many worker processes (GPUs) each runs."""

    nnodes: int = 1
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nnodes < 1 or self.nproc_per_node < 1:
            raise ValueError(
                f"{NNODES_ENV}={self.nnodes}, {NPROC_ENV}={self.nproc_per_node}: both must be at least 1"
            )

    @property
    def distributed(self) -> bool:
        return self.nnodes * self.nproc_per_node > 1

    def environment(self) -> dict[str, str]:
        """The variables that reproduce this shape when the container imports this module."""
        return {NNODES_ENV: str(self.nnodes), NPROC_ENV: str(self.nproc_per_node)}


def _env_int(env: dict[str, str] | os._Environ[str], name: str) -> int:
    text = env.get(name, "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number; set it to e.g. 1 or 8") from None


def training_shape(env: dict[str, str] | os._Environ[str] = os.environ) -> TrainingShape:
    """The shape from ``QSAVE_NNODES`` and ``QSAVE_NPROC_PER_NODE`` (each 1 when unset)."""
    return TrainingShape(nnodes=_env_int(env, NNODES_ENV), nproc_per_node=_env_int(env, NPROC_ENV))


def task_config(shape: TrainingShape) -> Any:
    """``Elastic`` for a distributed shape (this imports torch), ``None`` (a plain task) for 1 × 1.

    The pod gets ``/dev/shm`` through ``shared_memory=True`` on the task (Elastic's own switch for it is
    deprecated); ``max_restarts=0``: a lost worker fails the attempt, and Flyte's retry resumes from the
    checkpoint store.
    """
    if not shape.distributed:
        return None
    from flytekitplugins.kfpytorch import Elastic

    return Elastic(
        nnodes=shape.nnodes,
        nproc_per_node=shape.nproc_per_node,
        max_restarts=0,
        increase_shared_mem=False,
    )


def gpu_task_settings(shape: TrainingShape) -> dict[str, Any]:
    """The ``@task`` keywords of a training stage for ``shape``; a node per ``nnodes``, each with
    ``nproc_per_node`` H100s and per-GPU shares of CPU and memory. Local runs ignore the resources."""
    gpus = shape.nproc_per_node
    return {
        "task_config": task_config(shape),
        "cache": CODE_CACHE,
        "container_image": GPU_IMAGE,
        "requests": Resources(
            cpu=str(12 * gpus), mem=f"{120 * gpus}Gi", gpu=str(gpus), ephemeral_storage="800Gi"
        ),
        "limits": Resources(gpu=str(gpus)),
        "accelerator": H100,
        "shared_memory": True,
        "retries": 3,
        "interruptible": True,
        "environment": shape.environment(),
        "enable_deck": True,
    }


SHAPE: Final = training_shape()
GPU_TASK: Final = gpu_task_settings(SHAPE)
"""What the three stages are declared with; ephemeral storage holds the base model and two checkpoints
(full fine-tuning of the 8B model with optimizer state: ~130 GB each)."""


# --------------------------------------------------------------------------------------------- ranks


def _rank(name: str) -> int:
    return int(os.environ.get(name, "0"))


def _stage_dir(name: str) -> Path:
    """Where a stage writes (model, logs, checkpoints).

    A plain task writes in its working directory. Under torchrun every worker process gets its own Flyte
    working directory, but the ranks on one node must share the stage folder (rank 0 writes the model and
    trainer state, every rank its RNG state or shards); they share the launch's log folder, which
    torch elastic creates once per launch (``<tmp>/torchelastic_*/<run id>_*/attempt_<n>/<local rank>/``).
    """
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if "LOCAL_RANK" not in os.environ:
        return Path(current_context().working_directory) / name
    if not error_file:
        raise RuntimeError(
            "running under torchrun but TORCHELASTIC_ERROR_FILE is unset: cannot find the folder the ranks "
            "of this node share; launch the stage through the Elastic task config"
        )
    return Path(error_file).parents[2] / name


# --------------------------------------------------------------------------------------------- checkpoints


def _upload_checkpoint(checkpoint: Path) -> None:
    """Save ``checkpoint`` (a ``checkpoint-<step>`` folder) to this attempt's Flyte checkpoint store, keeping
    its name, then remove older steps there so a retry downloads one checkpoint, not every one.

    The folder is staged as hard links (no copy): the store takes a folder's *contents*.
    """
    store = current_context().checkpoint
    staging = checkpoint.parent.parent / ".checkpoint-upload"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging / checkpoint.name, copy_function=os.link)
    store.save(staging)
    shutil.rmtree(staging, ignore_errors=True)
    # SyncCheckpoint has no public accessor for its destination (the kfpytorch plugin reads it the same way).
    dest = getattr(store, "_checkpoint_dest", None)
    if dest and _rank("GROUP_RANK") == 0:
        fs = FlyteContextManager.current_context().file_access.get_filesystem_for_path(str(dest))
        step = int(checkpoint.name.split("-")[-1])
        for entry in fs.ls(str(dest), detail=False):
            prefix, _, number = str(entry).rstrip("/").rsplit("/", 1)[-1].partition("-")
            if prefix == "checkpoint" and number.isdigit() and int(number) < step:
                fs.rm(entry, recursive=True)


def restore_checkpoints(root: Path) -> bool:
    """Download the previous attempt's checkpoints into ``<root>/checkpoints`` (once per node: the local
    ranks share the folder) and re-save the newest to this attempt's store, so that an attempt interrupted
    before its own first save still hands it on. Returns whether there is a checkpoint to resume from."""
    from filelock import FileLock

    checkpoints = root / CHECKPOINT_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    marker = root / ".checkpoints-restored"
    with FileLock(str(root / ".checkpoints.lock")):
        if not marker.exists():
            try:
                restored = current_context().checkpoint.restore(checkpoints)
            except FlyteDataNotFoundException:
                restored = None  # the previous attempt ended before its first checkpoint
            newest = last_checkpoint(checkpoints)
            if restored is not None and newest is not None:
                print(f"resuming from the previous attempt's {newest.name}")
                _upload_checkpoint(newest)
            marker.write_text(str(newest or ""))
    return last_checkpoint(checkpoints) is not None


def checkpoint_store_callback() -> TrainerCallback:
    """A Trainer callback that saves each checkpoint to the Flyte checkpoint store as soon as it is written
    (after every rank has written its part; one upload per node)."""
    from transformers import TrainerCallback

    class _FlyteCheckpointStore(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_local_process_zero:
                _upload_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return _FlyteCheckpointStore()


# --------------------------------------------------------------------------------------------- stages


def _finish(root: Path, stage: str) -> FlyteDirectory:
    """Deck: the training curves. Keep the merged model and the logs; checkpoints only serve a retry."""
    from qsave.curves import training_curves_html

    if _rank("RANK") == 0:
        Deck("training", training_curves_html(root / METRICS_FILE, title=stage))
    if _rank("LOCAL_RANK") == 0:
        shutil.rmtree(root / CHECKPOINT_DIR, ignore_errors=True)
    return FlyteDirectory(str(root))


def _pass_through(model: FlyteDirectory, root: Path) -> FlyteDirectory:
    """A skipped stage hands its input model on unchanged."""
    if _rank("LOCAL_RANK") == 0:
        shutil.copytree(Path(model.download()) / "model", root / "model")
    return FlyteDirectory(str(root))


def _train(
    runner: Callable[..., Path],
    source: str,
    cfg: Any,
    name: str,
    label: str,
    dataset: FlyteDirectory,
    clips: FlyteDirectory,
) -> FlyteDirectory:
    """Run one stage (``run_sft`` or ``run_grpo``) from ``source``, resuming from a restored checkpoint."""
    from qsave.preprocess import exported_sampler, read_exported

    root = _stage_dir(name)
    resume = restore_checkpoints(root)
    clip_dir = clips.download()
    table, sampler = read_exported(clip_dir), exported_sampler(clip_dir)
    callbacks = [checkpoint_store_callback()]
    runner(
        source,
        dataset.download(),
        table,
        cfg,
        root,
        clips_sampler=sampler,
        resume=resume,
        callbacks=callbacks,
    )
    return _finish(root, label)


@task(**GPU_TASK)
def sft(recipe: Recipe, dataset: FlyteDirectory, clips: FlyteDirectory) -> FlyteDirectory:
    """Stage 1: SFT on CoT targets with the dual-supervision loss, from the profile's base model."""
    from qsave.recipe import base_model, stage_configs
    from qsave.sft import run_sft

    return _train(run_sft, base_model(recipe), stage_configs(recipe)[0], "sft", "SFT", dataset, clips)


@task(**GPU_TASK)
def grpo(
    recipe: Recipe, model: FlyteDirectory, dataset: FlyteDirectory, clips: FlyteDirectory
) -> FlyteDirectory:
    """Stage 2: GRPO with format, score-accuracy and attribution rewards (video in every log-prob pass)."""
    from qsave.grpo import run_grpo
    from qsave.recipe import stage_configs

    cfg = stage_configs(recipe)[1]
    if cfg is None:
        return _pass_through(model, _stage_dir("grpo"))
    return _train(run_grpo, str(Path(model.download()) / "model"), cfg, "grpo", "GRPO", dataset, clips)


@task(**GPU_TASK)
def final_sft(
    recipe: Recipe, model: FlyteDirectory, dataset: FlyteDirectory, clips: FlyteDirectory
) -> FlyteDirectory:
    """Stage 3: SFT again at a lower learning rate, starting from GRPO's model, for stability."""
    from qsave.recipe import stage_configs
    from qsave.sft import run_sft

    cfg = stage_configs(recipe)[2]
    if cfg is None:
        return _pass_through(model, _stage_dir("final_sft"))
    source = str(Path(model.download()) / "model")
    return _train(run_sft, source, cfg, "final_sft", "final SFT", dataset, clips)
