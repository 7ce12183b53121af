"""The few places where SQLite and PostgreSQL differ: upserts, row locks, JSON paths.

Every feature goes through these helpers instead of branching on the dialect itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Insert, Select, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session


def _table(model: type[DeclarativeBase] | Table) -> Table:
    if isinstance(model, Table):
        return model
    table = model.__table__
    assert isinstance(table, Table)
    return table


def insert_ignore(
    session: Session,
    model: type[DeclarativeBase] | Table,
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    conflict: Sequence[str],
) -> Insert:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING`` for the session's dialect."""
    table = _table(model)
    if session.get_bind().dialect.name == "postgresql":
        return (
            postgresql.insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=list(conflict))
        )
    return sqlite.insert(table).values(rows).on_conflict_do_nothing(index_elements=list(conflict))


def upsert(
    session: Session,
    model: type[DeclarativeBase] | Table,
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
) -> Insert:
    """``INSERT … ON CONFLICT (conflict) DO UPDATE SET update = excluded.update``."""
    table = _table(model)
    stmt: postgresql.Insert | sqlite.Insert
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(rows)
    else:
        stmt = sqlite.insert(table).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=list(conflict),
        set_={name: stmt.excluded[name] for name in update},
    )


_T = TypeVar("_T", bound=Any)


def lock_rows(session: Session, stmt: Select[_T], *, skip_locked: bool = False) -> Select[_T]:
    """Lock the selected rows until the transaction ends.

    PostgreSQL takes ``FOR UPDATE`` row locks (optionally ``SKIP LOCKED``). On SQLite every
    read-write transaction already holds the database's write lock from ``BEGIN IMMEDIATE``,
    so the statement is returned unchanged.
    """
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=skip_locked)
    return stmt


def json_text(session: Session, column: ColumnElement[Any], key: str) -> ColumnElement[Any]:
    """The text value of a top-level key of a JSON column."""
    if session.get_bind().dialect.name == "postgresql":
        return column.op("->>")(key)
    return func.json_extract(column, f"$.{key}")


def bulk_insert_chunk_size(session: Session, columns: int) -> int:
    """Rows per multi-row INSERT that stay below the dialect's bound-parameter limit."""
    limit = 32_000 if session.get_bind().dialect.name == "sqlite" else 60_000
    return max(1, limit // max(1, columns))
