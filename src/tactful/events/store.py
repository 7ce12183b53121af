"""Queries over the inbox, the event catalog and reference data (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import orjson
from sqlalchemy import JSON, Insert, Table, bindparam, delete, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from tactful.core import direct
from tactful.core.dialect import insert_ignore, lock_rows
from tactful.core.types import OrjsonJSON
from tactful.events.models import EventCatalog, InboxEvent, Product, Store, in_workspace


class UnresolvedRow(Protocol):
    """What the resolver reads of an inbox row."""

    seq: int
    workspace_id: int
    type: str
    name: str | None
    identities: list[Any]
    traits: dict[str, Any]
    properties: dict[str, Any]
    occurred_at: datetime
    source: str
    historical: bool


class UnloadedRow(Protocol):
    """What the loader copies of an inbox row to the warehouse."""

    seq: int
    workspace_id: int
    brand_id: int | None
    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    context: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    source: str
    historical: bool
    customer_id: int | None


def _columns(shape: type[Any]) -> list[InstrumentedAttribute[Any]]:
    return [getattr(InboxEvent, name) for name in shape.__annotations__]


# Plain rows of the named columns, not ORM objects: building an object (identity map,
# instance state) for each of thousands of rows cost about a fifth of reading a batch.
_UNRESOLVED_COLUMNS = _columns(UnresolvedRow)
_UNLOADED_COLUMNS = _columns(UnloadedRow)


def unresolved(session: Session, limit: int) -> Sequence[UnresolvedRow]:
    """The oldest inbox rows still waiting for identity resolution (locked on PostgreSQL)."""
    stmt = (
        select(*_UNRESOLVED_COLUMNS)
        .where(InboxEvent.resolved_at.is_(None))
        .order_by(InboxEvent.seq)
        .limit(limit)
    )
    rows = session.execute(lock_rows(session, stmt, skip_locked=True)).all()
    return cast(Sequence[UnresolvedRow], rows)


def unloaded(session: Session, limit: int) -> Sequence[UnloadedRow]:
    """The oldest resolved rows not yet copied to the warehouse."""
    stmt = (
        select(*_UNLOADED_COLUMNS)
        .where(InboxEvent.loaded_at.is_(None), InboxEvent.resolved_at.is_not(None))
        .order_by(InboxEvent.seq)
        .limit(limit)
    )
    return cast(Sequence[UnloadedRow], session.execute(stmt).all())


def insert_new_inbox_rows(
    session: Session, workspace_id: int, rows: Sequence[dict[str, Any]]
) -> set[str]:
    """Insert the rows whose message id the inbox does not hold yet; returns their ids.

    Rows (all with the same keys) go to the driver in one executemany, bind processing done
    column by column and JSON written by orjson: SQLAlchemy's executemany with RETURNING cost
    about 40 µs a row, most of an ingestion call. A row that another transaction inserts in
    the meantime is skipped by the unique key (and still reported as new).
    """
    ids = [r["message_id"] for r in rows]
    known: set[str] = set()
    for start in range(0, len(ids), 900):
        known.update(
            session.scalars(
                select(InboxEvent.message_id).where(
                    InboxEvent.workspace_id == workspace_id,
                    InboxEvent.message_id.in_(ids[start : start + 900]),
                )
            )
        )
    new = [r for r in rows if r["message_id"] not in known]
    if new:
        _execute_many(session, new)
    return {r["message_id"] for r in new}


# the compiled insert per dialect and column set: compiling it cost a single call more than
# the rest of its storing
_INSERTS: dict[tuple[str, tuple[str, ...]], tuple[str, list[str], bool]] = {}


def _insert_sql(session: Session, names: list[str]) -> tuple[str, list[str], bool]:
    """The SQL of the idempotent inbox insert, its parameter order and style."""
    dialect = session.get_bind().dialect
    key = (dialect.name, tuple(names))
    found = _INSERTS.get(key)
    if found is None:
        stmt: Insert = insert_ignore(
            session, InboxEvent, dict.fromkeys(names), conflict=["workspace_id", "message_id"]
        )
        compiled = stmt.compile(dialect=dialect, column_keys=names)
        order = list(compiled.positiontup or []) if compiled.positional else names
        found = _INSERTS[key] = (compiled.string, order, compiled.positional)
    return found


def _execute_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    table = InboxEvent.__table__
    dialect = session.get_bind().dialect
    sql, order, positional = _insert_sql(session, list(rows[0]))
    columns: list[list[Any]] = []
    for name in order:
        values = [row[name] for row in rows]
        column_type = table.c[name].type
        if isinstance(column_type, JSON | OrjsonJSON):
            columns.append([None if v is None else orjson.dumps(v).decode() for v in values])
            continue
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        columns.append(values if process is None else list(map(process, values)))
    params: list[Any] = list(zip(*columns, strict=True))
    if not positional:
        params = [dict(zip(order, values, strict=True)) for values in params]
    session.connection().exec_driver_sql(sql, params)


def mark_resolved(
    session: Session, assignments: Sequence[tuple[int, int | None]], at: datetime
) -> None:
    """Set customer and resolution time of inbox rows: ``(seq, customer_id)`` pairs.

    The time is set for many rows per statement and the customers by one Core executemany
    of plain integers: the ORM's bulk UPDATE by primary key cost about a tenth of a
    resolver run."""
    if not assignments:
        return
    _set_by_seq(session, [seq for seq, _ in assignments], resolved_at=at)
    owned = [{"s": seq, "c": customer} for seq, customer in assignments if customer is not None]
    if owned:
        table = cast(Table, InboxEvent.__table__)
        session.execute(
            update(table).where(table.c.seq == bindparam("s")).values(customer_id=bindparam("c")),
            owned,
        )


def mark_loaded(session: Session, seqs: Sequence[int], at: datetime) -> None:
    _set_by_seq(session, seqs, loaded_at=at)


def _set_by_seq(session: Session, seqs: Sequence[int], **values: Any) -> None:
    for start in range(0, len(seqs), 900):
        session.execute(
            update(InboxEvent)
            .where(InboxEvent.seq.in_(seqs[start : start + 900]))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def inbox_stats(session: Session) -> dict[str, Any]:
    """Unresolved and unloaded counts and the oldest waiting row's arrival time."""
    unresolved_count = session.scalar(
        select(func.count()).select_from(InboxEvent).where(InboxEvent.resolved_at.is_(None))
    )
    unloaded_count, oldest = session.execute(
        select(func.count(), func.min(InboxEvent.received_at)).where(InboxEvent.loaded_at.is_(None))
    ).one()
    return {
        "unresolved": int(unresolved_count or 0),
        "unloaded": int(unloaded_count or 0),
        "oldest_unloaded_received_at": oldest,
    }


def note_catalog(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Add unseen (event, property) pairs to the catalog."""
    if rows:
        session.execute(
            insert_ignore(
                session,
                EventCatalog,
                list(rows),
                conflict=["workspace_id", "type", "name", "property"],
            )
        )


# INSERT … ON CONFLICT DO NOTHING statements by (dialect, table, columns), built once: customer
# events are recorded, and their names noted in the catalog, on hot paths (a POS confirm,
# every message sent), where building the statement per call cost more than running it.
_PREBUILT: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _insert_ignore(
    session: Session,
    model: type[EventCatalog] | type[InboxEvent],
    columns: tuple[str, ...],
    conflict: list[str],
    returning: Any = None,
) -> Any:
    """The statement inserting rows of ``columns``, skipping conflicts (and returning
    ``returning`` of the new rows, if given)."""
    key = (session.get_bind().dialect.name, model.__tablename__, columns)
    stmt = _PREBUILT.get(key)
    if stmt is None:
        values: dict[str, Any] = {name: bindparam(name) for name in columns}
        stmt = insert_ignore(session, model, values, conflict=conflict)
        if returning is not None:
            stmt = stmt.returning(returning)
        _PREBUILT[key] = stmt
    return stmt


def insert_new_events(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert inbox rows of one shape; a repeated message id is skipped. How many were new.

    Straight on the driver (``core.direct``): SQLAlchemy's work per statement and per row
    cost more than the insert. The row count is the rows inserted (a conflict counts none)."""
    if not rows:
        return 0
    stmt = _insert_ignore(session, InboxEvent, tuple(rows[0]), ["workspace_id", "message_id"])
    return direct.execute(session, stmt, list(rows)).rowcount


def note_catalog_names(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Add unseen (event, property) pairs of one shape to the catalog; the names of the rows
    that were new."""
    if not rows:
        return set()
    conflict = ["workspace_id", "type", "name", "property"]
    stmt = _insert_ignore(session, EventCatalog, tuple(rows[0]), conflict, EventCatalog.name)
    return set(session.connection().execute(stmt, list(rows)).scalars())


def store_ids(session: Session, workspace_id: int) -> list[str]:
    """The ids of the workspace's stores."""
    return list(session.scalars(select(Store.store_id).where(Store.workspace_id == workspace_id)))


_R = TypeVar("_R", Store, Product)


def reference_rows(
    session: Session,
    model: type[_R],
    key: InstrumentedAttribute[str],
    workspace_id: int,
    ids: Sequence[str],
) -> dict[str, _R]:
    """Stores or products of a workspace by their ids."""
    found: dict[str, _R] = {}
    wanted = list(dict.fromkeys(ids))
    for start in range(0, len(wanted), 900):
        rows = session.scalars(
            select(model).where(
                model.workspace_id == workspace_id, key.in_(wanted[start : start + 900])
            )
        )
        for row in rows:
            found[getattr(row, key.key)] = row
    return found


def catalog(session: Session, workspace_id: int) -> list[EventCatalog]:
    return list(
        session.scalars(
            select(EventCatalog)
            .where(EventCatalog.workspace_id == workspace_id)
            .order_by(EventCatalog.type, EventCatalog.name, EventCatalog.property)
        )
    )


def customer_inbox(
    session: Session,
    workspace_id: int,
    customer_ids: Sequence[int],
    before: datetime | None,
    limit: int,
) -> list[InboxEvent]:
    stmt = select(InboxEvent).where(
        InboxEvent.workspace_id == workspace_id, InboxEvent.customer_id.in_(customer_ids)
    )
    if before is not None:
        stmt = stmt.where(InboxEvent.occurred_at < before)
    return list(session.scalars(stmt.order_by(InboxEvent.occurred_at.desc()).limit(limit)))


def prune_loaded(session: Session, before: datetime) -> int:
    result = session.execute(delete(InboxEvent).where(InboxEvent.loaded_at < before))
    return int(getattr(result, "rowcount", 0))


# what triggers read of an event (not its identities, traits or context)
_TRIGGER_COLUMNS = (
    InboxEvent.seq,
    InboxEvent.workspace_id,
    InboxEvent.message_id,
    InboxEvent.type,
    InboxEvent.name,
    InboxEvent.customer_id,
    InboxEvent.properties,
    InboxEvent.occurred_at,
)


def live_range(session: Session, workspace_id: int, seq_from: int, seq_to: int) -> list[Any]:
    """Live rows resolved to a customer, as plain rows of ``_TRIGGER_COLUMNS``."""
    return list(
        session.execute(
            select(*_TRIGGER_COLUMNS)
            .where(
                in_workspace(workspace_id),
                InboxEvent.seq >= seq_from,
                InboxEvent.seq <= seq_to,
                InboxEvent.historical.is_(False),
                InboxEvent.customer_id.is_not(None),
            )
            .order_by(InboxEvent.seq)
        )
    )
