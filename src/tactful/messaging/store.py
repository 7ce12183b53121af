"""Queries over templates, providers, senders, deliveries and call tasks (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, exists, func, select, text, update
from sqlalchemy.orm import Session

from tactful.core.dialect import copy_rows, insert_ignore, insert_with_ids, lock_rows, reserve_ids
from tactful.customers.models import Customer
from tactful.messaging.models import (
    BLOCK,
    CANCELLED,
    PLANNED,
    QUEUED,
    SENDING,
    SENT,
    CallTask,
    Delivery,
    DeliveryEvent,
    MessageProvider,
    MessageTemplate,
    RateBucket,
    SenderIdentity,
)
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.schemas import SUPPRESSED as DECIDED_SUPPRESSED
from tactful.tenancy.models import ChannelPrice

CHUNK = 900


def template(session: Session, workspace_id: int, template_id: int) -> MessageTemplate | None:
    row = session.get(MessageTemplate, template_id)
    return row if row is not None and row.workspace_id == workspace_id else None


def template_by_key(
    session: Session, workspace_id: int, brand_id: int, kind: str, key: str
) -> MessageTemplate | None:
    return session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.workspace_id == workspace_id,
            MessageTemplate.brand_id == brand_id,
            MessageTemplate.kind == kind,
            MessageTemplate.key == key,
        )
    )


def templates(
    session: Session, workspace_id: int, *, kind: str | None, brand_id: int | None
) -> list[MessageTemplate]:
    stmt = select(MessageTemplate).where(MessageTemplate.workspace_id == workspace_id)
    if kind:
        stmt = stmt.where(MessageTemplate.kind == kind)
    if brand_id:
        stmt = stmt.where(MessageTemplate.brand_id == brand_id)
    return list(session.scalars(stmt.order_by(MessageTemplate.id)))


def blocks(session: Session, workspace_id: int, brand_id: int) -> dict[str, str]:
    """A brand's reusable blocks: key -> Liquid source."""
    rows = session.execute(
        select(MessageTemplate.key, MessageTemplate.parts).where(
            MessageTemplate.workspace_id == workspace_id,
            MessageTemplate.brand_id == brand_id,
            MessageTemplate.kind == BLOCK,
        )
    )
    return {key: str((parts or {}).get("email", {}).get("body", "")) for key, parts in rows}


def provider(session: Session, workspace_id: int, provider_id: int) -> MessageProvider | None:
    row = session.get(MessageProvider, provider_id)
    return row if row is not None and row.workspace_id == workspace_id else None


def providers(session: Session, workspace_id: int) -> list[MessageProvider]:
    return list(
        session.scalars(
            select(MessageProvider)
            .where(MessageProvider.workspace_id == workspace_id)
            .order_by(MessageProvider.id)
        )
    )


def providers_by_id(session: Session, ids: Sequence[int]) -> dict[int, MessageProvider]:
    rows = session.scalars(select(MessageProvider).where(MessageProvider.id.in_(list(ids))))
    return {row.id: row for row in rows}


def senders(session: Session, workspace_id: int) -> list[SenderIdentity]:
    return list(
        session.scalars(
            select(SenderIdentity)
            .where(SenderIdentity.workspace_id == workspace_id)
            .order_by(SenderIdentity.id)
        )
    )


def default_senders(session: Session, brand_ids: Sequence[int]) -> dict[tuple[int, str], Any]:
    """The sender (and its enabled provider) of each brand and channel: the default first,
    then the oldest."""
    rows = session.execute(
        select(SenderIdentity, MessageProvider)
        .join(MessageProvider, MessageProvider.id == SenderIdentity.provider_id)
        .where(SenderIdentity.brand_id.in_(list(brand_ids)), MessageProvider.enabled.is_(True))
        .order_by(SenderIdentity.is_default.desc(), SenderIdentity.id)
    )
    found: dict[tuple[int, str], Any] = {}
    for sender, provider_row in rows:
        found.setdefault((sender.brand_id, sender.channel), (sender, provider_row))
    return found


def provider_prices(session: Session, brand_ids: Sequence[int]) -> dict[tuple[int, str, str], int]:
    """Prices per message by (brand, channel, provider name)."""
    rows = session.execute(
        select(
            ChannelPrice.brand_id, ChannelPrice.channel, ChannelPrice.provider, ChannelPrice.price
        ).where(ChannelPrice.brand_id.in_(list(brand_ids)))
    )
    return {(b, c, p): int(price) for b, c, p, price in rows}


def insert_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert deliveries in bulk; returns their ids in order."""
    return insert_with_ids(session, Delivery, rows)


def reserve_delivery_ids(session: Session, count: int) -> list[int]:
    """Fresh delivery ids for a bulk insert with explicit ids."""
    return reserve_ids(session, Delivery, count)


def copy_deliveries(
    session: Session, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many deliveries given in the database's own representation (COPY on
    PostgreSQL)."""
    copy_rows(session, _table(Delivery), columns, rows)


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def decision_batch(session: Session, decision_id: int) -> int | None:
    """The policy ledger batch a decision belongs to."""
    return session.scalar(select(ContactDecision.batch_id).where(ContactDecision.id == decision_id))


def due_deliveries(
    session: Session,
    now: datetime,
    limit: int,
    *,
    id_range: tuple[int, int] | None = None,
) -> list[tuple[int, int | None, int]]:
    """``(id, provider id, attempts)`` of planned deliveries whose time has come, locked
    (others skip them); optionally only ids in ``id_range`` (inclusive)."""
    stmt = select(Delivery.id, Delivery.provider_id, Delivery.attempts).where(
        Delivery.status == PLANNED, Delivery.send_at <= now
    )
    if id_range is not None:
        stmt = stmt.where(Delivery.id.between(*id_range))
    stmt = stmt.order_by(Delivery.send_at, Delivery.id).limit(limit)
    locked: Any = lock_rows(session, cast("Select[Any]", stmt), skip_locked=True)
    rows = session.execute(locked).all()
    return [(int(i), None if p is None else int(p), int(a)) for i, p, a in rows]


def _set_all(session: Session, ids: Sequence[int], **values: Any) -> None:
    """The same values on many deliveries, one UPDATE per chunk of ids (rows loaded in the
    session are not refreshed)."""
    table = _table(Delivery)
    for start in range(0, len(ids), CHUNK):
        session.execute(
            update(table).where(table.c.id.in_(list(ids[start : start + CHUNK]))).values(**values)
        )


def mark_queued(session: Session, ids: Sequence[int], now: datetime) -> None:
    """Planned deliveries handed to dispatch jobs."""
    _set_all(session, ids, status=QUEUED, updated_at=now)


# what dispatch reads of a delivery: enough to render, submit and report it (the ORM object
# is loaded only for the rare paths that change more than its status)
DISPATCH_COLUMNS = (
    "id",
    "workspace_id",
    "brand_id",
    "customer_id",
    "decision_id",
    "template_id",
    "source",
    "campaign_id",
    "journey_id",
    "message_class",
    "topic",
    "channel",
    "sender_id",
    "address",
    "status",
    "step",
    "steps",
    "context",
    "expires_at",
    "bundle_leader_id",
    "bundle_key",
)


def delivery_rows(session: Session, ids: Sequence[int]) -> list[Any]:
    """Deliveries as plain rows (``DISPATCH_COLUMNS``, by name), in id order."""
    table = _table(Delivery)
    columns = [table.c[name] for name in DISPATCH_COLUMNS]
    return list(
        session.execute(select(*columns).where(table.c.id.in_(list(ids))).order_by(table.c.id))
    )


def _by_id(**values: Any) -> Any:
    """An UPDATE of deliveries by id, for executemany with ``b_id`` and ``b_*`` values."""
    table = _table(Delivery)
    return update(table).where(table.c.id == bindparam("b_id")).values(**values)


def mark_sending(session: Session, items: Sequence[dict[str, Any]], now: datetime) -> None:
    """Deliveries about to be submitted (``b_id``, ``b_address``, ``b_subject``): what they
    share with one statement per chunk, their own values with one more (executemany)."""
    if not items:
        return
    attempts = _table(Delivery).c.attempts
    _set_all(
        session,
        [item["b_id"] for item in items],
        status=SENDING,
        sending_at=now,
        updated_at=now,
        attempts=attempts + 1,
    )
    session.execute(
        _by_id(address=bindparam("b_address"), subject=bindparam("b_subject")), list(items)
    )


def mark_sent(session: Session, items: Sequence[dict[str, Any]], now: datetime) -> None:
    """Deliveries the provider accepted (``b_id``, ``b_message_id``, ``b_cascade_at``): what
    they share with one statement per chunk, their own values with one more (executemany)."""
    if not items:
        return
    _set_all(
        session,
        [item["b_id"] for item in items],
        status=SENT,
        sent_at=now,
        updated_at=now,
        error=None,
        cascade_at=None,
    )
    own = [i for i in items if i["b_message_id"] is not None or i["b_cascade_at"] is not None]
    if own:
        stmt = _by_id(
            provider_message_id=bindparam("b_message_id"),
            cascade_at=bindparam("b_cascade_at"),
        )
        session.execute(stmt, own)


def statuses_for_update(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The current status of deliveries, locked."""
    stmt: Any = select(Delivery.id, Delivery.status).where(Delivery.id.in_(list(ids)))
    return {int(i): str(s) for i, s in session.execute(lock_rows(session, stmt))}


def deliveries_for_update(session: Session, ids: Sequence[int]) -> list[Delivery]:
    stmt = select(Delivery).where(Delivery.id.in_(list(ids))).order_by(Delivery.id)
    return list(session.scalars(lock_rows(session, stmt)))


def delivery(session: Session, delivery_id: int) -> Delivery | None:
    return session.get(Delivery, delivery_id)


def delivery_by_decision(session: Session, decision_id: int) -> Delivery | None:
    return session.scalar(select(Delivery).where(Delivery.decision_id == decision_id))


def delivery_by_provider_message(
    session: Session, provider_id: int, provider_message_id: str
) -> Delivery | None:
    return session.scalar(
        select(Delivery).where(
            Delivery.provider_id == provider_id,
            Delivery.provider_message_id == provider_message_id,
        )
    )


def latest_delivery_to(session: Session, provider_id: int, address: str) -> Delivery | None:
    return session.scalar(
        select(Delivery)
        .where(Delivery.provider_id == provider_id, Delivery.address == address)
        .order_by(Delivery.id.desc())
        .limit(1)
    )


def stuck_sending(session: Session, before: datetime, limit: int) -> list[Delivery]:
    """Deliveries left in ``sending`` since before ``before`` (their dispatcher died)."""
    stmt = (
        select(Delivery)
        .where(Delivery.status == SENDING, Delivery.sending_at < before)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return list(session.scalars(lock_rows(session, stmt, skip_locked=True)))


def cascades_due(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Delivery.id)
            .where(Delivery.cascade_at <= now)
            .order_by(Delivery.cascade_at)
            .limit(limit)
        )
    )


def customer_deliveries(
    session: Session,
    workspace_id: int,
    customer_ids: Sequence[int],
    *,
    before: datetime | None,
    limit: int,
) -> list[Delivery]:
    stmt = select(Delivery).where(
        Delivery.workspace_id == workspace_id, Delivery.customer_id.in_(list(customer_ids))
    )
    if before is not None:
        stmt = stmt.where(Delivery.created_at < before)
    return list(session.scalars(stmt.order_by(Delivery.created_at.desc()).limit(limit)))


def ledger_only_suppressions(
    session: Session,
    workspace_id: int,
    customer_ids: Sequence[int],
    *,
    before: datetime | None,
    limit: int,
) -> list[tuple[ContactDecision, DecisionBatch]]:
    """Suppressed decisions without a delivery row (a bulk send keeps them in the ledger
    only), newest first."""
    stmt = (
        select(ContactDecision, DecisionBatch)
        .join(DecisionBatch, DecisionBatch.id == ContactDecision.batch_id)
        .where(
            ContactDecision.workspace_id == workspace_id,
            ContactDecision.customer_id.in_(list(customer_ids)),
            ContactDecision.status == DECIDED_SUPPRESSED,
            ~exists().where(Delivery.decision_id == ContactDecision.id),
        )
    )
    if before is not None:
        stmt = stmt.where(DecisionBatch.decided_at < before)
    rows = session.execute(stmt.order_by(ContactDecision.id.desc()).limit(limit)).all()
    return [(r[0], r[1]) for r in rows]


def deliveries(
    session: Session,
    workspace_id: int,
    *,
    customer_id: int | None,
    source: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[Delivery]:
    stmt = select(Delivery).where(Delivery.workspace_id == workspace_id)
    if customer_id is not None:
        stmt = stmt.where(Delivery.customer_id == customer_id)
    if source:
        stmt = stmt.where(Delivery.source == source)
    if status:
        stmt = stmt.where(Delivery.status == status)
    if before_id:
        stmt = stmt.where(Delivery.id < before_id)
    return list(session.scalars(stmt.order_by(Delivery.id.desc()).limit(limit)))


def status_counts(session: Session, workspace_id: int, source: str | None) -> dict[str, int]:
    stmt = select(Delivery.status, func.count()).where(Delivery.workspace_id == workspace_id)
    if source:
        stmt = stmt.where(Delivery.source == source)
    return {s: int(n) for s, n in session.execute(stmt.group_by(Delivery.status))}


def sent_by_channel(
    session: Session, workspace_id: int, since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """Channel -> (deliveries sent in [since, until), their cost)."""
    stmt = (
        select(Delivery.channel, func.count(), func.coalesce(func.sum(Delivery.cost), 0))
        .where(
            Delivery.workspace_id == workspace_id,
            Delivery.sent_at >= since,
            Delivery.sent_at < until,
        )
        .group_by(Delivery.channel)
    )
    return {str(c): (int(n), int(cost)) for c, n, cost in session.execute(stmt)}


def add_events(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Append delivery events; a repeated ``dedupe_key`` is ignored. Returns how many were
    new."""
    if not rows:
        return 0
    stmt = insert_ignore(session, DeliveryEvent, list(rows), conflict=["dedupe_key"])
    return len(session.execute(stmt.returning(DeliveryEvent.id)).all())


def delivery_events(session: Session, delivery_id: int) -> list[DeliveryEvent]:
    return list(
        session.scalars(
            select(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        )
    )


def test_customers(session: Session, workspace_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Customer.id)
            .where(
                Customer.workspace_id == workspace_id,
                Customer.is_test.is_(True),
                Customer.merged_into_id.is_(None),
            )
            .order_by(Customer.id)
        )
    )


def add_call_tasks(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert_ignore(session, CallTask, list(rows), conflict=["delivery_id"]))


def call_tasks(
    session: Session, workspace_id: int, *, status: str | None, limit: int
) -> list[CallTask]:
    stmt = select(CallTask).where(CallTask.workspace_id == workspace_id)
    if status:
        stmt = stmt.where(CallTask.status == status)
    return list(session.scalars(stmt.order_by(CallTask.due_at, CallTask.id).limit(limit)))


def call_task(session: Session, workspace_id: int, task_id: int) -> CallTask | None:
    stmt = select(CallTask).where(CallTask.id == task_id, CallTask.workspace_id == workspace_id)
    return session.scalar(lock_rows(session, stmt))


def clear_cascade(session: Session, delivery_ids: Sequence[int]) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)))
        .values(cascade_at=None)
        .execution_options(synchronize_session=False)
    )


def unsent(session: Session, workspace_id: int, source: str) -> list[tuple[int, int]]:
    """``(id, decision id)`` of a source's deliveries not handed to a provider yet (planned
    or queued), locked so a dispatcher cannot take them meanwhile."""
    stmt = select(Delivery.id, Delivery.decision_id).where(
        Delivery.workspace_id == workspace_id,
        Delivery.source == source,
        Delivery.status.in_((PLANNED, QUEUED)),
    )
    locked: Any = lock_rows(session, cast("Select[Any]", stmt.order_by(Delivery.id)))
    return [(int(i), int(d)) for i, d in session.execute(locked).all()]


def mark_cancelled(session: Session, ids: Sequence[int], now: datetime) -> None:
    _set_all(session, ids, status=CANCELLED, reason="cancelled", cascade_at=None, updated_at=now)


def stop_cascades(session: Session, workspace_id: int, source: str) -> int:
    """A source's sent deliveries no longer fall through to their cascade's next step."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.workspace_id == workspace_id,
            Delivery.source == source,
            Delivery.cascade_at.is_not(None),
        )
        .values(cascade_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def load_decisions(session: Session, ids: Sequence[int]) -> list[ContactDecision]:
    """Load ledger rows into the session at once (before updating them one by one). The
    session holds loaded rows only while someone refers to them: keep the list."""
    rows: list[ContactDecision] = []
    for start in range(0, len(ids), CHUNK):
        rows.extend(
            session.scalars(
                select(ContactDecision).where(
                    ContactDecision.id.in_(list(ids[start : start + CHUNK]))
                )
            )
        )
    return rows


# Take up to :want whole tokens from a provider's bucket after refilling it for the time
# that passed (PostgreSQL; one statement, the row lock orders concurrent takers).
TAKE_TOKENS = text(
    """
    WITH current AS (
        SELECT provider_id,
               LEAST(:capacity, tokens + GREATEST(0, EXTRACT(EPOCH FROM
                     statement_timestamp() - stamp)) * :rate) AS available
        FROM message_rate_buckets WHERE provider_id = :provider FOR UPDATE
    )
    UPDATE message_rate_buckets AS bucket
    SET tokens = current.available - LEAST(:want, FLOOR(current.available)),
        stamp = statement_timestamp()
    FROM current WHERE bucket.provider_id = current.provider_id
    RETURNING LEAST(:want, FLOOR(current.available)) AS taken, current.available
    """
)


def take_tokens(
    session: Session, provider_id: int, *, want: int, rate: float, capacity: float
) -> tuple[int, float]:
    """``(taken, available before)`` from a provider's shared token bucket (created full).
    PostgreSQL only."""
    session.execute(
        insert_ignore(
            session,
            RateBucket,
            {"provider_id": provider_id, "tokens": capacity, "stamp": func.statement_timestamp()},
            conflict=["provider_id"],
        )
    )
    row = session.execute(
        TAKE_TOKENS,
        {"provider": provider_id, "want": want, "rate": rate, "capacity": capacity},
    ).one()
    return int(row.taken), float(row.available)
