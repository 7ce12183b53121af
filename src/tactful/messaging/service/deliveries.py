"""Deliveries: ``send`` (the one entry point: policy decision, then an outbox row per
decision), status changes that only move forwards, and the engagement events they emit."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import ValidationFailed
from tactful.core.jobs.queue import enqueue_many
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.messaging import store
from tactful.messaging.models import (
    BOUNCED,
    BUNDLED,
    CLICKED,
    DELIVERED,
    FAILED,
    MESSAGE,
    PLANNED,
    PROGRESS,
    QUEUED,
    READ,
    SENT,
    SUPPRESSED,
    Delivery,
)
from tactful.messaging.schemas import SendOutcome, SendRequest
from tactful.messaging.service.templates import enrich_contexts, get_template
from tactful.policy import service as policy
from tactful.policy.schemas import SCHEDULED, ChannelStep, Intent

DISPATCH_JOB = "messaging.dispatch"
# Deliveries per dispatch job. A run costs about 7 ms of statements whatever its size (the
# provider, templates, senders, the re-check's queries), about 35 µs a message in jobs of
# 200; in jobs of 1,000 the bench's dispatch took about 6 % less (docs/messaging.md, "Speed").
BATCH_SIZE = 1000
SOURCE_IDS = re.compile(r"^(campaign|journey):(\d+)")

# customer event names other features read (metrics, segments, reports)
EVENT_NAMES = {
    SENT: "Message Sent",
    DELIVERED: "Message Delivered",
    READ: "Message Opened",
    CLICKED: "Message Clicked",
    BOUNCED: "Message Bounced",
    "complained": "Message Complained",
    FAILED: "Message Failed",
}
# what the policy ledger learns (so caps count what really went out)
LEDGER = {
    SENT: "sent",
    DELIVERED: "delivered",
    READ: "read",
    CLICKED: "read",
    FAILED: "failed",
    BOUNCED: "failed",
}


def source_ids(source: str, reference: dict[str, Any]) -> tuple[int | None, int | None]:
    campaign = reference.get("campaign_id")
    journey = reference.get("journey_id")
    match = SOURCE_IDS.match(source)
    if match and match.group(1) == "campaign" and campaign is None:
        campaign = int(match.group(2))
    if match and match.group(1) == "journey" and journey is None:
        journey = int(match.group(2))
    return (None if campaign is None else int(campaign), None if journey is None else int(journey))


def check_requests(
    session: Session, requests: Sequence[SendRequest], *, where: str = "requests[{index}]"
) -> None:
    """Refuse requests whose template is not a message of their brand with every step's
    channel (nothing is decided or written)."""
    templates: dict[int, Any] = {}
    for index, request in enumerate(requests):
        at = where.format(index=index)
        if not request.steps:
            raise ValidationFailed("name at least one channel step", field=f"{at}.steps")
        template = templates.get(request.template_id)
        if template is None:
            template = templates[request.template_id] = get_template(
                session, workspace_id=request.workspace_id, template_id=request.template_id
            )
        if template.kind != MESSAGE or template.brand_id != request.brand_id:
            raise ValidationFailed(
                f"template {template.id} is not a message template of brand {request.brand_id}",
                field=f"{at}.template_id",
            )
        for n, step in enumerate(request.steps):
            if step.channel not in template.parts:
                raise ValidationFailed(
                    f"template {template.id} has no {step.channel} part",
                    field=f"{at}.steps[{n}].channel",
                )


def intent_of(request: SendRequest, customer_id: int) -> Intent:
    """The policy intent of a request (for ``customer_id``)."""
    r = request
    return Intent(
        workspace_id=r.workspace_id,
        brand_id=r.brand_id,
        customer_id=customer_id,
        message_class=r.message_class,
        source=r.source,
        steps=r.steps,
        topic=r.topic,
        tags=r.tags,
        dedupe_key=r.dedupe_key,
        dedupe_window=r.dedupe_window,
        priority=r.priority,
        expected_value=r.expected_value,
        not_before=r.not_before,
        expires_at=r.expires_at,
        bundle_key=r.bundle_key,
        bundle_item=r.bundle_item,
        exclusive_group=r.exclusive_group,
        is_test=r.is_test,
        reference={**r.reference, "template_id": r.template_id},
    )


def steps_of(request: SendRequest) -> list[dict[str, Any]]:
    """A request's cascade as a delivery stores it."""
    return [
        {
            "channel": s.channel,
            "timeout": s.timeout.total_seconds() if s.timeout else None,
            "wait_for": s.wait_for,
        }
        for s in request.steps
    ]


def send(
    session: Session, requests: Sequence[SendRequest], *, now: datetime | None = None
) -> list[SendOutcome]:
    """Pass requests through the contact policy and plan a delivery for each scheduled
    decision; suppressed and bundled ones are kept with their reason, nothing is sent."""
    if not requests:
        return []
    now = now or clock.now()
    check_requests(session, requests)
    intents = [intent_of(r, r.customer_id) for r in requests]
    decisions = policy.decide(session, intents, now=now)
    contexts: list[dict[str, Any]] = [{} for _ in requests]
    by_workspace: dict[int, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        by_workspace[request.workspace_id].append(index)
    for workspace_id, indexes in by_workspace.items():
        enriched = enrich_contexts(
            session, workspace_id=workspace_id, contexts=[requests[i].context for i in indexes]
        )
        for index, context in zip(indexes, enriched, strict=True):
            contexts[index] = context
    brand_ids = sorted({r.brand_id for r in requests})
    senders = store.default_senders(session, brand_ids)
    prices = store.provider_prices(session, brand_ids)
    rows: list[dict[str, Any]] = []
    for request, decision, context in zip(requests, decisions, contexts, strict=True):
        row = _row(request, decision.decision_id, context, now)
        if decision.outcome == SCHEDULED:
            assert decision.send_at is not None
            found = senders.get((request.brand_id, str(decision.channel)))
            _schedule(session, row, decision, found, prices, now)
        else:
            row.update(
                status=BUNDLED if decision.outcome == "bundled" else SUPPRESSED,
                reason=decision.reason,
                send_at=decision.send_at,
                step=decision.step,
            )
            row["_leader_decision"] = decision.bundle_leader_id
        rows.append(row)
    leaders = [r.pop("_leader_decision", None) for r in rows]
    ids = store.insert_deliveries(session, rows)
    _link_bundles(session, ids, decisions, leaders)
    queue_batches(
        session,
        [(i, r["provider_id"], 0) for i, r in zip(ids, rows, strict=True) if r["status"] == QUEUED],
    )
    return [
        SendOutcome(
            decision_id=d.decision_id,
            outcome=d.outcome,
            reason=d.reason,
            delivery_id=delivery_id,
            channel=d.channel,
            send_at=d.send_at,
            cost=row["cost"],
        )
        for d, delivery_id, row in zip(decisions, ids, rows, strict=True)
    ]


def _schedule(
    session: Session,
    row: dict[str, Any],
    decision: Any,
    found: tuple[Any, Any] | None,
    prices: dict[tuple[int, str, str], int],
    now: datetime,
) -> None:
    """Fill a scheduled decision's channel, sender, provider, price and time into a row."""
    step = row["steps"][decision.step] if decision.step < len(row["steps"]) else {}
    row.update(
        channel=decision.channel,
        address=decision.address,
        step=decision.step,
        send_at=decision.send_at,
        cost=decision.cost,
        wait_for=step.get("wait_for"),
        status=QUEUED if decision.send_at <= now else PLANNED,
    )
    if found is None:
        row.update(status=FAILED, reason="no_provider", cost=0, failed_at=now)
        row["error"] = f"brand {row['brand_id']} has no {decision.channel} sender"
        policy.record_status(session, decision.decision_id, "failed")
        if decision.step + 1 < len(row["steps"]):
            row["cascade_at"] = now
        return
    sender, provider_row = found
    row.update(sender_id=sender.id, provider_id=provider_row.id)
    key = (row["brand_id"], str(decision.channel), provider_row.name)
    row["cost"] = prices.get(key, decision.cost)


def cascade_after(steps: list[Any], step: int) -> float | None:
    """Seconds after sending when an undelivered step falls through (0: only on failure;
    None: the last step)."""
    if step + 1 >= len(steps):
        return None
    return float(steps[step].get("timeout") or 0)


def plan_next(session: Session, previous: Delivery, decision: Any, now: datetime) -> Delivery:
    """The delivery of a cascade's next step, from the policy's decision."""
    row = {
        column: getattr(previous, column)
        for column in (
            "workspace_id",
            "brand_id",
            "customer_id",
            "template_id",
            "source",
            "campaign_id",
            "journey_id",
            "message_class",
            "topic",
            "steps",
            "is_test",
            "context",
            "expires_at",
        )
    }
    row.update(
        decision_id=decision.decision_id,
        channel=None,
        provider_id=None,
        sender_id=None,
        address=None,
        status=SUPPRESSED,
        reason=None,
        step=decision.step,
        cost=0,
        send_at=decision.send_at,
        attempts=0,
        error=None,
        created_at=now,
        updated_at=now,
        failed_at=None,
    )
    if decision.outcome == SCHEDULED:
        found = store.default_senders(session, [previous.brand_id]).get(
            (previous.brand_id, str(decision.channel))
        )
        _schedule(
            session, row, decision, found, store.provider_prices(session, [previous.brand_id]), now
        )
    else:
        row["reason"] = decision.reason
    [delivery_id] = store.insert_deliveries(session, [row])
    if row["status"] == QUEUED:
        queue_batches(session, [(delivery_id, row["provider_id"], 0)])
    delivery = session.get(Delivery, delivery_id)
    assert delivery is not None
    return delivery


def _row(
    request: SendRequest, decision_id: int, context: dict[str, Any], now: datetime
) -> dict[str, Any]:
    campaign_id, journey_id = source_ids(request.source, request.reference)
    return {
        "workspace_id": request.workspace_id,
        "brand_id": request.brand_id,
        "customer_id": request.customer_id,
        "decision_id": decision_id,
        "template_id": request.template_id,
        "source": request.source[:200],
        "campaign_id": campaign_id,
        "journey_id": journey_id,
        "message_class": request.message_class,
        "topic": request.topic,
        "channel": None,
        "provider_id": None,
        "sender_id": None,
        "address": None,
        "status": SUPPRESSED,
        "reason": None,
        "step": 0,
        "steps": steps_of(request),
        "is_test": request.is_test,
        "bundle_key": request.bundle_key,
        "context": context,
        "cost": 0,
        "send_at": None,
        "expires_at": request.expires_at,
        "attempts": 0,
        "error": None,
        "wait_for": None,
        "cascade_at": None,
        "created_at": now,
        "updated_at": now,
        "failed_at": None,
    }


def _link_bundles(
    session: Session, ids: list[int], decisions: Sequence[Any], leaders: list[int | None]
) -> None:
    by_decision = {d.decision_id: i for d, i in zip(decisions, ids, strict=True)}
    for delivery_id, leader in zip(ids, leaders, strict=True):
        if leader is None:
            continue
        target = by_decision.get(leader)
        if target is None:
            found = store.delivery_by_decision(session, leader)
            target = None if found is None else found.id
        row = session.get(Delivery, delivery_id)
        if row is not None:
            row.bundle_leader_id = target


def queue_batches(session: Session, items: Sequence[tuple[int, int | None, int]]) -> int:
    """Enqueue dispatch jobs for queued deliveries ``(id, provider id, attempts)``, one job
    per provider and batch, keyed so a batch is never enqueued twice."""
    by_provider: dict[int | None, list[tuple[int, int]]] = defaultdict(list)
    for delivery_id, provider_id, attempts in items:
        by_provider[provider_id].append((delivery_id, attempts))
    jobs: list[tuple[str | None, dict[str, Any]]] = []
    for provider_id, members in by_provider.items():
        members.sort()
        for start in range(0, len(members), BATCH_SIZE):
            chunk = members[start : start + BATCH_SIZE]
            first_id, first_attempts = chunk[0]
            jobs.append(
                (
                    f"{DISPATCH_JOB}:{first_id}:{first_attempts}",
                    {"ids": [i for i, _ in chunk], "provider_id": provider_id},
                )
            )
    return enqueue_many(session, DISPATCH_JOB, jobs)


def advance(
    session: Session,
    delivery: Delivery,
    status: str,
    *,
    at: datetime | None = None,
    details: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Record something that happened to a sent delivery (delivered, opened, clicked,
    bounced, complained, failed). The status never moves backwards; every report becomes a
    delivery event, and the first of each kind a customer event. Returns True when new."""
    at = at or clock.now()
    details = details or {}
    key = dedupe_key or f"{delivery.id}:{status}:{details.get('url', '')}"
    new = (
        store.add_events(
            session,
            [
                {
                    "workspace_id": delivery.workspace_id,
                    "delivery_id": delivery.id,
                    "kind": status,
                    "details": details,
                    "dedupe_key": key[:200],
                    "at": at,
                }
            ],
        )
        > 0
    )
    if not new:
        return False
    first = _first_time(delivery, status, at)
    current = PROGRESS.get(delivery.status)
    moves = status in PROGRESS and current is not None and PROGRESS[status] > current
    if moves or (status in (BOUNCED, FAILED) and current is not None and current <= 2):
        delivery.status = status
        ledger = LEDGER.get(status)
        if ledger:
            policy.record_status(session, delivery.decision_id, ledger)
    if status in (DELIVERED, READ, CLICKED) and delivery.cascade_at is not None:
        reached = status != DELIVERED or delivery.wait_for != "read"
        if reached:
            delivery.cascade_at = None
    if status in (BOUNCED, FAILED) and delivery.cascade_at is not None:
        delivery.cascade_at = at  # fall through to the next channel now
    delivery.updated_at = clock.now()
    if first and status in EVENT_NAMES:
        record_events(session, [(delivery, status, at, details)])
    return True


def _first_time(delivery: Delivery, status: str, at: datetime) -> bool:
    column = {
        DELIVERED: "delivered_at",
        READ: "read_at",
        CLICKED: "clicked_at",
        BOUNCED: "failed_at",
        FAILED: "failed_at",
        SENT: "sent_at",
    }.get(status)
    if column is None:
        return True
    if getattr(delivery, column) is not None and status not in (CLICKED,):
        return False
    if getattr(delivery, column) is None:
        setattr(delivery, column, at)
    if status == CLICKED and delivery.read_at is None:
        delivery.read_at = at  # a click proves the message was opened
    return True


def record_events(
    session: Session, items: Sequence[tuple[Delivery, str, datetime, dict[str, Any]]]
) -> None:
    """Deliveries' engagement as customer events (metrics, segments and reports read them)."""
    by_workspace: dict[int, list[events.CustomerEvent]] = defaultdict(list)
    for delivery, status, at, details in items:
        properties: dict[str, Any] = {
            "delivery_id": delivery.id,
            "campaign_id": delivery.campaign_id,
            "journey_id": delivery.journey_id,
            "channel": delivery.channel,
            "topic": delivery.topic,
            "template_id": delivery.template_id,
            "brand_id": delivery.brand_id,
            "source": delivery.source,
        }
        properties.update(details)
        suffix = f":{details['url']}:{at.isoformat()}" if "url" in details else ""
        by_workspace[delivery.workspace_id].append(
            events.CustomerEvent(
                customer_id=delivery.customer_id,
                name=EVENT_NAMES[status],
                message_id=f"msg:{delivery.id}:{status}{suffix}"[:200],
                occurred_at=at,
                properties=properties,
                source="messaging",
                brand_id=delivery.brand_id,
            )
        )
    for workspace_id, batch in by_workspace.items():
        events.record_customer_events(session, workspace_id=workspace_id, events=batch)


CONTACT_KINDS = customers.CHANNEL_CONTACTS


def contact_failed(
    session: Session, delivery: Delivery, status: str, reason: str, *, actor: str
) -> None:
    """The provider says the address is unusable (bounced, complained, invalid, blocked)."""
    kind = CONTACT_KINDS.get(str(delivery.channel))
    if kind is None or delivery.address is None:
        return
    customers.set_contact_status(
        session,
        workspace_id=delivery.workspace_id,
        kind=kind,
        value=delivery.address,
        status=status,
        reason=reason[:300],
        actor=actor,
    )


def retry_at(attempts: int, retry_after: float | None, now: datetime) -> datetime:
    """When a transient failure is tried again: the provider's wish, else 30 s doubling."""
    seconds = retry_after if retry_after else min(3600.0, 30.0 * 2 ** max(0, attempts - 1))
    return now + timedelta(seconds=seconds)


def test_send(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    template_id: int,
    channel: str,
    customer_ids: Sequence[int] | None,
    context: dict[str, Any],
    actor: str,
) -> list[SendOutcome]:
    """Send a template to the brand's test recipients only (customers flagged ``is_test``;
    the policy refuses anyone else)."""
    ids = list(customer_ids) if customer_ids else store.test_customers(session, workspace_id)
    if not ids:
        raise ValidationFailed("the workspace has no test customers", field="customer_ids")
    return send(
        session,
        [
            SendRequest(
                workspace_id=workspace_id,
                brand_id=brand_id,
                customer_id=cid,
                template_id=template_id,
                message_class="transactional",
                source=f"test:{actor}",
                steps=(ChannelStep(channel),),
                context=context,
                is_test=True,
            )
            for cid in ids
        ],
    )
