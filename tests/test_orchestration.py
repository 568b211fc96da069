"""Orchestration: the training tasks' cluster settings, Flyte checkpoint/resume, Elastic (torchrun) on two
CPU workers, the launch plans, the training-curve Deck, and a `pyflyte package` of every workflow and
launch plan whose serialized specs are decoded and checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from flytekit.bin.entrypoint import setup_execution

from qsave.curves import curve_series, training_curves_html
from qsave.manifest import read_manifest
from qsave.preprocess import export_clips, preprocess_shard, read_exported
from qsave.sft import SFTStageConfig, run_sft
from qsave.slowfast import LOCAL_SAMPLER
from qsave.synthetic import MANIFEST_NAME, SynthConfig, generate_corpus
from qsave.training import METRICS_FILE, read_metrics
from qsave.video import DecodeLimits
from tasks.training import (
    CODE_CACHE,
    TrainingShape,
    _finish,
    checkpoint_store_callback,
    gpu_task_settings,
    restore_checkpoints,
    task_config,
    training_shape,
)
from workflows.launch_plans import snapshot_uri

PYFLYTE = str(Path(sys.executable).with_name("pyflyte"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 12-clip synthetic dataset directory and its exported clip directory (as the merge task writes)."""
    root = tmp_path_factory.mktemp("orchestration")
    dataset = root / "dataset"
    generate_corpus(SynthConfig(n=12, width=64, height=64, num_frames=16, workers=1), dataset)
    manifest = read_manifest(dataset / MANIFEST_NAME)
    shard = preprocess_shard(manifest, LOCAL_SAMPLER, DecodeLimits(), root / "cache", base_dir=dataset)
    return dataset, export_clips(shard.table, root / "clips")


# --------------------------------------------------------------------------------------------- settings


def test_training_shape_comes_from_the_environment() -> None:
    assert training_shape({}) == TrainingShape(1, 1)
    assert task_config(TrainingShape(1, 1)) is None  # one process: a plain task, no torchrun
    shape = training_shape({"QSAVE_NNODES": "2", "QSAVE_NPROC_PER_NODE": "8"})
    elastic = task_config(shape)
    assert (elastic.nnodes, elastic.nproc_per_node, elastic.increase_shared_mem) == (2, 8, False)
    settings = gpu_task_settings(shape)
    assert settings["requests"].gpu == "8" and settings["interruptible"] and settings["retries"] == 3
    assert settings["environment"] == {"QSAVE_NNODES": "2", "QSAVE_NPROC_PER_NODE": "8"}
    with pytest.raises(ValueError, match="QSAVE_NPROC_PER_NODE='eight' is not a whole number"):
        training_shape({"QSAVE_NPROC_PER_NODE": "eight"})
    with pytest.raises(ValueError, match="must be at least 1"):
        training_shape({"QSAVE_NNODES": "0"})


def test_snapshot_uri_is_filled_from_the_kickoff_time() -> None:
    kickoff = datetime(2025, 6, 2, 3, 0)
    template = "s3://bucket/qsave/snapshots/{date}/manifest.parquet"
    assert snapshot_uri(template, kickoff) == "s3://bucket/qsave/snapshots/2025-06-02/manifest.parquet"
    assert snapshot_uri("gs://b/{year}/{month}/{day}/m.parquet", kickoff) == "gs://b/2025/06/02/m.parquet"
    with pytest.raises(ValueError, match=r"cannot be filled .*\{date\}"):
        snapshot_uri("s3://b/{week}/m.parquet", kickoff)


# --------------------------------------------------------------------------------------------- checkpoints


def _attempt(
    corpus: tuple[Path, Path], tmp: Path, name: str, max_steps: int, prev: Path | None
) -> tuple[Path, int, list[Any]]:
    """One attempt of an SFT stage as Flyte runs it: a fresh stage folder, this attempt's checkpoint store
    and the previous attempt's. Returns (stage folder, optimizer steps this attempt ran, its decks)."""
    dataset, clips = corpus
    cfg = SFTStageConfig(
        per_device_batch_size=2,
        max_steps=max_steps,
        save_steps=1,
        warmup_ratio=0.0,
        lr_scheduler_type="linear",
        think_fraction=0.0,
    )
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        count = 0

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            Steps.count += 1

    root = tmp / name / "sft"
    with setup_execution(
        raw_output_data_prefix=str(tmp / "raw"),
        checkpoint_path=str(tmp / f"store-{name}"),
        prev_checkpoint=str(prev) if prev else None,
    ) as ctx:
        resume = restore_checkpoints(root)
        assert resume == (prev is not None)
        callbacks = [checkpoint_store_callback(), Steps()]
        run_sft("tiny", dataset, read_exported(clips), cfg, root, resume=resume, callbacks=callbacks)
        _finish(root, "SFT")
        decks = list(ctx.user_space_params.decks)
    return root, Steps.count, decks


def test_checkpoints_go_to_the_flyte_store_and_a_retry_resumes(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    # An attempt whose predecessor never saved (its store prefix does not exist) starts fresh.
    never_saved = {"checkpoint_path": str(tmp_path / "store-a0"), "prev_checkpoint": str(tmp_path / "none")}
    with setup_execution(raw_output_data_prefix=str(tmp_path / "raw"), **never_saved):
        assert restore_checkpoints(tmp_path / "a0" / "sft") is False
    first, ran, _ = _attempt(corpus, tmp_path, "a1", max_steps=2, prev=None)
    assert ran == 2
    assert sorted(p.name for p in (tmp_path / "store-a1").iterdir()) == ["checkpoint-2"]  # older pruned
    assert not (first / "checkpoints").exists()  # only a retry needs them
    # The retry (attempt 2) restores checkpoint-2 and trains only the one remaining step.
    second, ran, decks = _attempt(corpus, tmp_path, "a2", max_steps=3, prev=tmp_path / "store-a1")
    assert ran == 1
    assert sorted(p.name for p in (tmp_path / "store-a2").iterdir()) == ["checkpoint-3"]
    state = json.loads((tmp_path / "store-a2" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [e["step"] for e in read_metrics(second / METRICS_FILE) if "loss" in e]
    assert steps == [1, 2, 3]  # the log continues across the resume
    assert (second / "model" / "config.json").is_file()
    deck = next(d for d in decks if d.name == "training")
    assert "data:image/png;base64," in deck.html and "<td>loss</td>" in deck.html


def test_training_curves_plot_every_series_logged_at_two_steps(tmp_path: Path) -> None:
    log = tmp_path / METRICS_FILE
    events = [
        {"loss": 2.0, "ce": 1.5, "dist": 0.5, "learning_rate": 1e-3, "step": 1, "epoch": 0.5},
        {"loss": 1.0, "ce": 0.8, "dist": 0.2, "learning_rate": 5e-4, "step": 2, "epoch": 1.0},
        {"train_runtime": 3.2, "train_loss": 1.5, "step": 2, "epoch": 1.0},
    ]
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    series = curve_series(read_metrics(log))
    assert list(series) == ["loss", "ce", "dist", "learning_rate"]
    assert series["loss"] == ([1.0, 2.0], [2.0, 1.0])
    page = training_curves_html(log, title="SFT")
    assert page.count("<img") == 1 and "<td>train_runtime</td><td>3.2</td>" in page
    log.write_text(json.dumps(events[0]) + "\n")
    assert "nothing to plot" in training_curves_html(log)
    with pytest.raises(FileNotFoundError):
        training_curves_html(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------------------------- Elastic


ELASTIC_RUN = """
import json, sys
from flytekit.types.directory import FlyteDirectory
from qsave.recipe import Recipe
from tasks.training import sft
dataset, clips = FlyteDirectory(sys.argv[1]), FlyteDirectory(sys.argv[2])
out = sft(recipe=Recipe(sft_epochs=1.0), dataset=dataset, clips=clips)
print("OUTPUT=" + json.dumps({"path": out.path, "elastic": type(sft.task_config).__name__}))
"""


def test_elastic_two_cpu_workers_train_one_stage(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """`Elastic(nproc_per_node=2)` spawns two torchrun workers; the Trainer forms a gloo group from their
    environment and each takes half of every epoch (DistributedSampler), so an epoch is half the steps."""
    dataset, clips = corpus
    env = {**os.environ, "QSAVE_NNODES": "1", "QSAVE_NPROC_PER_NODE": "2", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", ELASTIC_RUN, str(dataset), str(clips)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("OUTPUT="))
    result = json.loads(line.removeprefix("OUTPUT="))
    assert result["elastic"] == "Elastic"
    out = Path(result["path"])
    trained = json.loads((out / "model" / "qsave_sft_config.json").read_text())["examples"]
    per_rank = -(-trained // 2)  # DistributedSampler pads to an even split
    steps = [e["step"] for e in read_metrics(out / METRICS_FILE) if "loss" in e]
    assert steps[-1] == -(-per_rank // 4)  # batch 4 per worker, one epoch
    assert (out / "model" / "config.json").is_file() and not (out / "checkpoints").exists()


# --------------------------------------------------------------------------------------------- package


def _decode(archive: Path) -> dict[str, list[dict[str, Any]]]:
    """``pyflyte package`` output (``<index>_<name>_<kind>.pb``): kind → the decoded protobufs (as dicts);
    kinds: ``task``, ``workflow``, ``launch_plan``."""
    from flyteidl.admin import launch_plan_pb2, task_pb2, workflow_pb2
    from google.protobuf.json_format import MessageToDict

    kinds = {
        "1": ("task", task_pb2.TaskSpec),
        "2": ("workflow", workflow_pb2.WorkflowSpec),
        "3": ("launch_plan", launch_plan_pb2.LaunchPlan),
    }
    specs: dict[str, list[dict[str, Any]]] = {"task": [], "workflow": [], "launch_plan": []}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".pb"):
                kind, proto = kinds[member.name.removesuffix(".pb").rsplit("_", 1)[1]]
                message = proto()
                message.ParseFromString(tar.extractfile(member).read())  # type: ignore[union-attr]
                specs[kind].append(MessageToDict(message))
    return specs


def test_package_compiles_every_workflow_and_launch_plan(tmp_path: Path) -> None:
    """Serialize with the cluster shape 2 nodes × 8 GPUs and check what the cluster would run."""
    archive = tmp_path / "qsave.tgz"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "QSAVE_NNODES": "2",
        "QSAVE_NPROC_PER_NODE": "8",
        "QSAVE_GPU_IMAGE": "registry.example/qsave-gpu:test",
        "QSAVE_CPU_IMAGE": "registry.example/qsave-cpu:test",
        "QSAVE_NOTIFY_EMAILS": "owners@qsave.test",
        "QSAVE_NOTIFY_SLACK": "alerts@qsave.slack.test",
    }
    cmd = [PYFLYTE, "--pkgs", "workflows", "package", "--image", "registry.example/qsave-cpu:test"]
    done = subprocess.run(
        [*cmd, "--output", str(archive), "--force", "--source", "."],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    specs = _decode(archive)

    tasks = {s["template"]["id"]["name"]: s["template"] for s in specs["task"]}
    for stage in ("sft", "grpo", "final_sft"):
        template = tasks[f"tasks.training.{stage}"]
        assert template["type"] == "pytorch"
        elastic = template["custom"]["elasticConfig"]
        assert (elastic["minReplicas"], elastic["maxReplicas"], elastic["nprocPerNode"]) == (2, 2, 8)
        assert template["custom"]["workerReplicas"]["replicas"] == 2
        meta = template["metadata"]
        assert meta["interruptible"] is True and meta["retries"]["retries"] == 3
        # cached by the code the training tasks run (tasks/training.py and its qsave imports), which is
        # not the data tasks' code: a change to one reruns only its stages
        assert meta["discoverable"] is True
        assert meta["discoveryVersion"] == CODE_CACHE.version and len(meta["discoveryVersion"]) == 12
        assert meta["discoveryVersion"] != tasks["tasks.data.ingest"]["metadata"]["discoveryVersion"]
        container = template["container"]
        assert "{{.prevCheckpointPrefix}}" in container["args"]  # the previous attempt's checkpoint
        assert container["image"] == "registry.example/qsave-gpu:test"
        requests = {r["name"]: r["value"] for r in container["resources"]["requests"]}
        assert requests["GPU"] == "8" and requests["MEMORY"] == "960Gi" and requests["CPU"] == "96"
        assert template["extendedResources"]["gpuAccelerator"]["device"] == "nvidia-h100"
        assert template["extendedResources"]["sharedMemory"]["mountName"]
        env_vars = {e["key"]: e["value"] for e in container["env"]}
        assert env_vars["QSAVE_NNODES"] == "2" and env_vars["QSAVE_NPROC_PER_NODE"] == "8"
    assert tasks["tasks.evaluation.evaluate"]["container"]["image"] == "registry.example/qsave-gpu:test"
    assert (
        tasks["workflows.launch_plans.snapshot_data"]["container"]["image"]
        == "registry.example/qsave-cpu:test"
    )

    workflows = {s["template"]["id"]["name"] for s in specs["workflow"]}
    assert {"workflows.qsave.qsave_pipeline", "workflows.launch_plans.qsave_retrain"} <= workflows
    plans = {s["id"]["name"]: s["spec"] for s in specs["launch_plan"]}
    assert {"qsave_local", "qsave_weekly_retrain"} <= set(plans)
    assert "entityMetadata" not in plans["qsave_local"] or not plans["qsave_local"]["entityMetadata"].get(
        "schedule"
    )
    weekly = plans["qsave_weekly_retrain"]
    schedule = weekly["entityMetadata"]["schedule"]
    assert schedule["cronSchedule"]["schedule"] == "0 3 * * 1"
    assert schedule["kickoffTimeInputArg"] == "kickoff_time"
    notes = weekly["entityMetadata"]["notifications"]
    assert {tuple(sorted(n["phases"])) for n in notes} == {("FAILED", "SUCCEEDED", "TIMED_OUT")}
    assert notes[0]["email"]["recipientsEmail"] == ["owners@qsave.test"]
    assert notes[1]["slack"]["recipientsEmail"] == ["alerts@qsave.slack.test"]
