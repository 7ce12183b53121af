"""The few places where SQLite and PostgreSQL differ: upserts, row locks, JSON paths.

Every feature goes through these helpers instead of branching on the dialect itself.
"""

from __future__ import annotations

import contextlib
import io
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Insert,
    Select,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

from tactful.core.db import open_sqlite_outside_pool, unchanged_sqlite_writer


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
    update: Sequence[str] = (),
    assign: Mapping[str, Any] | None = None,
) -> Insert:
    """``INSERT … ON CONFLICT (conflict) DO UPDATE SET update = excluded.update``, and each
    column of ``assign`` to its expression (``{"count": Model.count + 1}``: the stored row's
    value plus one)."""
    table = _table(model)
    stmt: postgresql.Insert | sqlite.Insert
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(rows)
    else:
        stmt = sqlite.insert(table).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=list(conflict),
        set_={**{name: stmt.excluded[name] for name in update}, **(assign or {})},
    )


_T = TypeVar("_T", bound=Any)
_R = TypeVar("_R")


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


# SQLite's unixepoch() (3.38 and later) reads a timestamp about 2.5 times faster than
# strftime('%s') (1.5M timestamps: 0.36 s against 0.92 s), which the contact policy's read
# of the ledger history at campaign scale notices.
_UNIXEPOCH = sqlite3.sqlite_version_info >= (3, 38, 0)


def epoch_seconds(session: Session, column: Any) -> ColumnElement[Any]:
    """A timestamp column as whole Unix seconds (integer), computed by the database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.cast(func.floor(func.extract("epoch", column)), BigInteger)
    if _UNIXEPOCH:
        return func.cast(func.unixepoch(column), BigInteger)
    return func.cast(func.strftime("%s", column), BigInteger)


def reserve_ids(session: Session, model: type[DeclarativeBase] | Table, count: int) -> list[int]:
    """``count`` fresh primary-key values for a bulk insert with explicit ids.

    SQLite hands out max(rowid) + 1 and the write transaction holds the database lock, so
    the next ``count`` values are ours; PostgreSQL draws them from the table's sequence.
    """
    if count <= 0:
        return []
    table = _table(model)
    pk = next(iter(table.primary_key.columns))
    if session.get_bind().dialect.name == "postgresql":
        sequence = session.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk.name}
        ).scalar_one()
        rows = session.execute(
            text("SELECT nextval(:s) FROM generate_series(1, :n)"), {"s": sequence, "n": count}
        )
        return [int(r[0]) for r in rows]
    start = int(session.execute(select(func.coalesce(func.max(pk), 0))).scalar_one()) + 1
    return list(range(start, start + count))


def insert_with_ids(
    session: Session, model: type[DeclarativeBase] | Table, rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert rows (all with the same keys, named as the table's columns) under fresh
    primary keys; returns the keys in the rows' order.

    ``INSERT … RETURNING`` cannot promise its rows in the order given on SQLite, so
    SQLAlchemy's ordered bulk insert runs one statement per row there (500 rows, 500
    statements); ids reserved first make it one executemany on either database.
    """
    table = _table(model)
    ids = reserve_ids(session, table, len(rows))
    if ids:
        pk = next(iter(table.primary_key.columns)).key
        session.execute(
            table.insert(), [{**row, pk: id_} for row, id_ in zip(rows, ids, strict=True)]
        )
    return ids


def copy_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert many plain rows fast: COPY on PostgreSQL, one prepared executemany on SQLite.

    Values must already be in the database's representation (ints, strings, naive UTC
    datetimes for SQLite, aware ones for PostgreSQL, JSON as text).
    """
    if rows:
        _copy_rows(session.connection(), table, columns, rows)


def _copy_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    if connection.dialect.name == "postgresql":
        raw: Any = connection.connection.dbapi_connection  # psycopg 3's connection
        names = ", ".join(f'"{c}"' for c in columns)
        with (
            raw.cursor() as cursor,
            cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    connection.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',  # noqa: S608
        [tuple(row) for row in rows],
    )


def copy_columns(
    session: Session, table: Table, columns: Mapping[str, Any], *, key: str, count: int
) -> None:
    """Insert ``count`` rows given column by column, as a campaign's decisions are.

    Each value of ``columns`` is a 1-D NumPy array with one value per row, or one value for
    every row; values are in the database's representation, as for :func:`copy_rows`.
    ``key`` names the integer column whose values are mostly distinct (a customer id);
    the other arrays should take few distinct values, or count up by one (fresh ids).

    PostgreSQL gets the rows with COPY. SQLite would spend most of a million-row insert
    binding parameters one row at a time, so the rows go in with one ``INSERT … SELECT``
    instead: each row becomes a single integer (its key and the number of its combination
    of the other arrays' values) in one JSON array that ``json_each`` reads, and the
    combinations go into a small temporary table. A campaign's million decisions into a
    ledger of 1.5M rows: 5.1 / 5.7 s, against 8.8 / 8.9 s built and bound row by row (the
    commit after it took about 0.7 s longer). The same ``INSERT … SELECT`` on PostgreSQL,
    from ``unnest`` of two arrays, took 12.9 / 13.0 s against COPY's 13.6 / 14.4 s there:
    the durable server is bound by writing the WAL, and the gain did not pay for a second
    path.
    """
    _prepare_copy(session.connection(), table, columns, key=key, count=count)()


def _prepare_copy(
    connection: Connection, table: Table, columns: Mapping[str, Any], *, key: str, count: int
) -> Callable[[], None]:
    """:func:`copy_columns` in two parts: the rows encoded now (Python's work), and the
    returned function, which writes them (mostly the database's work)."""
    arrays = {name: value for name, value in columns.items() if isinstance(value, np.ndarray)}
    constants = {name: value for name, value in columns.items() if name not in arrays}
    if any(len(value) != count for value in arrays.values()):
        raise ValueError("copy_columns needs one value per row in every array")
    if count <= 0:
        return lambda: None
    if connection.dialect.name == "sqlite":
        packed = _pack(arrays, constants, key, count)
        if packed is not None:
            return lambda: packed.insert(connection, table)
    names = [*arrays, *constants]
    lists = [value.tolist() for value in arrays.values()]
    lists += [[value] * count for value in constants.values()]
    rows = list(zip(*lists, strict=True))
    return lambda: _copy_rows(connection, table, names, rows)


@contextlib.contextmanager
def copy_columns_behind(
    session: Session, table: Table, *, key: str
) -> Iterator[Callable[[Mapping[str, Any], int], None]]:
    """:func:`copy_columns` for rows that come in chunks, each inserted on a second thread
    while the caller computes the next one.

    Yields ``put(columns, count)``, which encodes the rows on the caller's thread and
    leaves the writing to the other. The database does that without holding Python's lock,
    so on two cores the chunks' computation hides behind the writing (a campaign's million
    decisions: see ``policy.bulk``). One chunk is written at a time, in order; ``put``
    waits for the one before. The caller must not use the session until the block
    ends: leaving it waits for the last insert, and raises the first error of any.
    """
    connection = session.connection()
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="tactful-copy") as writer:

        def put(columns: Mapping[str, Any], count: int) -> None:
            write = _prepare_copy(connection, table, columns, key=key, count=count)
            if pending:
                pending.pop().result()
            pending.append(writer.submit(write))

        try:
            yield put
        except BaseException:
            for future in pending:  # the connection must be free before the rollback
                future.exception()
            raise
        for future in pending:
            future.result()


_MOST_COMBINATIONS = 2**20  # of the other columns' values, for the temporary table
_PACKED_CHUNK = 4_000_000  # rows per INSERT … SELECT


@dataclass
class _Packed:
    """Rows encoded for SQLite's ``INSERT … SELECT`` from ``json_each`` (``copy_columns``)."""

    counting: dict[str, int]  # columns that count up by one: their first value
    key: str
    variant_names: list[str]
    variants: list[tuple[Any, ...]]
    constants: Mapping[str, Any]
    bits: int
    packed: np.ndarray

    def insert(self, connection: Connection, table: Table) -> None:
        temp = "_tactful_copy_variants"
        slots = ", ".join(f"v{i}" for i in range(len(self.variant_names)))
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{temp}")
        connection.exec_driver_sql(
            f"CREATE TEMP TABLE {temp} (code INTEGER PRIMARY KEY{', ' if slots else ''}{slots})"
        )
        marks = ", ".join("?" for _ in range(len(self.variant_names) + 1))
        connection.exec_driver_sql(f"INSERT INTO temp.{temp} VALUES ({marks})", self.variants)  # noqa: S608
        mask = (1 << self.bits) - 1
        names = ", ".join(
            f'"{c}"' for c in [*self.counting, self.key, *self.variant_names, *self.constants]
        )
        # chunks keep each JSON text far below SQLite's longest string (1e9 bytes)
        for start in range(0, len(self.packed), _PACKED_CHUNK):
            selected = [
                *(f"{first + start} + j.key" for first in self.counting.values()),
                f"j.value >> {self.bits}",
                *(f"v.v{i}" for i in range(len(self.variant_names))),
                *("?" for _ in self.constants),
            ]
            chunk = self.packed[start : start + _PACKED_CHUNK]
            connection.exec_driver_sql(
                f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '  # noqa: S608
                f"FROM json_each(?) AS j CROSS JOIN temp.{temp} AS v "
                f"ON v.code = (j.value & {mask})",
                (
                    *self.constants.values(),
                    orjson.dumps(chunk, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                ),
            )
        connection.exec_driver_sql(f"DROP TABLE temp.{temp}")


def _pack(
    arrays: Mapping[str, np.ndarray], constants: Mapping[str, Any], key: str, count: int
) -> _Packed | None:
    """SQLite's encoding for :func:`copy_columns`; None when the values do not pack."""
    position = np.arange(count, dtype=np.int64)
    counting: dict[str, int] = {}
    codes, uniques = [], []
    for name, values in arrays.items():
        if name == key:
            continue
        if values.dtype.kind in "iu" and np.array_equal(values - values[0], position):
            counting[name] = int(values[0])
            continue
        code, unique = pd.factorize(values, use_na_sentinel=False)
        codes.append(code.astype(np.int64))
        # factorize turns None into NaN; SQLite stores both as NULL
        uniques.append(
            [None if isinstance(u, float) and math.isnan(u) else u for u in unique.tolist()]
        )
    radix = [len(u) for u in uniques]
    if np.prod(np.array(radix, dtype=np.float64)) >= 2**62:  # would overflow int64
        return None
    combined = np.zeros(count, dtype=np.int64)
    for code, size in zip(codes, radix, strict=True):
        combined = combined * size + code
    combos, kind = np.unique(combined, return_inverse=True)  # sorts: fast for many rows
    if len(combos) > _MOST_COMBINATIONS:
        return None
    bits = max(1, int(len(combos) - 1).bit_length())
    keys = arrays[key].astype(np.int64)
    if keys.min() < 0 or int(keys.max()) >= 1 << (62 - bits):
        return None
    variants: list[tuple[Any, ...]] = []
    for combo in combos.tolist():
        row, rest = [], combo
        for unique, size in zip(reversed(uniques), reversed(radix), strict=True):
            rest, code = divmod(rest, size)
            row.append(unique[code])
        variants.append((len(variants), *reversed(row)))
    return _Packed(
        counting=counting,
        key=key,
        variant_names=[name for name in arrays if name != key and name not in counting],
        variants=variants,
        constants=constants,
        bits=bits,
        packed=(keys << bits) | kind.astype(np.int64),
    )


_NULLS = "fetch_int_table reads integer columns without NULLs"


def _int_table_sql(session: Session, stmt: Select[Any]) -> str:
    """The select with its columns named c0, c1 … and its values inlined."""
    labelled = stmt.with_only_columns(
        *[column.label(f"c{i}") for i, column in enumerate(stmt.selected_columns)]
    )
    dialect = session.get_bind().dialect
    return str(labelled.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def fetch_int_table(session: Session, stmt: Select[Any]) -> np.ndarray:
    """Run a select of integer columns (no NULLs) and return an (rows, columns) int64 array.

    Millions of rows come back as text the database builds itself and a C parser reads,
    instead of one Python tuple per row: several times faster at campaign scale.
    PostgreSQL sends the rows with COPY TO STDOUT. SQLite builds one list per column with
    ``group_concat`` (the aggregates of one query step through the same rows in the same
    order); concatenating a row's values first cost more than the query itself (1.5M rows
    of six columns: 2.6 s against 1.1 s).
    """
    labels = [f"c{i}" for i in range(len(stmt.selected_columns))]
    compiled = _int_table_sql(session, stmt)
    connection = session.connection()
    if session.get_bind().dialect.name == "postgresql":
        raw: Any = connection.connection.dbapi_connection  # psycopg 3's connection
        buffer = io.BytesIO()
        with raw.cursor() as cursor, cursor.copy(f"COPY ({compiled}) TO STDOUT") as copy:
            for block in copy:
                buffer.write(block)
        blob = buffer.getvalue().decode()
        if "\\N" in blob:  # COPY's NULL
            raise ValueError(_NULLS)
        if not blob:
            return np.zeros((0, len(labels)), dtype=np.int64)
        frame = pd.read_csv(io.StringIO(blob), sep="\t", header=None, dtype=np.int64, engine="c")
        return np.ascontiguousarray(frame.to_numpy(dtype=np.int64))
    row = connection.exec_driver_sql(_sqlite_lists(compiled, len(labels))).one()
    return _parse_lists(row)


def _sqlite_lists(compiled: str, width: int) -> str:
    """SQLite's query for :func:`fetch_int_table`: the row count and one list per column."""
    lists = ", ".join(f"group_concat(c{i})" for i in range(width))
    return f"SELECT count(*), {lists} FROM ({compiled})"  # noqa: S608


def _parse_lists(row: Sequence[Any]) -> np.ndarray:
    count, *texts = row
    columns = [np.fromstring(text or "", dtype=np.int64, sep=",") for text in texts]
    if any(len(column) != count for column in columns):
        raise ValueError(_NULLS)
    return np.stack(columns, axis=1) if columns else np.zeros((count, 0), dtype=np.int64)


def fetch_int_table_aside(
    session: Session, stmt: Select[Any], then: Callable[[np.ndarray], _R]
) -> Callable[[], _R]:
    """:func:`fetch_int_table` started at once on another connection and thread, where that
    connection reads what the session would: SQLite, the session in a read-write
    transaction that has changed nothing yet (``db.unchanged_sqlite_writer``); ``then``
    (the table's first use, which must not touch the session) runs on that thread too.
    Call the result for what ``then`` returns. Elsewhere the session itself reads when the
    result is called.

    SQLite runs the query without holding Python's lock, so the caller's other reads and
    its computation go on meanwhile: a campaign's 1.5M-row ledger is read while the
    audience's profiles, contacts and consents are (see ``policy.bulk``)."""
    connection = session.connection()
    aside = connection.dialect.name == "sqlite" and unchanged_sqlite_writer(connection)
    raw = open_sqlite_outside_pool(connection.engine) if aside else None
    if raw is None:
        return lambda: then(fetch_int_table(session, stmt))
    sql = _sqlite_lists(_int_table_sql(session, stmt), len(stmt.selected_columns))

    def read() -> _R:
        try:
            row = raw.execute(sql).fetchone()  # one statement: one consistent snapshot
        finally:
            raw.close()
        return then(_parse_lists(row))

    reader = ThreadPoolExecutor(1, thread_name_prefix="tactful-read")
    future = reader.submit(read)
    reader.shutdown(wait=False)
    return future.result
