"""Segment jobs: refreshes (manual, scheduled, continuous after metric changes)."""

from __future__ import annotations

from datetime import timedelta

from tactful.core.jobs.context import JobContext, MonitorContext
from tactful.core.jobs.registry import job, monitor
from tactful.segments import memberships

CONTINUOUS_JOB = "segments.refresh_continuous"


@job(memberships.REFRESH_JOB, max_attempts=10)
def refresh(ctx: JobContext) -> None:
    """Refresh one segment's memberships (a failure is recorded on the segment)."""
    segment_id = int(ctx.payload["segment_id"])
    workspace_id = memberships.workspace_of(ctx.session, segment_id)
    if workspace_id is None:
        return  # deleted meanwhile
    memberships.refresh_segment(
        ctx.runtime, ctx.session, workspace_id=workspace_id, segment_id=segment_id
    )


@job(CONTINUOUS_JOB)
def refresh_continuous(ctx: JobContext) -> None:
    """Profiles or metrics changed: refresh the workspace's continuous segments."""
    memberships.queue_continuous(ctx.session, workspace_id=int(ctx.payload["workspace_id"]))


@monitor("segments.schedule", every=timedelta(minutes=1))
def schedule(ctx: MonitorContext) -> None:
    """Enqueue the scheduled segments whose refresh time has come."""
    memberships.queue_due(ctx.session)
