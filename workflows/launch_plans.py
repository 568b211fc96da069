"""Launch plans: the default local run, and weekly retraining on the newest data snapshot.

- ``qsave_local``: :func:`workflows.qsave.qsave_pipeline` with its embedded defaults (synthetic corpus,
  tiny model, CPU): ``pyflyte run workflows/launch_plans.py qsave_local`` or, registered, a one-click run.
- ``qsave_weekly_retrain``: :func:`qsave_retrain` on a cron schedule (``QSAVE_RETRAIN_CRON``, default
  Mondays 03:00 UTC). Flyte passes the scheduled time as ``kickoff_time``; the snapshot's manifest URI is
  the template ``QSAVE_SNAPSHOT_URI`` filled with that date (``{date}`` → ``2025-06-02``), so each run
  trains on the snapshot of its week and a rerun of an old week trains on that week's data. It trains
  the production recipe and notifies ``QSAVE_NOTIFY_EMAILS`` (email) and ``QSAVE_NOTIFY_SLACK`` (a Slack
  channel's email address) when it succeeds or fails.

The ``QSAVE_*`` variables are read when the module is imported, i.e. at registration
(``scripts/register.sh``); activate the schedule with
``flytectl update launchplan -p qsave -d production qsave_weekly_retrain --version <version> --activate``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Final

from flytekit import CronSchedule, Email, LaunchPlan, Resources, Slack, task, workflow
from flytekit.models.core.execution import WorkflowExecutionPhase

from qsave.ingest import IngestConfig
from qsave.recipe import Recipe
from qsave.slowfast import SamplerConfig
from tasks.images import CPU_IMAGE
from workflows.qsave import PipelineOutputs, qsave_pipeline

SNAPSHOT_URI_TEMPLATE: Final = os.environ.get(
    "QSAVE_SNAPSHOT_URI", "s3://qsave-data/snapshots/{date}/manifest.parquet"
)
"""Where the data team writes each weekly snapshot (a manifest with relative video paths beside it)."""

RETRAIN_CRON: Final = os.environ.get("QSAVE_RETRAIN_CRON", "0 3 * * 1")
NOTIFY_EMAILS: Final = [a.strip() for a in os.environ.get("QSAVE_NOTIFY_EMAILS", "").split(",") if a.strip()]
NOTIFY_SLACK: Final = [a.strip() for a in os.environ.get("QSAVE_NOTIFY_SLACK", "").split(",") if a.strip()]
"""Recipients; ``scripts/register.sh`` refuses to register without ``QSAVE_NOTIFY_EMAILS``."""

PRODUCTION_RECIPE: Final = Recipe(profile="qwen3-vl-8b")
TERMINAL: Final = [
    WorkflowExecutionPhase.SUCCEEDED,
    WorkflowExecutionPhase.FAILED,
    WorkflowExecutionPhase.TIMED_OUT,
]


def snapshot_uri(template: str, kickoff_time: datetime) -> str:
    """``template`` filled from ``kickoff_time``: ``{date}`` (``YYYY-MM-DD``), ``{year}``, ``{month}``,
    ``{day}``."""
    fields = {
        "date": kickoff_time.date().isoformat(),
        "year": f"{kickoff_time.year:04d}",
        "month": f"{kickoff_time.month:02d}",
        "day": f"{kickoff_time.day:02d}",
    }
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"snapshot URI template {template!r} cannot be filled ({exc!r}); use only the placeholders "
            f"{', '.join('{' + k + '}' for k in fields)}"
        ) from None


def notifications(emails: list[str], slack: list[str]) -> list[Email | Slack]:
    """Email and Slack notifications on success and failure, for the recipients that are set."""
    found: list[Email | Slack] = []
    if emails:
        found.append(Email(phases=TERMINAL, recipients_email=emails))
    if slack:
        found.append(Slack(phases=TERMINAL, recipients_email=slack))
    return found


@task(container_image=CPU_IMAGE, requests=Resources(cpu="500m", mem="256Mi"))
def snapshot_data(kickoff_time: datetime, uri_template: str) -> IngestConfig:
    """The ingest config of the snapshot this scheduled run trains on."""
    return IngestConfig(source="manifest", uri=snapshot_uri(uri_template, kickoff_time))


@workflow
def qsave_retrain(
    kickoff_time: datetime,
    snapshot_uri_template: str = SNAPSHOT_URI_TEMPLATE,
    recipe: Recipe = PRODUCTION_RECIPE,
    sampler: SamplerConfig | None = None,
    n_shards: int = 32,
    min_srcc: float = 0.5,
    min_plcc: float = 0.5,
    max_regression: float = 0.02,
) -> PipelineOutputs:
    """The pipeline on the snapshot of ``kickoff_time``'s date, with the production recipe and its profile's
    sampler (or ``sampler``).

    A passing model becomes ``challenger``; people promote it with ``qsave registry``.
    """
    data = snapshot_data(kickoff_time=kickoff_time, uri_template=snapshot_uri_template)
    return qsave_pipeline(
        data=data,
        sampler=sampler,
        n_shards=n_shards,
        recipe=recipe,
        min_srcc=min_srcc,
        min_plcc=min_plcc,
        max_regression=max_regression,
    )


qsave_local = LaunchPlan.get_or_create(qsave_pipeline, name="qsave_local")

qsave_weekly_retrain = LaunchPlan.get_or_create(
    qsave_retrain,
    name="qsave_weekly_retrain",
    schedule=CronSchedule(schedule=RETRAIN_CRON, kickoff_time_input_arg="kickoff_time"),
    notifications=notifications(NOTIFY_EMAILS, NOTIFY_SLACK),
)
