"""Metrics jobs: refreshes after loads (a few loads each), profile syncs after profile,
consent and contact changes, merges, and the daily rebuild that moves the windows along."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import timedelta

from tactful.core import clock
from tactful.core.jobs import queue
from tactful.core.jobs.context import JobContext, MonitorContext, RetryLater
from tactful.core.jobs.queue import enqueue, enqueue_coalesced
from tactful.core.jobs.registry import job, monitor
from tactful.metrics import service

REFRESH_JOB = "metrics.refresh"
SYNC_CUSTOMER_JOB = "metrics.sync_customer"
SYNC_CHANGED_JOB = "metrics.sync_changed"
APPLY_MERGE_JOB = "metrics.apply_merge"
REBUILD_JOB = service.REBUILD_JOB
REBUILD_EVERY = timedelta(days=1)
# a load's refresh waits this long, so that it also covers the loads that follow it
REFRESH_DELAY = timedelta(seconds=2)


def _recording(ctx: JobContext, work: Callable[[], object]) -> None:
    """Run ``work``; a failure is kept on the workspace's status before the job retries."""
    try:
        work()
    except RetryLater:
        raise
    except Exception as exc:
        with ctx.runtime.db.scope() as session:
            service.record_failure(
                session,
                workspace_id=int(ctx.payload["workspace_id"]),
                error=f"{ctx.name}: {''.join(traceback.format_exception_only(exc)).strip()}",
            )
        raise


@job(REFRESH_JOB, max_attempts=20, delay=REFRESH_DELAY)
def refresh(ctx: JobContext) -> None:
    """Recompute the metrics of the customers warehouse loads touched: this load's and
    those of the loads since, whose refresh jobs this run does too (a refresh costs about
    the same for one customer as for thousands, and loads come several a second)."""
    workspace_id = int(ctx.payload["workspace_id"])
    with ctx.runtime.db.scope(readonly=True) as reading:  # the write lock is not taken yet
        folded = [
            (job_id, payload)
            for job_id, payload in queue.queued(reading, REFRESH_JOB, exclude=ctx.job_id)
            if int(payload["workspace_id"]) == workspace_id
        ]
    customer_ids = {
        int(c)
        for payload in (ctx.payload, *(p for _, p in folded))
        for c in payload.get("customer_ids") or []
    }
    _recording(
        ctx,
        lambda: service.refresh_metrics(
            ctx.runtime, ctx.session, workspace_id=workspace_id, customer_ids=sorted(customer_ids)
        ),
    )
    queue.finish_queued(ctx.session, [job_id for job_id, _ in folded])


# The profile syncs manage their own transactions (reads, then the warehouse, then a short
# write): see service.sync_profiles.
@job(SYNC_CUSTOMER_JOB, max_attempts=20, transactional=False)
def sync_customer(ctx: JobContext) -> None:
    """Copy one customer's profile and reachability after a consent or contact change."""
    _recording(
        ctx,
        lambda: service.sync_profiles(
            ctx.runtime,
            workspace_id=int(ctx.payload["workspace_id"]),
            customer_ids=[int(ctx.payload["customer_id"])],
        ),
    )


@job(SYNC_CHANGED_JOB, max_attempts=20, transactional=False)
def sync_changed(ctx: JobContext) -> None:
    """Copy the profiles updated since the last sync."""
    _recording(
        ctx,
        lambda: service.sync_changed_profiles(
            ctx.runtime, workspace_id=int(ctx.payload["workspace_id"])
        ),
    )


@job(APPLY_MERGE_JOB, max_attempts=30, transactional=False)
def apply_merge(ctx: JobContext) -> None:
    """After a merge (or its undoing) reaches the warehouse, both customers' profiles and
    metrics follow."""
    payload = ctx.payload
    workspace_id = int(payload["workspace_id"])
    survivor, merged = int(payload["survivor_id"]), int(payload["merged_id"])
    mapped = service.canonical_ids(
        ctx.runtime.warehouse, workspace_id=workspace_id, customer_ids=[merged]
    )
    expected = survivor if payload["event"] == "customers.merged" else merged
    if mapped != [expected]:
        raise RetryLater(5, "the merge has not reached the warehouse yet")

    def work() -> None:
        service.sync_profiles(
            ctx.runtime, workspace_id=workspace_id, customer_ids=[survivor, merged]
        )
        with ctx.runtime.db.scope() as session:
            service.refresh_metrics(
                ctx.runtime, session, workspace_id=workspace_id, customer_ids=[survivor, merged]
            )

    _recording(ctx, work)


@job(REBUILD_JOB, max_attempts=5, transactional=False)
def rebuild(ctx: JobContext) -> None:
    """Recompute every customer's metrics in a workspace (and resync every profile when asked)."""
    workspace_id = int(ctx.payload["workspace_id"])

    def work() -> None:
        if ctx.payload.get("profiles"):
            service.sync_profiles(ctx.runtime, workspace_id=workspace_id)
        with ctx.runtime.db.scope() as session:  # computed first, written at the end
            service.rebuild_metrics(ctx.runtime, session, workspace_id=workspace_id)

    _recording(ctx, work)


@monitor("metrics.sync_profiles", every=timedelta(seconds=30))
def watch_profiles(ctx: MonitorContext) -> None:
    """Profiles change through many paths (identify calls, imports, merges): sweep them."""
    for workspace_id in service.workspaces(ctx.session):
        enqueue_coalesced(
            ctx.session,
            SYNC_CHANGED_JOB,
            {"workspace_id": workspace_id},
            key=f"{SYNC_CHANGED_JOB}:{workspace_id}",
        )


@monitor("metrics.daily_rebuild", every=timedelta(hours=1))
def daily_rebuild(ctx: MonitorContext) -> None:
    """Windows ("last 365 days") move every day: rebuild each workspace once a day."""
    for workspace_id in service.workspaces(ctx.session):
        state = service.status(ctx.session, workspace_id=workspace_id)
        last = state.metrics_rebuilt_at
        if last is None or clock.now() - last >= REBUILD_EVERY:
            enqueue(
                ctx.session,
                REBUILD_JOB,
                {"workspace_id": workspace_id},
                key=f"{REBUILD_JOB}:{workspace_id}:{ctx.now.date().isoformat()}",
            )
