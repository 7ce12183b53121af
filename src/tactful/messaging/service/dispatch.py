"""Dispatch: due deliveries go out in batches, one provider per batch, with async I/O.

For each group of a batch: re-check the policy for the whole group at once, render, commit
``sending``; submit (concurrently, within the provider's rate limit); commit the outcomes.
While a group is on the wire the next one is prepared and the previous one recorded. A
dispatcher that dies between the two commits leaves ``sending`` rows: the retry of its job
(or the ``messaging.recover`` monitor) marks them ``unknown`` and never resends them,
unless the provider honours idempotency keys, in which case resending with the same key is
safe.

What is the same for every recipient is done once: templates are compiled per version
(``compiled``), senders, brands and blocks are read once per run, and the rows of a group
are read and written with one statement each.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.metrics import DISPATCH_SECONDS
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.messaging import store
from tactful.messaging.channels import HTTP_KINDS, build_channel
from tactful.messaging.channels.base import (
    ACCEPTED,
    PERMANENT,
    TRANSIENT,
    Channel,
    OutboundMessage,
    Sender,
    SendResult,
)
from tactful.messaging.models import (
    BOUNCED,
    EXPIRED,
    FAILED,
    PLANNED,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    UNKNOWN,
    Delivery,
    MessageProvider,
    MessageTemplate,
    SenderIdentity,
)
from tactful.messaging.service.compiled import CompiledEmail, compiled_email
from tactful.messaging.service.deliveries import (
    cascade_after,
    contact_failed,
    queue_batches,
    record_events,
    retry_at,
)
from tactful.messaging.service.limits import limiter_for
from tactful.messaging.service.rendering import Rendered, render_part, renderer_for
from tactful.messaging.service.templates import (
    CONTEXT_COLUMNS,
    customer_context,
    layout_source,
)
from tactful.messaging.service.tracking import Links, links_for, track_html
from tactful.messaging.service.wire import render_email
from tactful.policy import service as policy
from tactful.tenancy.service import get_brand

log = structlog.get_logger("tactful.messaging")

# Deliveries committed as ``sending`` together. The next group is prepared and the previous
# one recorded while one is on the wire, so a crash can leave at most three groups unknown
# (never more than the job's deliveries). Groups are large: each costs about 7 ms of SQL
# whatever its size, and on a machine of two cores the work beside the wire hides little,
# because the threads waiting for the provider's answers wait for the interpreter lock too
# (docs/messaging.md, "Speed"). With 4 connections or more, a dispatch job (at most
# ``BATCH_SIZE`` = 1,000 deliveries) is one group.
MIN_GROUP = 16
GROUP_PER_CONNECTION = 250
MAX_SEND_ATTEMPTS = 6
STUCK_AFTER = timedelta(minutes=15)
ONE_CLICK = "List-Unsubscribe=One-Click"
# what a message's context holds for its recipient alone (the rest a send's recipients share)
RECIPIENT_KEYS = frozenset({"customer", "links", "message", "items"})


@dataclass(frozen=True)
class ProviderInfo:
    """What a dispatch run needs of a provider (read once, outside any session)."""

    id: int
    kind: str
    name: str
    config: dict[str, Any]
    concurrency: int
    rate_per_second: float | None
    version: str
    enabled: bool

    @classmethod
    def of(cls, row: MessageProvider) -> ProviderInfo:
        return cls(
            row.id,
            row.kind,
            row.name,
            dict(row.config),
            row.concurrency,
            row.rate_per_second,
            row.updated_at.isoformat(),
            row.enabled,
        )


PHASES = ("preparing", "sending", "recording")


@dataclass
class RunStats:
    """What one dispatch run did, and the seconds it spent in each of ``PHASES`` (in a run of
    several groups, preparing and recording run beside sending, so the three then add up to
    more than the run took)."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    unknown: int = 0
    resent: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


@dataclass
class _Caches:
    """Templates (compiled), layouts, blocks, brands and senders looked up once per run."""

    templates: dict[int, MessageTemplate] = field(default_factory=dict)
    layouts: dict[int, str | None] = field(default_factory=dict)
    compiled: dict[int, CompiledEmail | None] = field(default_factory=dict)
    blocks: dict[int, dict[str, str]] = field(default_factory=dict)
    brands: dict[int, dict[str, Any]] = field(default_factory=dict)
    senders: dict[int, Sender] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prepared:
    """A delivery and its rendered message (submitted once committed as ``sending``)."""

    row: Any  # the delivery's row as read (attribute access by column name)
    message: OutboundMessage


def dispatch(runtime: Runtime, *, ids: Sequence[int], provider_id: int | None) -> RunStats:
    """Send a batch of queued deliveries of one provider."""
    stats = RunStats()
    provider = None
    if provider_id is not None:
        with runtime.db.scope(readonly=True) as session:
            row = store.providers_by_id(session, [provider_id]).get(provider_id)
            provider = None if row is None else ProviderInfo.of(row)
    if provider is None or not provider.enabled:
        with runtime.db.scope() as session:
            for delivery in store.deliveries_for_update(session, ids):
                if delivery.status in (QUEUED, SENDING):
                    _fail(session, delivery, "the provider was removed or disabled", stats)
        return stats
    _run_to_end(_run(runtime, provider, list(ids), stats))
    for phase, seconds in stats.seconds.items():
        DISPATCH_SECONDS.labels(kind=provider.kind, phase=phase).inc(seconds)
    return stats


def _run_to_end(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on its own event loop, also when this thread already runs one (a
    caller inside async code): then on a thread of its own, in the caller's context."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(context.run, asyncio.run, coroutine).result()


async def _run(runtime: Runtime, provider: ProviderInfo, ids: list[int], stats: RunStats) -> None:
    runtime.signer  # noqa: B018 - load the signing secret before any transaction is open
    client = None
    if provider.kind in HTTP_KINDS:
        limits = httpx.Limits(max_connections=provider.concurrency * 2)
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), limits=limits)
    try:
        adapter = build_channel(
            provider_id=provider.id,
            kind=provider.kind,
            config=provider.config,
            concurrency=provider.concurrency,
            version=provider.version,
            client=client,
        )
        limiter = limiter_for(runtime, provider.id, provider.rate_per_second)
        caches = _Caches()
        size = group_size(provider.concurrency)
        groups = [ids[start : start + size] for start in range(0, len(ids), size)]

        def prepare(index: int) -> list[_Prepared]:
            if index >= len(groups):
                return []
            with stats.timing("preparing"):
                return _prepare(runtime, provider, adapter, groups[index], caches, stats)

        def record(done: tuple[list[_Prepared], list[SendResult]] | None) -> None:
            if done is not None:
                with stats.timing("recording"):
                    _record(runtime, *done, stats)

        def record_then_prepare(
            done: tuple[list[_Prepared], list[SendResult]] | None, index: int
        ) -> list[_Prepared]:
            record(done)
            return prepare(index)

        # While a group is on the wire, one worker thread commits the previous group's
        # outcomes and then prepares the next group, so the provider's connections never
        # wait for the database. The two transactions run one after the other, never
        # contending for locks (on SQLite the database's write lock).
        prepared = await _database(prepare, 0)
        done: tuple[list[_Prepared], list[SendResult]] | None = None
        for index in range(len(groups)):
            database = asyncio.ensure_future(_database(record_then_prepare, done, index + 1))
            try:
                with stats.timing("sending"):
                    results = await adapter.send_batch(
                        [p.message for p in prepared],
                        concurrency=provider.concurrency,
                        limiter=limiter,
                    )
            finally:
                following = await database
            done, prepared = (prepared, results), following
        if done is not None:
            await _database(record, done)
        await adapter.aclose()
    finally:
        if client is not None:
            await client.aclose()


# The threads that run dispatch runs' database work beside their event loops, kept for the
# process's life: threads started and joined for each run (``asyncio.to_thread`` on a new
# loop) cost about half a millisecond of every job. One per run at a time, so as many as a
# process runs jobs at once (``jobs.concurrency`` is at most 64); made only when needed.
_DATABASE_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dispatch-db")

_T = TypeVar("_T")


async def _database(work: Callable[..., _T], *args: Any) -> _T:
    """``work(*args)`` on a database thread, in this task's context."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, work, *args)
    return await asyncio.get_running_loop().run_in_executor(_DATABASE_THREADS, call)


def group_size(concurrency: int) -> int:
    """How many deliveries are in flight between two commits."""
    return max(MIN_GROUP, concurrency * GROUP_PER_CONNECTION)


def _prepare(
    runtime: Runtime,
    provider: ProviderInfo,
    adapter: Channel,
    ids: list[int],
    caches: _Caches,
    stats: RunStats,
) -> list[_Prepared]:
    """Re-check, render and commit ``sending`` for a group; returns what to submit, built
    for the wire as far as the adapter can (``Channel.encode``).

    Reading, the policy re-check and rendering run before the write transaction, which
    only records the outcome for deliveries whose status is still the one read (another
    dispatcher or a cancellation may have moved them meanwhile). On SQLite every writer
    of the process waits for that transaction, so it holds the write lock for the marking
    alone, not for the rendering."""
    now = clock.now()
    plan = _Plan()
    with runtime.db.scope(readonly=True) as session:
        candidates = []
        for row in store.delivery_rows(session, ids):
            plan.read[row.id] = row.status
            if row.status == SENDING:
                # left by a dispatcher that died mid-send: it may have reached the provider
                if not adapter.capabilities.idempotency_keys:
                    plan.unknown.append(row.id)
                    continue
            elif row.status != QUEUED:
                continue
            elif row.expires_at is not None and row.expires_at < now:
                plan.expired.append(row.id)
                continue
            candidates.append(row)
        if candidates:
            _render_group(session, runtime, provider, candidates, caches, plan)
    touched = plan.touched()
    if not touched:
        return []
    with runtime.db.scope() as session:
        current = store.statuses_for_update(session, touched)

        def unchanged(delivery_id: int) -> bool:
            return current.get(delivery_id) == plan.read[delivery_id]

        for delivery_id in filter(unchanged, plan.unknown):
            _unknown(session, delivery_id, now)
            stats.unknown += 1
        for delivery_id in filter(unchanged, plan.expired):
            _finish(session, _orm(session, delivery_id), EXPIRED, "expired", "expired", now)
        for delivery_id, reason in plan.suppressed:
            if unchanged(delivery_id):
                _finish(session, _orm(session, delivery_id), SUPPRESSED, reason, "suppressed", now)
                stats.suppressed += 1
        for delivery_id, error in plan.failed:
            if unchanged(delivery_id):
                _fail(session, _orm(session, delivery_id), error, stats)
        ready = [p for p in plan.ready if unchanged(p.row.id)]
        stats.resent += sum(1 for p in ready if p.row.status == SENDING)
        store.mark_sending(
            session,
            [
                {
                    "b_id": p.row.id,
                    "b_address": p.message.address,
                    "b_subject": (p.message.subject or p.message.title or p.message.text)[:500],
                }
                for p in ready
            ],
            now,
        )
    # built once committed, so the transaction holds its locks no longer than it must
    return [_Prepared(p.row, adapter.encode(p.message)) for p in ready]


@dataclass
class _Plan:
    """What the read part of ``_prepare`` decided for each delivery of a group."""

    read: dict[int, str] = field(default_factory=dict)  # the status each was read in
    unknown: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    ready: list[_Prepared] = field(default_factory=list)

    def touched(self) -> list[int]:
        """The deliveries whose status the write part changes."""
        return [
            *self.unknown,
            *self.expired,
            *(i for i, _ in self.suppressed),
            *(i for i, _ in self.failed),
            *(p.row.id for p in self.ready),
        ]


def _render_group(
    session: Session,
    runtime: Runtime,
    provider: ProviderInfo,
    candidates: list[Any],
    caches: _Caches,
    plan: _Plan,
) -> None:
    """The policy's verdict for each candidate, and its message if it may go."""
    verdicts = policy.recheck_many(session, [r.decision_id for r in candidates])
    people = customers.profiles_by_ids(
        session,
        workspace_id=candidates[0].workspace_id,
        customer_ids=[r.customer_id for r in candidates],
        columns=CONTEXT_COLUMNS,
    )
    for row in candidates:
        reason, address = verdicts[row.decision_id]
        if reason is not None:
            plan.suppressed.append((row.id, reason))
            continue
        try:
            message = _message(session, runtime, provider, row, people, address, caches)
        except SQLAlchemyError:
            raise
        except Exception as exc:  # a template that cannot render for this customer
            plan.failed.append((row.id, f"rendering failed: {exc}"))
            continue
        plan.ready.append(_Prepared(row, message))


def _orm(session: Session, delivery_id: int) -> Delivery:
    """The delivery as an ORM object (for the rare paths that change more than a status)."""
    delivery = session.get(Delivery, delivery_id)
    assert delivery is not None
    return delivery


def _unknown(session: Session, delivery_id: int, now: datetime) -> None:
    delivery = _orm(session, delivery_id)
    delivery.status, delivery.updated_at = UNKNOWN, now
    delivery.error = "the dispatcher stopped while sending; not resent"


def _template(session: Session, row: Any, caches: _Caches) -> MessageTemplate:
    template = caches.templates.get(int(row.template_id or 0))
    if template is None:
        template = session.get(MessageTemplate, row.template_id)
        assert template is not None
        caches.templates[template.id] = template
        caches.layouts[template.id] = layout_source(session, template)
    if row.brand_id not in caches.blocks:
        caches.blocks[row.brand_id] = store.blocks(session, row.workspace_id, row.brand_id)
        brand = get_brand(session, workspace_id=row.workspace_id, brand_id=row.brand_id)
        caches.brands[row.brand_id] = {"id": brand.id, "name": brand.name}
    if template.id not in caches.compiled and "email" in template.parts:
        blocks = caches.blocks[row.brand_id]
        layout = caches.layouts[template.id]
        caches.compiled[template.id] = compiled_email(
            renderer_for(blocks),
            template.parts["email"],
            layout=layout,
            blocks=blocks,
        )
    return template


def _message(
    session: Session,
    runtime: Runtime,
    provider: ProviderInfo,
    row: Any,
    people: dict[int, Any],
    address: str | None,
    caches: _Caches,
) -> OutboundMessage:
    template = _template(session, row, caches)
    sender = caches.senders.get(int(row.sender_id or 0))
    if sender is None and row.sender_id is not None:
        found = session.get(SenderIdentity, row.sender_id)
        assert found is not None
        sender = caches.senders[found.id] = Sender(found.address, found.name, found.reply_to)
    public_url = runtime.settings.public_url
    links = links_for(
        runtime.signer,
        public_url,
        delivery_id=row.id,
        workspace_id=row.workspace_id,
        brand_id=row.brand_id,
        customer_id=row.customer_id,
    )
    customer = people.get(row.customer_id)
    channel = str(row.channel)
    context = {
        **row.context,
        "customer": customer_context(customer) if customer else {},
        "brand": caches.brands[row.brand_id],
        "links": links.as_context(),
        "message": {"id": row.id, "channel": channel},
    }
    if row.bundle_key and row.bundle_leader_id is None:
        items = policy.bundle_items(session, row.decision_id)
        if items:
            context["items"] = items
    rendered, html_body = _render(template, channel, context, caches, links)
    headers: dict[str, str] = {}
    if channel == "email" and row.message_class != "transactional":
        headers["List-Unsubscribe"] = f"<{links.unsubscribe}>"
        headers["List-Unsubscribe-Post"] = ONE_CLICK
    return OutboundMessage(
        delivery_id=row.id,
        channel=channel,
        address=address or str(row.address),
        idempotency_key=f"tactful-{row.id}-{row.decision_id}",
        sender=sender,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        html_body=html_body,
        title=rendered.title,
        headers=headers,
        data=rendered.data,
        status_callback=f"{public_url}/v1/messaging/webhooks/{provider.id}",
    )


def _render(
    template: MessageTemplate,
    channel: str,
    context: dict[str, Any],
    caches: _Caches,
    links: Links,
) -> tuple[Rendered, bytes | None]:
    """The message with its links tracked, and the HTML part's encoded body when it was
    put together from pieces (``wire``)."""
    compiled = caches.compiled.get(template.id) if channel == "email" else None
    if compiled is not None:
        # recipients of one send share their context but for their own variables
        shared = orjson.dumps(
            {k: v for k, v in context.items() if k not in RECIPIENT_KEYS},
            option=orjson.OPT_SORT_KEYS,
        )
        return render_email(compiled, context, shared=shared, links=links)
    part = template.parts.get(channel)
    if part is None:
        raise ValueError(f"template {template.id} has no {channel} part")
    blocks = caches.blocks[template.brand_id]
    rendered = render_part(
        renderer_for(blocks), channel, part, context, layout=caches.layouts[template.id]
    )
    if rendered.html is not None:
        rendered.html = track_html(rendered.html, links)
    return rendered, None


def _finish(
    session: Session, delivery: Delivery, status: str, reason: str, ledger: str, now: Any
) -> None:
    delivery.status, delivery.reason, delivery.updated_at = status, reason, now
    policy.record_status(session, delivery.decision_id, ledger)
    if delivery.steps and cascade_after(delivery.steps, delivery.step) is not None:
        delivery.cascade_at = now


def _fail(session: Session, delivery: Delivery, error: str, stats: RunStats) -> None:
    now = clock.now()
    delivery.error = error[:2000]
    delivery.failed_at = now
    _finish(session, delivery, FAILED, "provider_error", "failed", now)
    stats.failed += 1


def _record(
    runtime: Runtime, prepared: list[_Prepared], results: list[SendResult], stats: RunStats
) -> None:
    """Commit what the provider answered for each submission."""
    if not prepared:
        return
    now = clock.now()
    with runtime.db.scope() as session:
        current = store.statuses_for_update(session, [p.row.id for p in prepared])
        sent: list[dict[str, Any]] = []
        sent_decisions: list[int] = []
        sent_events: list[tuple[Any, str, datetime, dict[str, Any]]] = []
        call_tasks = []
        failures: list[tuple[Any, SendResult]] = []
        for item, result in zip(prepared, results, strict=True):
            row, message = item.row, item.message
            if current.get(row.id) not in (SENDING, UNKNOWN):
                continue
            if result.outcome == ACCEPTED:
                after = cascade_after(row.steps, row.step) if row.steps else None
                sent.append(
                    {
                        "b_id": row.id,
                        "b_message_id": result.provider_message_id,
                        "b_cascade_at": now + timedelta(seconds=after) if after else None,
                    }
                )
                sent_decisions.append(row.decision_id)
                sent_events.append((row, SENT, now, {}))
                if row.channel == "call":
                    call_tasks.append(_call_task(row, message, now))
                stats.sent += 1
            else:
                failures.append((row, result))
        store.mark_sent(session, sent, now)
        policy.record_statuses(session, sent_decisions, "sent")
        if failures:
            # the ledger rows are read once and held, so reporting each status costs no query
            ledger = store.load_decisions(session, [row.decision_id for row, _r in failures])
            for row, result in failures:
                _record_failure(session, _orm(session, row.id), result, stats, now)
            del ledger
        store.add_call_tasks(session, call_tasks)
        record_events(session, sent_events)


def _record_failure(
    session: Session, delivery: Delivery, result: SendResult, stats: RunStats, now: datetime
) -> None:
    delivery.updated_at = now
    if result.outcome == TRANSIENT and delivery.attempts < MAX_SEND_ATTEMPTS:
        delivery.status, delivery.error = PLANNED, result.error
        delivery.send_at = retry_at(delivery.attempts, result.retry_after, now)
        stats.retried += 1
    elif result.outcome in (TRANSIENT, PERMANENT):
        bounced = result.contact_status == "bounced"
        delivery.error = (result.error or "")[:2000]
        delivery.failed_at = now
        _finish(
            session,
            delivery,
            BOUNCED if bounced else FAILED,
            "bounced" if bounced else "provider_error",
            "failed",
            now,
        )
        if bounced:
            record_events(session, [(delivery, BOUNCED, now, {"reason": result.error})])
        if result.contact_status:
            contact_failed(
                session,
                delivery,
                result.contact_status,
                result.error or result.contact_status,
                actor=f"provider:{delivery.provider_id}",
            )
        stats.failed += 1
    else:
        delivery.status, delivery.error = UNKNOWN, result.error
        stats.unknown += 1


def _call_task(row: Any, message: OutboundMessage, now: datetime) -> dict[str, Any]:
    return {
        "workspace_id": row.workspace_id,
        "brand_id": row.brand_id,
        "customer_id": row.customer_id,
        "delivery_id": row.id,
        "phone": message.address,
        "script": message.text,
        "context": {k: v for k, v in row.context.items() if k != "links"},
        "status": "open",
        "outcome": None,
        "note": None,
        "assignee": None,
        "due_at": now,
        "created_at": now,
        "completed_at": None,
        "completed_by": None,
    }


def queue_due(session: Session, *, limit: int = 20_000) -> int:
    """Hand planned deliveries whose time has come to dispatch jobs (a monitor's work)."""
    return release(session, limit=limit)


def release(session: Session, *, id_range: tuple[int, int] | None = None, limit: int) -> int:
    """Queue due planned deliveries (optionally those with ids in ``id_range``) in dispatch
    jobs written in the same transaction; returns how many jobs were written."""
    now = clock.now()
    rows = store.due_deliveries(session, now, limit, id_range=id_range)
    store.mark_queued(session, [r[0] for r in rows], now)
    return queue_batches(session, rows)


def recover_stuck(session: Session, *, limit: int = 1000) -> int:
    """``sending`` rows whose dispatch job is long gone become ``unknown`` (never resent)."""
    rows = store.stuck_sending(session, clock.now() - STUCK_AFTER, limit)
    for row in rows:
        row.status, row.updated_at = UNKNOWN, clock.now()
        row.error = "the dispatcher stopped while sending; not resent"
    return len(rows)


__all__ = ["SENT", "RunStats", "dispatch", "queue_due", "recover_stuck", "release"]
