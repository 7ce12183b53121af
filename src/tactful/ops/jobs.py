"""Housekeeping monitors of the platform itself."""

from __future__ import annotations

from datetime import timedelta

from tactful.core.jobs import queue
from tactful.core.jobs.context import MonitorContext
from tactful.core.jobs.registry import monitor


@monitor("ops.prune_jobs", every=timedelta(hours=1))
def prune_finished_jobs(ctx: MonitorContext) -> None:
    """Delete finished jobs after the configured retention (dead jobs stay until retried)."""
    days = ctx.runtime.settings.jobs.keep_done_days
    queue.prune_done(ctx.session, older_than=timedelta(days=days))
