"""Event jobs: the resolver and the loader (coalescing singletons), merges reaching the
warehouse, consent changes recorded as events, uploaded file imports, and inbox
housekeeping."""

from __future__ import annotations

from datetime import timedelta

from tactful.core import clock
from tactful.core.errors import TactfulError
from tactful.core.jobs.context import JobContext, MonitorContext, PermanentFailure
from tactful.core.jobs.queue import enqueue_coalesced
from tactful.core.jobs.registry import DECIDING, job, monitor
from tactful.events import loader, resolver, service
from tactful.events.ingest import RESOLVE_JOB
from tactful.events.warehouse import apply_alias

INBOX_RETENTION = timedelta(days=7)


# the head of every trigger (journeys react to resolved events); one coalesced job at a time,
# so it cannot crowd anything out
@job(RESOLVE_JOB, max_attempts=20, priority=DECIDING)
def resolve(ctx: JobContext) -> None:
    """Resolve a batch of inbox rows; ask for another run while rows remain."""
    outcome = resolver.resolve_pending(ctx.session)
    if outcome.more:
        enqueue_coalesced(ctx.session, RESOLVE_JOB, key=RESOLVE_JOB)


@job(resolver.LOAD_JOB, max_attempts=20, transactional=False, delay=loader.LOAD_DELAY)
def load(ctx: JobContext) -> None:
    """Copy resolved rows to the warehouse; run again at once while rows remain."""
    outcome = loader.load_pending(ctx.runtime)
    if outcome.more:
        with ctx.runtime.db.scope() as session:
            enqueue_coalesced(session, resolver.LOAD_JOB, key=resolver.LOAD_JOB, run_at=clock.now())


@job("events.apply_merge", transactional=False)
def apply_merge(ctx: JobContext) -> None:
    """History of a merged customer follows the survivor in the warehouse."""
    payload = ctx.payload
    survivor = payload["survivor_id"] if payload["event"] == "customers.merged" else None
    apply_alias(
        ctx.runtime.warehouse,
        workspace_id=int(payload["workspace_id"]),
        merged_id=int(payload["merged_id"]),
        survivor_id=None if survivor is None else int(survivor),
    )


@job("events.record_consent_change")
def record_consent_change(ctx: JobContext) -> None:
    """Unsubscribes and other consent changes become events (metrics, segments, reports)."""
    service.record_consent_change(ctx.session, ctx.payload)


@job(service.IMPORT_JOB, max_attempts=3, transactional=False)
def import_file(ctx: JobContext) -> None:
    """Run an uploaded file's import; a retry after a crash imports only what is missing."""
    try:
        service.run_import(ctx.runtime, run_id=int(ctx.payload["import_id"]), again=ctx.attempt > 1)
    except TactfulError as exc:  # the file or its mapping is wrong: retrying cannot help
        raise PermanentFailure(exc.message) from exc


@monitor("events.pump", every=timedelta(seconds=5))
def pump(ctx: MonitorContext) -> None:
    """Keep the resolver and loader moving even if a wake-up was missed."""
    enqueue_coalesced(ctx.session, RESOLVE_JOB, key=RESOLVE_JOB)
    enqueue_coalesced(ctx.session, resolver.LOAD_JOB, key=resolver.LOAD_JOB)


@monitor("events.prune_inbox", every=timedelta(hours=1))
def prune_inbox(ctx: MonitorContext) -> None:
    """Loaded inbox rows are kept a week for de-duplication, then forgotten."""
    loader.prune(ctx.session, keep=INBOX_RETENTION)
