"""Queries over rule sets and the decision ledger (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, func, insert, select, update
from sqlalchemy.orm import Session

from tactful.core.dialect import insert_with_ids
from tactful.policy.models import ContactDecision, DecisionBatch, PolicyRuleSet
from tactful.policy.schemas import BUNDLED, COUNTED, DELIVERED, READ, SCHEDULED, SENT

CHUNK = 900
# up to this many (customer, key) pairs, dedupe keys are looked up per customer
# (see active_dedupe_keys)
BY_CUSTOMER = 5_000


def active_rule_sets(
    session: Session, workspace_id: int, scopes: Sequence[str]
) -> dict[str, PolicyRuleSet]:
    """The active rule set of each scope ("ws", "b<id>")."""
    rows = session.scalars(
        select(PolicyRuleSet).where(
            PolicyRuleSet.workspace_id == workspace_id,
            PolicyRuleSet.scope.in_(scopes),
            PolicyRuleSet.active.is_(True),
        )
    )
    return {row.scope: row for row in rows}


def latest_version(session: Session, workspace_id: int, scope: str) -> int:
    value = session.scalar(
        select(func.max(PolicyRuleSet.version)).where(
            PolicyRuleSet.workspace_id == workspace_id, PolicyRuleSet.scope == scope
        )
    )
    return int(value or 0)


def deactivate(session: Session, workspace_id: int, scope: str) -> None:
    session.execute(
        update(PolicyRuleSet)
        .where(
            PolicyRuleSet.workspace_id == workspace_id,
            PolicyRuleSet.scope == scope,
            PolicyRuleSet.active.is_(True),
        )
        .values(active=False)
        .execution_options(synchronize_session=False)
    )


def rule_history(session: Session, workspace_id: int, scope: str) -> list[PolicyRuleSet]:
    return list(
        session.scalars(
            select(PolicyRuleSet)
            .where(PolicyRuleSet.workspace_id == workspace_id, PolicyRuleSet.scope == scope)
            .order_by(PolicyRuleSet.version.desc())
        )
    )


@dataclass(frozen=True)
class Sent:
    """A message that went or will go out, with what its batch says about it."""

    customer_id: int
    send_at: datetime
    channel: str | None
    message_class: str
    priority: int
    source: str
    tags: frozenset[str]
    exclusive_group: str | None


def batches(session: Session, ids: Sequence[int]) -> dict[int, DecisionBatch]:
    found: dict[int, DecisionBatch] = {}
    wanted = list(set(ids))
    for start in range(0, len(wanted), CHUNK):
        for batch in session.scalars(
            select(DecisionBatch).where(DecisionBatch.id.in_(wanted[start : start + CHUNK]))
        ):
            found[batch.id] = batch
    return found


def batch_tags(batch: DecisionBatch) -> frozenset[str]:
    return frozenset(batch.tags) | ({batch.topic} if batch.topic else frozenset())


def history(session: Session, customer_ids: Sequence[int], since: datetime) -> list[Sent]:
    """Counted decisions (sent or scheduled) of customers since ``since``."""
    rows: list[Any] = []
    ids = list(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), CHUNK):
        rows.extend(
            session.execute(
                select(
                    ContactDecision.customer_id,
                    ContactDecision.send_at,
                    ContactDecision.channel,
                    ContactDecision.message_class,
                    ContactDecision.priority,
                    ContactDecision.batch_id,
                ).where(
                    ContactDecision.customer_id.in_(ids[start : start + CHUNK]),
                    ContactDecision.status.in_(COUNTED),
                    ContactDecision.send_at >= since,
                )
            ).all()
        )
    known = batches(session, [r.batch_id for r in rows])
    return [
        Sent(
            customer_id=r.customer_id,
            send_at=r.send_at,
            channel=r.channel,
            message_class=r.message_class,
            priority=r.priority,
            source=known[r.batch_id].source,
            tags=batch_tags(known[r.batch_id]),
            exclusive_group=known[r.batch_id].exclusive_group,
        )
        for r in rows
        if r.send_at is not None
    ]


# messages that went out, for the best channel's read rates
WENT_OUT = (SENT, DELIVERED, READ)


def engagement_query(workspace_id: int, since: datetime, channel: Any = None) -> Any:
    """``(customer, channel, sent, read)`` over the ledger since ``since`` (one workspace;
    ``channel`` replaces the channel column, e.g. by a code); callers narrow it to their
    customers."""
    return (
        select(
            ContactDecision.customer_id,
            ContactDecision.channel if channel is None else channel,
            func.count(),
            func.sum(case((ContactDecision.status == READ, 1), else_=0)),
        )
        .where(
            ContactDecision.workspace_id == workspace_id,
            ContactDecision.status.in_(WENT_OUT),
            ContactDecision.channel.is_not(None),
            ContactDecision.send_at >= since,
        )
        .group_by(ContactDecision.customer_id, ContactDecision.channel)
    )


def engagement(
    session: Session, workspace_id: int, customer_ids: Sequence[int], since: datetime
) -> dict[int, dict[str, tuple[int, int]]]:
    """Per customer and channel: messages sent since ``since`` and how many were read."""
    found: dict[int, dict[str, tuple[int, int]]] = {}
    ids = list(dict.fromkeys(customer_ids))
    query = engagement_query(workspace_id, since)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for cid, channel, sent, reads in session.execute(
            query.where(ContactDecision.customer_id.in_(chunk))
        ):
            found.setdefault(cid, {})[channel] = (int(sent), int(reads or 0))
    return found


def active_dedupe_keys(
    session: Session, workspace_id: int, pairs: Sequence[tuple[int, str]], now: datetime
) -> set[tuple[int, str]]:
    """Which (customer, dedupe key) pairs are taken by a live decision.

    A few customers (a trigger's batch) are looked up by key and customer, a seek each:
    their key may be held by every customer a journey ever messaged. A whole base (a
    campaign's plan) reads each key's live decisions once."""
    wanted = set(pairs)
    keys = sorted({key for _, key in wanted})
    if len(wanted) <= BY_CUSTOMER:
        customers = sorted({cid for cid, _ in wanted})
        half = CHUNK // 2
        filters: list[ColumnElement[bool]] = [
            and_(
                ContactDecision.dedupe_key.in_(keys[k : k + half]),
                ContactDecision.customer_id.in_(customers[c : c + half]),
            )
            for k in range(0, len(keys), half)
            for c in range(0, len(customers), half)
        ]
    else:
        filters = [
            ContactDecision.dedupe_key.in_(keys[k : k + CHUNK]) for k in range(0, len(keys), CHUNK)
        ]
    taken: set[tuple[int, str]] = set()
    for where in filters:
        rows = session.execute(
            select(ContactDecision.customer_id, ContactDecision.dedupe_key).where(
                ContactDecision.workspace_id == workspace_id,
                where,
                ContactDecision.dedupe_until > now,
                ContactDecision.status.in_((*COUNTED, BUNDLED)),
            )
        )
        taken.update((cid, str(key)) for cid, key in rows)
    return taken & wanted


def open_bundles(
    session: Session, customer_ids: Sequence[int], keys: Sequence[str], now: datetime
) -> dict[tuple[int, str], ContactDecision]:
    """Scheduled, not yet sent leaders that later intents of the same kind may join."""
    found: dict[tuple[int, str], ContactDecision] = {}
    if not keys:
        return found
    ids = list(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), CHUNK):
        rows = session.scalars(
            select(ContactDecision)
            .where(
                ContactDecision.customer_id.in_(ids[start : start + CHUNK]),
                ContactDecision.bundle_key.in_(list(set(keys))),
                ContactDecision.status == SCHEDULED,
                ContactDecision.bundle_leader_id.is_(None),
                ContactDecision.send_at > now,
            )
            .order_by(ContactDecision.id)
        )
        for row in rows:
            found.setdefault((row.customer_id, str(row.bundle_key)), row)
    return found


def insert_batch(session: Session, values: dict[str, Any]) -> int:
    batch_id = session.execute(
        insert(DecisionBatch).values(values).returning(DecisionBatch.id)
    ).scalar_one()
    return int(batch_id)


def insert_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ledger rows in bulk; returns their ids in order."""
    return insert_with_ids(session, ContactDecision, rows)


def bundle_members(session: Session, leader_id: int) -> list[ContactDecision]:
    return list(
        session.scalars(
            select(ContactDecision)
            .where(ContactDecision.bundle_leader_id == leader_id)
            .order_by(ContactDecision.id)
        )
    )


def decisions_for(
    session: Session,
    workspace_id: int,
    customer_id: int,
    *,
    source: str | None,
    limit: int,
) -> list[tuple[ContactDecision, DecisionBatch]]:
    stmt = (
        select(ContactDecision, DecisionBatch)
        .join(DecisionBatch, DecisionBatch.id == ContactDecision.batch_id)
        .where(
            ContactDecision.workspace_id == workspace_id, ContactDecision.customer_id == customer_id
        )
    )
    if source:
        stmt = stmt.where(DecisionBatch.source == source)
    rows = session.execute(stmt.order_by(ContactDecision.id.desc()).limit(limit)).all()
    return [(r[0], r[1]) for r in rows]


def reason_counts(
    session: Session, workspace_id: int, since: datetime
) -> list[tuple[str, str, str, int]]:
    """(day, status, reason, count) of non-plain decisions since ``since``, by decision day."""
    day = func.date(DecisionBatch.decided_at)
    rows = session.execute(
        select(day, ContactDecision.status, ContactDecision.reason, func.count())
        .join(DecisionBatch, DecisionBatch.id == ContactDecision.batch_id)
        .where(
            DecisionBatch.workspace_id == workspace_id,
            DecisionBatch.decided_at >= since,
            ContactDecision.reason != "ok",
        )
        .group_by(day, ContactDecision.status, ContactDecision.reason)
        .order_by(day, ContactDecision.reason)
    ).all()
    return [(str(d), status, reason, int(count)) for d, status, reason, count in rows]


def decision_facts(session: Session, ids: Sequence[int]) -> list[Row[Any]]:
    """What re-checking needs of ledger rows (id, workspace, customer, batch, class,
    channel, address): plain rows, not ORM objects, since a dispatch group reads 200."""
    found: list[Row[Any]] = []
    wanted = list(dict.fromkeys(ids))
    d = ContactDecision
    columns = (
        d.id,
        d.workspace_id,
        d.customer_id,
        d.batch_id,
        d.message_class,
        d.channel,
        d.address,
    )
    for start in range(0, len(wanted), CHUNK):
        found.extend(
            session.execute(select(*columns).where(d.id.in_(wanted[start : start + CHUNK])))
        )
    return found


def set_statuses(session: Session, ids: Sequence[int], status: str, now: datetime) -> None:
    """Ledger rows whose message reached ``status``, one statement per chunk (rows already
    loaded in the session are not refreshed)."""
    for start in range(0, len(ids), CHUNK):
        session.execute(
            update(ContactDecision)
            .where(ContactDecision.id.in_(list(ids[start : start + CHUNK])))
            .values(status=status, updated_at=now)
            .execution_options(synchronize_session=False)
        )
