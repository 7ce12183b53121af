"""Queries over journeys, versions, instances and the step log (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, and_, case, cast, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tactful.core.dialect import json_text, lock_rows
from tactful.customers.models import Customer
from tactful.events.models import PURCHASE, InboxEvent
from tactful.journeys.models import (
    FINISHED,
    LIVE,
    LIVE_STATUSES,
    QUEUED,
    WAITING,
    Journey,
    JourneyInstance,
    JourneyStepLog,
    JourneyVersion,
)
from tactful.messaging.models import Delivery
from tactful.segments.models import SegmentMembership

CHUNK = 900


def journey(
    session: Session, workspace_id: int, journey_id: int, *, lock: bool = False
) -> Journey | None:
    stmt = select(Journey).where(Journey.id == journey_id, Journey.workspace_id == workspace_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def by_name(session: Session, workspace_id: int, name: str) -> Journey | None:
    return session.scalars(
        select(Journey).where(Journey.workspace_id == workspace_id, Journey.name == name)
    ).one_or_none()


def journeys(session: Session, workspace_id: int, status: str | None = None) -> list[Journey]:
    stmt = select(Journey).where(Journey.workspace_id == workspace_id)
    if status is not None:
        stmt = stmt.where(Journey.status == status)
    return list(session.scalars(stmt.order_by(Journey.id)))


def live_journeys(
    session: Session, trigger_kind: str, workspace_id: int | None = None
) -> list[Journey]:
    """Live journeys with a trigger of one kind (of one workspace, or of all)."""
    stmt = select(Journey).where(Journey.status == LIVE, Journey.trigger_kind == trigger_kind)
    if workspace_id is not None:
        stmt = stmt.where(Journey.workspace_id == workspace_id)
    return list(session.scalars(stmt.order_by(Journey.id)))


def version(session: Session, journey_id: int, number: int) -> JourneyVersion | None:
    return session.scalars(
        select(JourneyVersion).where(
            JourneyVersion.journey_id == journey_id, JourneyVersion.version == number
        )
    ).one_or_none()


def versions(session: Session, journey_id: int) -> list[JourneyVersion]:
    return list(
        session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.version)
        )
    )


# -- entering ------------------------------------------------------------------------------


def entry_history(
    session: Session, journey_id: int, customer_ids: Sequence[int]
) -> dict[int, tuple[int, datetime, bool]]:
    """Per customer: entries so far, the latest entry's time, and whether one is live."""
    found: dict[int, tuple[int, datetime, bool]] = {}
    live = func.max(case((JourneyInstance.active_key.is_not(None), 1), else_=0))
    for start in range(0, len(customer_ids), CHUNK):
        rows = session.execute(
            select(
                JourneyInstance.customer_id,
                func.count(),
                func.max(JourneyInstance.entered_at),
                live,
            )
            .where(
                JourneyInstance.journey_id == journey_id,
                JourneyInstance.customer_id.in_(customer_ids[start : start + CHUNK]),
            )
            .group_by(JourneyInstance.customer_id)
        )
        for customer_id, count, last, is_live in rows:
            found[int(customer_id)] = (int(count), last, bool(is_live))
    return found


def count_entries(session: Session, journey_id: int, since: datetime | None = None) -> int:
    stmt = select(func.count()).where(JourneyInstance.journey_id == journey_id)
    if since is not None:
        stmt = stmt.where(JourneyInstance.entered_at >= since)
    return int(session.scalar(stmt) or 0)


def insert_instances(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert instances, skipping any that would repeat an entry key or be a second live
    instance of a customer; returns the ids of those inserted."""
    if not rows:
        return []
    table = JourneyInstance.__table__
    assert isinstance(table, Table)
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    # executemany with RETURNING: compiled once, sent in batches ("insertmanyvalues"); a
    # multi-row VALUES clause built per chunk cost more than the writes themselves
    result = session.connection().execute(stmt.returning(table.c.id), list(rows))
    return sorted(int(i) for i in result.scalars())


def instances(session: Session, ids: Sequence[int], *, lock: bool = False) -> list[JourneyInstance]:
    """Instances by id, in id order (locked on PostgreSQL when asked)."""
    found: list[JourneyInstance] = []
    for start in range(0, len(ids), CHUNK):
        stmt = (
            select(JourneyInstance)
            .where(JourneyInstance.id.in_(ids[start : start + CHUNK]))
            .order_by(JourneyInstance.id)
        )
        found.extend(session.scalars(lock_rows(session, stmt) if lock else stmt))
    return found


def customers_instances(
    session: Session, workspace_id: int, customer_ids: Sequence[int], finished_since: datetime
) -> list[JourneyInstance]:
    """Live instances of these customers, and finished ones not yet converted since
    ``finished_since`` (a goal may still convert them), locked, in id order."""
    found: list[JourneyInstance] = []
    for start in range(0, len(customer_ids), CHUNK):
        stmt = (
            select(JourneyInstance)
            .where(
                JourneyInstance.customer_id.in_(customer_ids[start : start + CHUNK]),
                JourneyInstance.workspace_id == workspace_id,
                or_(
                    JourneyInstance.status.in_(LIVE_STATUSES),
                    and_(
                        JourneyInstance.status.in_(FINISHED),
                        JourneyInstance.converted_at.is_(None),
                        JourneyInstance.finished_at >= finished_since,
                    ),
                ),
            )
            .order_by(JourneyInstance.id)
        )
        found.extend(session.scalars(lock_rows(session, stmt)))
    return sorted(found, key=lambda i: i.id)


def claim_due(session: Session, now: datetime, limit: int) -> list[tuple[int, int]]:
    """Waiting instances whose time has come become queued: ``(id, visit)`` pairs."""
    due = (
        select(JourneyInstance.id)
        .where(JourneyInstance.status == WAITING, JourneyInstance.next_at <= now)
        .order_by(JourneyInstance.next_at, JourneyInstance.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = session.execute(
        update(JourneyInstance)
        .where(JourneyInstance.id.in_(due.scalar_subquery()))
        .values(status=QUEUED, updated_at=now)
        .returning(JourneyInstance.id, JourneyInstance.visit)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((int(r.id), int(r.visit)) for r in rows)


def stop_instances(session: Session, journey_id: int, now: datetime, reason: str) -> int:
    """Every live instance of a journey leaves it (one statement)."""
    result = session.execute(
        update(JourneyInstance)
        .where(
            JourneyInstance.journey_id == journey_id,
            JourneyInstance.status.in_(LIVE_STATUSES),
        )
        .values(
            status="exited",
            exit_reason=reason,
            active_key=None,
            next_at=None,
            wait_event=None,
            finished_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def add_log(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append step-log rows (a Core executemany: the ORM's bulk insert cost a third of moving a
    crowd on)."""
    table = JourneyStepLog.__table__
    assert isinstance(table, Table)
    if rows:
        session.execute(table.insert(), list(rows))


def step_log(session: Session, instance_id: int) -> list[JourneyStepLog]:
    return list(
        session.scalars(
            select(JourneyStepLog)
            .where(JourneyStepLog.instance_id == instance_id)
            .order_by(JourneyStepLog.visit)
        )
    )


def list_instances(
    session: Session,
    journey_id: int,
    *,
    status: str | None,
    step_key: str | None,
    customer_id: int | None,
    after_id: int,
    limit: int,
) -> list[JourneyInstance]:
    stmt = select(JourneyInstance).where(
        JourneyInstance.journey_id == journey_id, JourneyInstance.id > after_id
    )
    if status is not None:
        stmt = stmt.where(JourneyInstance.status == status)
    if step_key is not None:
        stmt = stmt.where(JourneyInstance.step_key == step_key)
    if customer_id is not None:
        stmt = stmt.where(JourneyInstance.customer_id == customer_id)
    return list(session.scalars(stmt.order_by(JourneyInstance.id).limit(limit)))


def customer_history(
    session: Session, workspace_id: int, customer_ids: Sequence[int], limit: int
) -> list[tuple[JourneyInstance, str]]:
    """Instances of customers (newest first) with their journey's name."""
    rows = session.execute(
        select(JourneyInstance, Journey.name)
        .join(Journey, Journey.id == JourneyInstance.journey_id)
        .where(
            JourneyInstance.workspace_id == workspace_id,
            JourneyInstance.customer_id.in_(list(customer_ids)),
        )
        .order_by(JourneyInstance.entered_at.desc())
        .limit(limit)
    )
    return [(row[0], str(row[1])) for row in rows]


# -- what the engine reads from other features ----------------------------------------------


def inbox_events(
    session: Session,
    workspace_id: int,
    customer_ids: Sequence[int],
    names: Sequence[str],
    since: datetime,
) -> list[InboxEvent]:
    """Resolved live events of customers since a moment: tracked events by name, and sale
    receipts when ``$purchase`` is named (in inbox order)."""
    tracked = [n for n in names if n != "$purchase"]
    kinds = []
    if tracked:
        kinds.append(InboxEvent.name.in_(tracked) & (InboxEvent.type != PURCHASE))
    if "$purchase" in names:
        kinds.append((InboxEvent.type == PURCHASE) & (InboxEvent.name == "sale"))
    if not kinds or not customer_ids:
        return []
    found: list[InboxEvent] = []
    for start in range(0, len(customer_ids), CHUNK):
        found.extend(
            session.scalars(
                select(InboxEvent).where(
                    InboxEvent.customer_id.in_(customer_ids[start : start + CHUNK]),
                    InboxEvent.occurred_at >= since,
                    InboxEvent.workspace_id == workspace_id,
                    InboxEvent.historical.is_(False),
                    or_(*kinds),
                )
            )
        )
    return sorted(found, key=lambda e: e.seq)


def segment_members(session: Session, segment_id: int, customer_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(customer_ids), CHUNK):
        found.update(
            session.scalars(
                select(SegmentMembership.customer_id).where(
                    SegmentMembership.segment_id == segment_id,
                    SegmentMembership.customer_id.in_(customer_ids[start : start + CHUNK]),
                )
            )
        )
    return found


def timezones(session: Session, customer_ids: Sequence[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for start in range(0, len(customer_ids), CHUNK):
        rows = session.execute(
            select(Customer.id, Customer.timezone).where(
                Customer.id.in_(customer_ids[start : start + CHUNK])
            )
        )
        found.update({int(cid): tz for cid, tz in rows})
    return found


def dated_customers(
    session: Session, workspace_id: int, attribute: str, suffixes: Sequence[str], yearly: bool
) -> list[tuple[int, str, str | None]]:
    """Customers whose date attribute ends with one of ``suffixes`` ("MM-DD" when yearly,
    the whole "YYYY-MM-DD" otherwise): ``(id, date text, time zone)``."""
    text: Any = (
        cast(Customer.birthday, String)
        if attribute == "birthday"
        else json_text(session, Customer.__table__.c.attributes, attribute)
    )
    part = func.substr(text, 6, 5) if yearly else func.substr(text, 1, 10)
    rows = session.execute(
        select(Customer.id, func.substr(text, 1, 10), Customer.timezone).where(
            Customer.workspace_id == workspace_id,
            Customer.merged_into_id.is_(None),
            part.in_(list(suffixes)),
        )
    )
    return [(int(cid), str(value), tz) for cid, value, tz in rows]


# -- stats -----------------------------------------------------------------------------------


def instance_counts(
    session: Session, journey_id: int
) -> list[tuple[int, str, str | None, str | None, int, int]]:
    """``(version, status, step, exit reason, instances, converted)`` groups."""
    rows = session.execute(
        select(
            JourneyInstance.version,
            JourneyInstance.status,
            JourneyInstance.step_key,
            JourneyInstance.exit_reason,
            func.count(),
            func.count(JourneyInstance.converted_at),
        )
        .where(JourneyInstance.journey_id == journey_id)
        .group_by(
            JourneyInstance.version,
            JourneyInstance.status,
            JourneyInstance.step_key,
            JourneyInstance.exit_reason,
        )
    )
    return [(int(v), str(s), k, r, int(n), int(c)) for v, s, k, r, n, c in rows]


def step_counts(session: Session, journey_id: int) -> list[tuple[str, str, str, int]]:
    """``(step, kind, outcome, times)`` over the step log."""
    rows = session.execute(
        select(JourneyStepLog.step_key, JourneyStepLog.kind, JourneyStepLog.outcome, func.count())
        .where(JourneyStepLog.journey_id == journey_id)
        .group_by(JourneyStepLog.step_key, JourneyStepLog.kind, JourneyStepLog.outcome)
    )
    return [(str(k), str(kind), str(o), int(n)) for k, kind, o, n in rows]


def delivery_counts(
    session: Session, workspace_id: int, journey_id: int
) -> list[tuple[str, str, int]]:
    """``(source, status, deliveries)`` of a journey's messages."""
    rows = session.execute(
        select(Delivery.source, Delivery.status, func.count())
        .where(Delivery.workspace_id == workspace_id, Delivery.journey_id == journey_id)
        .group_by(Delivery.source, Delivery.status)
    )
    return [(str(src), str(status), int(n)) for src, status, n in rows]
