"""Campaign jobs: start a due run, send a wave, check a plan checkpoint; monitors find due
runs and checkpoints. Each job is keyed and transactional: its writes commit with its
completion, so a crash and a retry never act twice."""

from __future__ import annotations

from datetime import timedelta

from tactful.campaigns import service
from tactful.core.jobs.context import JobContext, MonitorContext
from tactful.core.jobs.registry import job, monitor


@job(service.START_JOB, max_attempts=10)
def start_run(ctx: JobContext) -> None:
    """Take a due run's audience, record its recipients and queue its waves."""
    service.start_run(ctx.session, run_id=int(ctx.payload["run_id"]))


@job(service.WAVE_JOB, max_attempts=10)
def send_wave(ctx: JobContext) -> None:
    """Hand one wave to the contact policy and plan its deliveries."""
    service.send_wave(ctx.session, wave_id=int(ctx.payload["wave_id"]))


@job(service.CHECK_JOB, max_attempts=10)
def check_checkpoint(ctx: JobContext) -> None:
    """Measure a due checkpoint; a missed one sends its dearer channel to non-converters."""
    service.check_checkpoint(
        ctx.runtime, ctx.session, checkpoint_id=int(ctx.payload["checkpoint_id"])
    )


@monitor("campaigns.due_runs", every=timedelta(seconds=10))
def due_runs(ctx: MonitorContext) -> None:
    """One keyed start job per run whose time has come."""
    service.queue_due_runs(ctx.session)


@monitor("campaigns.checkpoints", every=timedelta(minutes=1))
def checkpoints(ctx: MonitorContext) -> None:
    """One keyed job per plan checkpoint whose time has come."""
    service.queue_due_checkpoints(ctx.session)
