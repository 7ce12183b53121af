"""Messaging jobs: dispatch batches, the due-delivery pump, bulk sends' releases, recovery
of deliveries caught mid-send, and cascade fall-through."""

from __future__ import annotations

from datetime import timedelta

from tactful.core.jobs.context import JobContext, MonitorContext
from tactful.core.jobs.queue import enqueue
from tactful.core.jobs.registry import SENDING, job, monitor
from tactful.messaging import service

CASCADE_JOB = "messaging.cascade"


@job(
    service.DISPATCH_JOB,
    transactional=False,
    max_attempts=10,
    priority=SENDING,
    own_process=True,
)
def dispatch(ctx: JobContext) -> None:
    """Send one batch of queued deliveries (manages its own transactions: ``sending`` is
    committed before each provider call, the outcome after)."""
    service.dispatch(
        ctx.runtime,
        ids=[int(i) for i in ctx.payload["ids"]],
        provider_id=ctx.payload.get("provider_id"),
    )


@monitor("messaging.queue_due", every=timedelta(seconds=1))
def queue_due(ctx: MonitorContext) -> None:
    """Planned deliveries whose time has come go to dispatch jobs."""
    service.queue_due(ctx.session)


@job(service.RELEASE_JOB, priority=SENDING)
def release(ctx: JobContext) -> None:
    """Hand the due planned deliveries of an id range (a bulk send's) to dispatch jobs."""
    service.release(
        ctx.session,
        id_range=(int(ctx.payload["first"]), int(ctx.payload["last"])),
        limit=2 * service.RELEASE_SIZE,
    )


@monitor("messaging.recover", every=timedelta(minutes=1))
def recover(ctx: MonitorContext) -> None:
    """Deliveries left in ``sending`` by a dispatcher that is gone become ``unknown``."""
    service.recover_stuck(ctx.session)


@monitor("messaging.cascades", every=timedelta(seconds=30))
def cascades(ctx: MonitorContext) -> None:
    """One keyed job per delivery whose cascade time-out has passed."""
    for delivery_id in service.due_cascades(ctx.session):
        enqueue(
            ctx.session,
            CASCADE_JOB,
            {"delivery_id": delivery_id},
            key=f"{CASCADE_JOB}:{delivery_id}",
        )


@job(CASCADE_JOB)
def cascade(ctx: JobContext) -> None:
    """Fall through to the next channel of a cascade."""
    service.fall_through(ctx.session, delivery_id=int(ctx.payload["delivery_id"]))
