"""The dialect helpers give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.exc import IntegrityError

from tactful.core import db, dialect
from tactful.core.runtime import Runtime
from tactful.core.types import UTCDateTime

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    # the fraction is dropped (SQLite reads timestamps to the millisecond)
    datetime(1999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
    datetime(2026, 3, 12, 19, 11, 46, 33_681, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),  # past 32-bit seconds
]


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "before-3.38"])
def test_epoch_seconds_are_whole_unix_seconds(
    runtime: Runtime, legacy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if legacy:  # SQLite before 3.38 has no unixepoch(): strftime('%s') instead
        monkeypatch.setattr(dialect, "_UNIXEPOCH", False)
    with runtime.db.scope(readonly=True) as session:
        found = [
            session.scalar(
                select(dialect.epoch_seconds(session, bindparam("t", moment, UTCDateTime())))
            )
            for moment in [*MOMENTS, None]
        ]
    assert found == [0, 946_684_799, 1_773_342_706, 2_147_483_648, None]


def _rows_select(rows: list[tuple[int | None, ...]]) -> Select[Any]:
    """A select of literal rows that SQLite and PostgreSQL both read (no VALUES aliases)."""
    parts = [
        select(*(literal(value, BigInteger).label(f"x{i}") for i, value in enumerate(row)))
        for row in rows
    ]
    sub = union_all(*parts).subquery()
    return select(*sub.c)


def test_fetch_int_table_keeps_each_row_together(runtime: Runtime) -> None:
    rows = [(3, -1, 2**40), (1, 0, 7), (2, 5, -(2**40)), (3, 9, 0)]
    stmt = _rows_select(rows)
    with runtime.db.scope(readonly=True) as session:
        found = dialect.fetch_int_table(session, stmt)
        nothing = dialect.fetch_int_table(session, stmt.where(stmt.selected_columns[0] > 10))
    assert found.dtype == np.int64
    assert found.tolist() == [list(row) for row in rows]
    assert nothing.shape == (0, 3)


def test_fetch_int_table_refuses_nulls(runtime: Runtime) -> None:
    # one NULL in each column: SQLite's lists would still be of equal length
    stmt = _rows_select([(1, None), (3, 4), (None, 6)])
    with runtime.db.scope(readonly=True) as session, pytest.raises(ValueError, match="NULLs"):
        dialect.fetch_int_table(session, stmt)


def _probe_table(runtime: Runtime) -> Table:
    table = Table(
        "copy_probe",
        MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("customer", BigInteger, nullable=False),
        Column("status", String(20)),
        Column("step", Integer),
        Column("source", String(20)),
        Column("note", String(20)),
    )
    table.create(runtime.db.engine)
    return table


@pytest.mark.parametrize(
    ("largest", "most"),
    [(10**6, 2**20), (2**61, 2**20), (10**6, 1)],
    ids=["packed", "key-too-wide-to-pack", "too-many-combinations"],
)
def test_copy_columns_stores_every_row_as_given(
    runtime: Runtime, largest: int, most: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialect, "_MOST_COMBINATIONS", most)
    table = _probe_table(runtime)
    customers = np.array([7, largest, 0, 7, 123_456], dtype=np.int64)
    status = np.array(["sent", None, "sent", "suppressed", None], dtype=object)
    step = np.array([0, 2, 0, 1, 2], dtype=np.int64)
    with runtime.db.scope() as session:
        dialect.copy_columns(
            session,
            table,
            {
                "id": np.arange(41, 46, dtype=np.int64),
                "customer": customers,
                "status": status,
                "step": step,
                "source": "campaign:spring",
                "note": None,
            },
            key="customer",
            count=5,
        )
    with runtime.db.scope(readonly=True) as session:
        stored = session.execute(select(table).order_by(table.c.id)).all()
    assert [tuple(row) for row in stored] == [
        (41, 7, "sent", 0, "campaign:spring", None),
        (42, largest, None, 2, "campaign:spring", None),
        (43, 0, "sent", 0, "campaign:spring", None),
        (44, 7, "suppressed", 1, "campaign:spring", None),
        (45, 123_456, None, 2, "campaign:spring", None),
    ]


def test_copy_columns_refuses_arrays_of_the_wrong_length(runtime: Runtime) -> None:
    table = _probe_table(runtime)
    with runtime.db.scope() as session:
        dialect.copy_columns(
            session,
            table,
            {"id": np.array([1]), "customer": np.array([5]), "source": "a"},
            key="customer",
            count=1,
        )
    with runtime.db.scope() as session, pytest.raises(ValueError, match="one value per row"):
        dialect.copy_columns(
            session,
            table,
            {"id": np.array([2, 3]), "customer": np.array([5, 6, 7]), "source": "b"},
            key="customer",
            count=2,
        )
    with runtime.db.scope(readonly=True) as session:
        stored = session.execute(select(table.c.id, table.c.customer, table.c.source)).all()
    assert [tuple(row) for row in stored] == [(1, 5, "a")]


def test_copy_columns_on_sqlite_counts_combinations_not_column_sizes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three columns of 128 values each could combine 2M ways; these vary together, so
    there are 128 combinations and the rows still go in with one INSERT … SELECT."""
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL takes COPY")
    monkeypatch.setattr(dialect, "_MOST_COMBINATIONS", 1_000)
    monkeypatch.setattr(dialect, "_PACKED_CHUNK", 100)  # 512 rows: five statements

    def row_by_row(*args: object) -> None:
        raise AssertionError("took the row-by-row path")

    monkeypatch.setattr(dialect, "_copy_rows", row_by_row)
    table = _probe_table(runtime)
    value = np.arange(512, dtype=np.int64) % 128
    with runtime.db.scope() as session:
        dialect.copy_columns(
            session,
            table,
            {
                "id": np.arange(1, 513, dtype=np.int64),
                "customer": np.arange(512, dtype=np.int64) * 7,
                "status": np.array([f"s{v}" for v in value], dtype=object),
                "step": value,
                "source": np.array([f"c{v}" for v in value], dtype=object),
            },
            key="customer",
            count=512,
        )
    with runtime.db.scope(readonly=True) as session:
        stored = session.execute(select(table).order_by(table.c.id)).all()
    assert [tuple(row) for row in stored] == [
        (i + 1, i * 7, f"s{i % 128}", i % 128, f"c{i % 128}", None) for i in range(512)
    ]


def _chunk(first: int, count: int) -> dict[str, Any]:
    ids = np.arange(first, first + count, dtype=np.int64)
    return {
        "id": ids,
        "customer": ids * 10,
        "status": np.array(["sent" if i % 2 else None for i in ids.tolist()], dtype=object),
        "step": ids % 3,
        "source": "campaign:spring",
    }


def _stored(runtime: Runtime, table: Table) -> list[tuple[Any, ...]]:
    with runtime.db.scope(readonly=True) as session:
        return [tuple(row) for row in session.execute(select(table).order_by(table.c.id))]


def test_copy_columns_behind_writes_every_chunk_in_order(runtime: Runtime) -> None:
    table = _probe_table(runtime)
    with runtime.db.scope() as session:
        with dialect.copy_columns_behind(session, table, key="customer") as put:
            for first, count in [(1, 4), (5, 0), (5, 3), (8, 1)]:
                put(_chunk(first, count), count)
        # the block has waited for the last chunk: the session sees every row
        assert session.scalar(select(func.count()).select_from(table)) == 8
    assert _stored(runtime, table) == [
        (i, i * 10, "sent" if i % 2 else None, i % 3, "campaign:spring", None) for i in range(1, 9)
    ]


def test_copy_columns_behind_raises_a_chunks_error_and_stores_nothing(runtime: Runtime) -> None:
    table = _probe_table(runtime)
    with runtime.db.scope() as session:
        dialect.copy_columns(session, table, _chunk(1, 2), key="customer", count=2)
    before = _stored(runtime, table)
    # SQLAlchemy's error on SQLite; the driver's own from PostgreSQL's COPY
    with (
        pytest.raises((IntegrityError, psycopg.IntegrityError)),
        runtime.db.scope() as session,
        dialect.copy_columns_behind(session, table, key="customer") as put,
    ):
        put(_chunk(3, 2), 2)
        put(_chunk(2, 2), 2)  # id 2 exists
        put(_chunk(10, 2), 2)
    assert _stored(runtime, table) == before
    # and the block left the connection free: the next scope writes as usual
    with runtime.db.scope() as session:
        dialect.copy_columns(session, table, _chunk(3, 1), key="customer", count=1)
    assert len(_stored(runtime, table)) == 3


def test_unchanged_sqlite_writer_is_a_write_scope_that_changed_nothing(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    table = _probe_table(runtime)
    with runtime.db.scope() as session:
        assert db.unchanged_sqlite_writer(session.connection())
        session.execute(select(table.c.id))
        assert db.unchanged_sqlite_writer(session.connection())
        dialect.copy_columns(session, table, _chunk(1, 1), key="customer", count=1)
        assert not db.unchanged_sqlite_writer(session.connection())
    with runtime.db.scope(readonly=True) as session:
        assert not db.unchanged_sqlite_writer(session.connection())


def test_fetch_int_table_aside_reads_what_the_session_sees(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a session that changed nothing reads on another connection (and thread);
    once it has written, the rows it has not committed must count, so it reads itself."""
    table = _probe_table(runtime)
    with runtime.db.scope() as session:
        dialect.copy_columns(session, table, _chunk(1, 3), key="customer", count=3)
    threads: list[str] = []
    parse = dialect._parse_lists

    def spy(row: Any) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return parse(row)

    monkeypatch.setattr(dialect, "_parse_lists", spy)
    stmt = select(table.c.id, table.c.customer).order_by(table.c.id)
    with runtime.db.scope() as session:
        early = dialect.fetch_int_table_aside(session, stmt, np.ndarray.tolist)
        assert early() == [[1, 10], [2, 20], [3, 30]]
        dialect.copy_columns(session, table, _chunk(4, 1), key="customer", count=1)
        late = dialect.fetch_int_table_aside(session, stmt, np.ndarray.tolist)
        assert late() == [[1, 10], [2, 20], [3, 30], [4, 40]]
    if runtime.db.engine.dialect.name == "sqlite":
        assert threads[0].startswith("tactful-read")
        assert threads[1] == threading.current_thread().name
    else:  # PostgreSQL reads through COPY, in the session
        assert threads == []


def test_upsert_assigns_expressions_over_the_stored_row(runtime: Runtime) -> None:
    table = _probe_table(runtime)
    rows = [
        {"id": 1, "customer": 10, "status": "new", "step": 1},
        {"id": 2, "customer": 20, "status": "new", "step": 1},
    ]
    for batch in ([rows[0]], rows, rows):
        with runtime.db.scope() as session:
            session.execute(
                dialect.upsert(
                    session,
                    table,
                    batch,
                    conflict=["id"],
                    update=["customer"],
                    assign={"step": table.c.step + 1, "status": "seen"},
                )
            )
    with runtime.db.scope(readonly=True) as session:
        found = session.execute(
            select(table.c.id, table.c.customer, table.c.status, table.c.step).order_by(table.c.id)
        ).all()
    # row 1: inserted, then bumped twice; row 2: inserted by the second batch, bumped by the third
    assert [tuple(r) for r in found] == [(1, 10, "seen", 3), (2, 20, "seen", 2)]
