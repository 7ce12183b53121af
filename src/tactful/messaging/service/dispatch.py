"""Dispatch: due deliveries go out in batches, one provider per batch, with async I/O.

For each small group of a batch: re-check the policy, render, commit ``sending``; submit
(concurrently, within the provider's rate limit); commit each outcome. A dispatcher that
dies between the two commits leaves ``sending`` rows: the retry of its job (or the
``messaging.recover`` monitor) marks them ``unknown`` and never resends them, unless the
provider honours idempotency keys, in which case resending with the same key is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.models import Customer
from tactful.messaging import store
from tactful.messaging.channels import build_channel
from tactful.messaging.channels.base import (
    ACCEPTED,
    PERMANENT,
    TRANSIENT,
    Channel,
    OutboundMessage,
    Sender,
    SendResult,
    limiter_for,
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
from tactful.messaging.service.deliveries import (
    cascade_after,
    contact_failed,
    queue_batches,
    record_events,
    retry_at,
)
from tactful.messaging.service.templates import customer_context, layout_source, render_template
from tactful.messaging.service.tracking import links_for, track_html
from tactful.policy import service as policy
from tactful.tenancy.service import get_brand

log = structlog.get_logger("tactful.messaging")

# Deliveries committed as ``sending`` together. The next group is prepared while one is on
# the wire, so a crash can leave at most two groups unknown.
MIN_GROUP = 8
MAX_SEND_ATTEMPTS = 6
STUCK_AFTER = timedelta(minutes=15)
ONE_CLICK = "List-Unsubscribe=One-Click"


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


@dataclass
class RunStats:
    """What one dispatch run did."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    unknown: int = 0
    resent: int = 0


@dataclass
class _Caches:
    """Templates, layouts, blocks and brands looked up once per run."""

    templates: dict[int, MessageTemplate] = field(default_factory=dict)
    layouts: dict[int, str | None] = field(default_factory=dict)
    blocks: dict[int, dict[str, str]] = field(default_factory=dict)
    brands: dict[int, dict[str, Any]] = field(default_factory=dict)
    senders: dict[int, Sender] = field(default_factory=dict)


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
    asyncio.run(_run(runtime, provider, list(ids), stats))
    return stats


async def _run(runtime: Runtime, provider: ProviderInfo, ids: list[int], stats: RunStats) -> None:
    runtime.signer  # noqa: B018 - load the signing secret before any transaction is open
    limits = httpx.Limits(max_connections=provider.concurrency * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), limits=limits) as client:
        adapter = build_channel(
            provider_id=provider.id,
            kind=provider.kind,
            config=provider.config,
            concurrency=provider.concurrency,
            version=provider.version,
            client=client,
        )
        limiter = limiter_for(provider.id, provider.rate_per_second)
        gate = asyncio.Semaphore(provider.concurrency)
        caches = _Caches()

        async def submit(message: OutboundMessage) -> tuple[OutboundMessage, SendResult]:
            async with gate:
                if limiter is not None:
                    await limiter.acquire()
                try:
                    return message, await adapter.send(message)
                except Exception as exc:  # an adapter bug must not leave a row in sending
                    log.exception("messaging.adapter_failed", delivery_id=message.delivery_id)
                    return message, SendResult.uncertain(f"{type(exc).__name__}: {exc}")

        size = group_size(provider.concurrency)
        groups = [ids[start : start + size] for start in range(0, len(ids), size)]

        def prepare(index: int) -> asyncio.Future[list[OutboundMessage]] | None:
            if index >= len(groups):
                return None
            return asyncio.ensure_future(
                asyncio.to_thread(
                    _prepare, runtime, provider, adapter, groups[index], caches, stats
                )
            )

        # the next group is rendered while this one is on the wire
        pending = prepare(0)
        for index in range(len(groups)):
            assert pending is not None
            messages = await pending
            pending = prepare(index + 1)
            results = await asyncio.gather(*(submit(m) for m in messages))
            await asyncio.to_thread(_record, runtime, adapter, list(results), stats)
        await adapter.aclose()


def group_size(concurrency: int) -> int:
    """How many deliveries are in flight between two commits."""
    return max(MIN_GROUP, concurrency * 2)


def _prepare(
    runtime: Runtime,
    provider: ProviderInfo,
    adapter: Channel,
    ids: list[int],
    caches: _Caches,
    stats: RunStats,
) -> list[OutboundMessage]:
    """Re-check, render and commit ``sending`` for a group; returns what to submit."""
    now = clock.now()
    messages: list[OutboundMessage] = []
    with runtime.db.scope() as session:
        rows = store.deliveries_for_update(session, ids)
        people = customers.customers_by_ids(
            session,
            workspace_id=rows[0].workspace_id if rows else 0,
            customer_ids=[r.customer_id for r in rows],
        )
        for delivery in rows:
            if delivery.status == SENDING:
                # left by a dispatcher that died mid-send: it may have reached the provider
                if not adapter.capabilities.idempotency_keys:
                    delivery.status, delivery.updated_at = UNKNOWN, now
                    delivery.error = "the dispatcher stopped while sending; not resent"
                    stats.unknown += 1
                    continue
                stats.resent += 1
            elif delivery.status != QUEUED:
                continue
            elif delivery.expires_at is not None and delivery.expires_at < now:
                _finish(session, delivery, EXPIRED, "expired", "expired", now)
                continue
            reason, address = policy.recheck(session, delivery.decision_id)
            if reason is not None:
                _finish(session, delivery, SUPPRESSED, reason, "suppressed", now)
                stats.suppressed += 1
                continue
            try:
                message = _message(
                    session, runtime, provider, delivery, people, address or "", caches
                )
            except SQLAlchemyError:
                raise
            except Exception as exc:  # a template that cannot render for this customer
                _fail(session, delivery, f"rendering failed: {exc}", stats)
                continue
            delivery.status, delivery.sending_at, delivery.updated_at = SENDING, now, now
            delivery.attempts += 1
            delivery.address = message.address
            delivery.subject = (message.subject or message.title or message.text)[:500]
            messages.append(message)
    return messages


def _message(
    session: Session,
    runtime: Runtime,
    provider: ProviderInfo,
    delivery: Delivery,
    people: dict[int, Customer],
    address: str,
    caches: _Caches,
) -> OutboundMessage:
    template: MessageTemplate | None = caches.templates.get(int(delivery.template_id or 0))
    if template is None:
        template = session.get(MessageTemplate, delivery.template_id)
        assert template is not None
        caches.templates[template.id] = template
        caches.layouts[template.id] = layout_source(session, template)
    if delivery.brand_id not in caches.blocks:
        caches.blocks[delivery.brand_id] = store.blocks(
            session, delivery.workspace_id, delivery.brand_id
        )
        brand = get_brand(session, workspace_id=delivery.workspace_id, brand_id=delivery.brand_id)
        caches.brands[delivery.brand_id] = {"id": brand.id, "name": brand.name}
    sender = caches.senders.get(int(delivery.sender_id or 0))
    if sender is None and delivery.sender_id is not None:
        row = session.get(SenderIdentity, delivery.sender_id)
        assert row is not None
        sender = caches.senders[row.id] = Sender(row.address, row.name, row.reply_to)
    public_url = runtime.settings.public_url
    links = links_for(runtime.signer, public_url, delivery)
    customer = people.get(delivery.customer_id)
    context = {
        **delivery.context,
        "customer": customer_context(customer) if customer else {},
        "brand": caches.brands[delivery.brand_id],
        "links": links.as_context(),
        "message": {"id": delivery.id, "channel": delivery.channel},
    }
    if delivery.bundle_key and delivery.bundle_leader_id is None:
        items = policy.bundle_items(session, delivery.decision_id)
        if items:
            context["items"] = items
    rendered = render_template(
        session,
        template,
        str(delivery.channel),
        context,
        blocks=caches.blocks[delivery.brand_id],
        layout=caches.layouts[template.id] or "",
    )
    headers: dict[str, str] = {}
    document = rendered.html
    if delivery.channel == "email":
        if delivery.message_class != "transactional":
            headers["List-Unsubscribe"] = f"<{links.unsubscribe}>"
            headers["List-Unsubscribe-Post"] = ONE_CLICK
        if document is not None:
            document = track_html(document, links)
    return OutboundMessage(
        delivery_id=delivery.id,
        channel=str(delivery.channel),
        address=address or str(delivery.address),
        idempotency_key=f"tactful-{delivery.id}-{delivery.decision_id}",
        sender=sender,
        text=rendered.text,
        subject=rendered.subject,
        html=document,
        title=rendered.title,
        headers=headers,
        data=rendered.data,
        status_callback=f"{public_url}/v1/messaging/webhooks/{provider.id}",
    )


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
    runtime: Runtime,
    adapter: Channel,
    results: list[tuple[OutboundMessage, SendResult]],
    stats: RunStats,
) -> None:
    """Commit what the provider answered for each submission."""
    if not results:
        return
    now = clock.now()
    by_id = {m.delivery_id: (m, r) for m, r in results}
    with runtime.db.scope() as session:
        sent_events: list[tuple[Delivery, str, Any, dict[str, Any]]] = []
        call_tasks = []
        for delivery in store.deliveries_for_update(session, list(by_id)):
            message, result = by_id[delivery.id]
            if delivery.status not in (SENDING, UNKNOWN):
                continue
            delivery.updated_at = now
            if result.outcome == ACCEPTED:
                delivery.status, delivery.sent_at = SENT, now
                delivery.provider_message_id = result.provider_message_id
                delivery.error = None
                policy.record_status(session, delivery.decision_id, "sent")
                after = cascade_after(delivery.steps, delivery.step) if delivery.steps else None
                if after:
                    delivery.cascade_at = now + timedelta(seconds=after)
                sent_events.append((delivery, SENT, now, {}))
                if delivery.channel == "call":
                    call_tasks.append(_call_task(delivery, message, now))
                stats.sent += 1
            elif result.outcome == TRANSIENT and delivery.attempts < MAX_SEND_ATTEMPTS:
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
                    sent_events.append((delivery, BOUNCED, now, {"reason": result.error}))
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
        store.add_call_tasks(session, call_tasks)
        record_events(session, sent_events)


def _call_task(delivery: Delivery, message: OutboundMessage, now: Any) -> dict[str, Any]:
    return {
        "workspace_id": delivery.workspace_id,
        "brand_id": delivery.brand_id,
        "customer_id": delivery.customer_id,
        "delivery_id": delivery.id,
        "phone": delivery.address,
        "script": message.text,
        "context": {k: v for k, v in delivery.context.items() if k != "links"},
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
