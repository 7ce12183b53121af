"""Journey jobs: triggers (resolved events, segment changes, tier changes, date scans), the
advance of customers whose wait ended, and webhook calls; monitors for due waits and dates."""

from __future__ import annotations

from datetime import timedelta

from tactful.core.jobs.context import JobContext, MonitorContext, PermanentFailure
from tactful.core.jobs.queue import enqueue
from tactful.core.jobs.registry import DECIDING, job, monitor
from tactful.journeys import service

DATES_JOB = "journeys.scan_dates"
DATES_EVERY = timedelta(minutes=5)
# waits ending in one monitor run that become advance jobs (the rest wait for the next run)
DUE_PER_RUN = 20_000


class WebhookUnanswered(Exception):
    """The receiver did not take the call this time; the job runner retries with backoff."""


@job("journeys.on_events", max_attempts=20, priority=DECIDING)
def on_events(ctx: JobContext) -> None:
    """A resolved batch of events: entries into event-triggered journeys, awaited events,
    goals."""
    service.on_events(
        ctx.runtime,
        ctx.session,
        workspace_id=int(ctx.payload["workspace_id"]),
        seq_from=int(ctx.payload["seq_from"]),
        seq_to=int(ctx.payload["seq_to"]),
    )


@job("journeys.on_segment", max_attempts=20)
def on_segment(ctx: JobContext) -> None:
    """A segment refresh: entries on entering (or leaving), exits on leaving."""
    payload = ctx.payload
    service.on_segment(
        ctx.runtime,
        ctx.session,
        workspace_id=int(payload["workspace_id"]),
        segment_id=int(payload["segment_id"]),
        refresh=int(payload["refresh"]),
        entered=[int(c) for c in payload.get("entered", [])],
        exited=[int(c) for c in payload.get("exited", [])],
    )


@job("journeys.on_tier_change", max_attempts=20)
def on_tier_change(ctx: JobContext) -> None:
    """A loyalty tier change: entries into journeys triggered by it."""
    service.on_tier_change(ctx.runtime, ctx.session, payload=ctx.payload)


@job(DATES_JOB, max_attempts=10)
def scan_dates(ctx: JobContext) -> None:
    """Entries into one date-triggered journey for customers whose day has come."""
    service.scan_dates(ctx.runtime, ctx.session, journey_id=int(ctx.payload["journey_id"]))


@job(service.ADVANCE_JOB, max_attempts=20, priority=DECIDING)
def advance(ctx: JobContext) -> None:
    """Move a batch of customers whose wait ended (their step's effect commits with it)."""
    run = service.Run(ctx.runtime, ctx.session)
    service.advance(run, [(int(i), int(v)) for i, v in ctx.payload["items"]])


@job(service.WEBHOOK_JOB, transactional=False, max_attempts=8)
def webhook(ctx: JobContext) -> None:
    """Call a webhook step's URL; retried with backoff while the receiver fails."""
    result = service.call_webhook(
        ctx.runtime,
        url=str(ctx.payload["url"]),
        body=str(ctx.payload["body"]),
        idempotency_key=str(ctx.payload["idempotency_key"]),
    )
    if result.ok:
        return
    if result.retry:
        raise WebhookUnanswered(result.error)
    raise PermanentFailure(result.error)


@monitor("journeys.due", every=timedelta(seconds=1))
def due(ctx: MonitorContext) -> None:
    """Customers whose wait ended (or whose awaited event did not come in time) are queued,
    a keyed advance job per batch."""
    service.queue_due(ctx.session, now=ctx.now, limit=DUE_PER_RUN)


@monitor("journeys.dates", every=DATES_EVERY)
def dates(ctx: MonitorContext) -> None:
    """One keyed scan per date-triggered journey and five minutes."""
    slot = int(ctx.now.timestamp() // DATES_EVERY.total_seconds())
    for journey in service.date_journeys(ctx.session):
        enqueue(
            ctx.session,
            DATES_JOB,
            {"journey_id": journey.id},
            key=f"{DATES_JOB}:{journey.id}:{slot}",
        )
