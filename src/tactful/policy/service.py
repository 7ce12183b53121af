"""The contact policy's use cases: decide intents, fall through cascades, learn what became
of each message, re-check a message at send time, explain any decision, manage rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Row
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.arrays import distinct
from tactful.core.errors import NotFound, ValidationFailed
from tactful.customers import service as customers
from tactful.policy import bulk, gate, rules, store, whatif
from tactful.policy.gate import intent_of
from tactful.policy.models import ContactDecision, DecisionBatch, PolicyRuleSet
from tactful.policy.placement import to_seconds
from tactful.policy.safety import (
    ContentRules,
    audience_violations,
    check_confirmation,
    check_content,
)
from tactful.policy.schemas import (
    BUNDLED,
    LEDGER_STATUSES,
    REASONS,
    ChannelStep,
    Decision,
    Intent,
    RuleSet,
)

__all__ = [
    "ChannelStep",
    "ContentRules",
    "Decision",
    "Intent",
    "RuleSet",
    "audience_violations",
    "check_confirmation",
    "check_content",
    "decide",
]


def decide(
    session: Session, intents: Sequence[Intent], *, now: datetime | None = None
) -> list[Decision]:
    """Pass intents through the gate; each ends scheduled (channel, time, cost), bundled or
    suppressed with a reason code, and is recorded in the ledger."""
    if bulk.eligible(intents, gate.BULK_THRESHOLD):
        return decide_bulk(session, intents, now=now).decisions()
    return gate.decide(session, intents, now=now)


def decide_bulk(
    session: Session, intents: Sequence[Intent], *, now: datetime | None = None
) -> bulk.Outcome:
    """Decide a large batch of one kind of message (a campaign) and return the decisions as
    arrays; the vectorised twin of ``decide`` with the same rules and answers. Decisions
    carry no address: ``recheck`` gives the address to use at send time."""
    if not bulk.eligible(intents, 1):
        raise ValidationFailed(
            "a bulk batch is one kind of message with one intent per "
            "customer (no bundles, no test sends)",
            field="intents",
        )
    ids = np.fromiter((i.customer_id for i in intents), dtype=np.int64, count=len(intents))
    return bulk.decide_audience(session, intents[0], ids, now=to_seconds(now or clock.now()))


def decide_audience(
    session: Session,
    message: Intent,
    customer_ids: Sequence[int] | np.ndarray,
    *,
    now: datetime | None = None,
) -> bulk.Outcome:
    """Decide one message for a whole audience (a campaign): ``message`` is the intent
    without its customer; the decisions come back as arrays in the audience's order."""
    ids = np.asarray(customer_ids, dtype=np.int64)
    if len(distinct(ids)) != len(ids):
        raise ValidationFailed("the audience names a customer twice", field="customer_ids")
    if message.bundle_key or message.is_test:
        raise ValidationFailed("bundled and test messages are decided one by one", field="message")
    return bulk.decide_audience(session, message, ids, now=to_seconds(now or clock.now()))


def _decision(session: Session, decision_id: int) -> ContactDecision:
    row = session.get(ContactDecision, decision_id)
    if row is None:
        raise NotFound(f"decision {decision_id} does not exist", field="decision_id")
    return row


def _batch(session: Session, row: ContactDecision) -> DecisionBatch:
    batch = session.get(DecisionBatch, row.batch_id)
    assert batch is not None
    return batch


def reference(session: Session, decision_id: int) -> dict[str, Any]:
    """The caller's reference of a decision (template, context …)."""
    row = _decision(session, decision_id)
    return {**_batch(session, row).reference, **(row.reference or {})}


def next_step(session: Session, decision_id: int, *, now: datetime | None = None) -> Decision:
    """The next channel of a cascade after ``decision_id`` was not delivered (or read) in
    time; the outcome is ``suppressed`` with ``cascade_exhausted`` when no channel is left."""
    row = _decision(session, decision_id)
    intent = intent_of(row, _batch(session, row))
    return gate.decide_fallback(
        session, intent, first_step=row.step + 1, previous_id=row.id, now=now
    )


def record_status(session: Session, decision_id: int, status: str) -> ContactDecision:
    """What became of a scheduled message: sent, delivered, read, failed, cancelled, expired
    (failed, cancelled and expired ones no longer count towards caps)."""
    if status not in LEDGER_STATUSES:
        raise ValidationFailed(f"status must be one of {list(LEDGER_STATUSES)}", field="status")
    row = _decision(session, decision_id)
    row.status = status
    row.updated_at = clock.now()
    return row


def record_statuses(session: Session, decision_ids: Sequence[int], status: str) -> None:
    """:func:`record_status` for many messages at once (a dispatched group)."""
    if status not in LEDGER_STATUSES:
        raise ValidationFailed(f"status must be one of {list(LEDGER_STATUSES)}", field="status")
    store.set_statuses(session, decision_ids, status, clock.now())


def recheck(session: Session, decision_id: int) -> tuple[str | None, str | None]:
    """Just before sending: ``(reason, address)`` — a reason when consent or the contact no
    longer allows the message, else the address to use now."""
    return recheck_many(session, [decision_id])[decision_id]


def recheck_many(
    session: Session, decision_ids: Sequence[int]
) -> dict[int, tuple[str | None, str | None]]:
    """``recheck`` for many decisions at once (a dispatch batch): one reachability query per
    kind of message instead of one per decision."""
    rows = store.decision_facts(session, decision_ids)
    batches = store.batches(session, [r.batch_id for r in rows])
    groups: dict[tuple[int, int, str, str | None], list[Row[Any]]] = {}
    for row in rows:
        batch = batches[row.batch_id]
        key = (row.workspace_id, batch.brand_id, row.message_class, batch.topic)
        groups.setdefault(key, []).append(row)
    result: dict[int, tuple[str | None, str | None]] = {}
    for (workspace_id, brand_id, klass, topic), members in groups.items():
        reach = customers.reachability(
            session,
            workspace_id=workspace_id,
            brand_id=brand_id,
            customer_ids=[r.customer_id for r in members],
            message_class=klass,
            topic=topic,
        )
        for row in members:
            result[row.id] = _verdict(row, reach[row.customer_id])
    missing = set(decision_ids) - set(result)
    if missing:
        raise NotFound(f"decisions {sorted(missing)[:5]} do not exist", field="decision_ids")
    return result


def _verdict(row: Row[Any], reach: customers.Reach) -> tuple[str | None, str | None]:
    if row.channel is None:
        return "no_contact", None
    if row.channel not in reach.channels:
        if row.channel not in reach.addresses:
            return "no_contact", None
        if row.message_class == "marketing":
            return "no_advertising_consent", None
        return "unsubscribed_topic", None
    return None, reach.addresses.get(row.channel, row.address)


def bundle_items(session: Session, leader_id: int) -> list[dict[str, Any]]:
    """The items of a bundled message: the leader's own, then each joined intent's."""
    leader = _decision(session, leader_id)
    items = [leader.bundle_item] if leader.bundle_item else []
    items.extend(
        m.bundle_item
        for m in store.bundle_members(session, leader_id)
        if m.bundle_item and m.status == BUNDLED
    )
    return items


def explain(row: ContactDecision, batch: DecisionBatch) -> dict[str, Any]:
    """A ledger row as a person reads it."""
    return {
        "decision_id": row.id,
        "source": batch.source,
        "message_class": row.message_class,
        "topic": batch.topic,
        "status": row.status,
        "reason": row.reason,
        "explanation": REASONS.get(row.reason, row.reason),
        "rule": row.rule,
        "channel": row.channel,
        "send_at": row.send_at,
        "decided_at": batch.decided_at,
        "expires_at": row.expires_at,
        "step": row.step,
        "cost": row.cost,
        "bundle_leader_id": row.bundle_leader_id,
        "previous_id": row.previous_id,
        "reference": {**batch.reference, **(row.reference or {})},
        "rule_versions": batch.rule_versions,
    }


def why(
    session: Session,
    *,
    workspace_id: int,
    customer_id: int,
    source: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Why a customer did (or did not) get messages, and when: the ledger, newest first."""
    customer = customers.get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    rows = store.decisions_for(
        session, workspace_id, customer.id, source=source, limit=min(max(limit, 1), 1000)
    )
    return [explain(row, batch) for row, batch in rows]


def set_rules(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    rules_: RuleSet,
    actor: str,
    comment: str | None = None,
) -> PolicyRuleSet:
    """Publish a new version of a workspace's or brand's rules (audited)."""
    return rules.set_rules(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        rules=rules_,
        actor=actor,
        comment=comment,
    )


def rule_history(
    session: Session, *, workspace_id: int, brand_id: int | None
) -> list[PolicyRuleSet]:
    """Every version of a scope's rules, newest first."""
    return rules.history(session, workspace_id=workspace_id, brand_id=brand_id)


def what_if(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    proposed: RuleSet,
    days: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Replay the last ``days`` of real intents under ``proposed`` rules and report how many
    messages would have been sent, deferred and suppressed, per reason (nothing is kept)."""
    if not 0 < days <= 90:
        raise ValidationFailed("replay between a minute and 90 days", field="days")
    return whatif.replay(
        session, workspace_id=workspace_id, brand_id=brand_id, proposed=proposed, days=days, now=now
    )


def current_rules(
    session: Session, *, workspace_id: int, brand_id: int | None
) -> tuple[RuleSet, int]:
    """A scope's own active rules and version (the workspace has defaults, version 0)."""
    return rules.current(session, workspace_id=workspace_id, brand_id=brand_id)


def suppression_summary(
    session: Session, *, workspace_id: int, days: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Suppressions and deferrals of the last days, by day and reason (for dashboards)."""
    since = (now or clock.now()) - timedelta(days=days)
    return [
        {
            "day": day,
            "status": status,
            "reason": reason,
            "explanation": REASONS.get(reason, reason),
            "count": count,
        }
        for day, status, reason, count in store.reason_counts(session, workspace_id, since)
    ]
