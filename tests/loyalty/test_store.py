"""The loyalty store's lot queries use the partial indexes made for them.

A partial index (``WHERE remaining > 0``) serves a query only when the planner can see that
the query's condition implies the index's. Written with a bound parameter (``remaining >
$1``), the condition hides that from PostgreSQL's generic plan of a prepared statement,
which then scans the lots table, so PostgreSQL plans the statement afresh at every execution
instead. These tests catch the statements as they are executed and ask each database for its
plan: PostgreSQL for the generic one, with table scans switched off so that only an unusable
index leaves one; SQLite (which looks at the bound values) for the plan it uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.loyalty import store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@contextmanager
def lot_statements(runtime: Runtime) -> Iterator[list[tuple[str, Any]]]:
    """The statements over ``loyalty_lots`` executed meanwhile, with their parameters."""
    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "loyalty_lots" in statement:
            caught.append((statement, parameters))

    engine = runtime.db.engine
    event.listen(engine, "before_cursor_execute", catch)
    try:
        yield caught
    finally:
        event.remove(engine, "before_cursor_execute", catch)


def plan(connection: Connection, statement: str, parameters: Any) -> str:
    """The plan the database uses for ``statement``; on PostgreSQL the generic one of the
    statement prepared as the driver prepares repeated statements."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = statement
    for number, name in enumerate(names, start=1):
        numbered = numbered.replace(f"%({name})s", f"${number}")
    raw = connection.connection.driver_connection
    assert raw is not None
    values = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
    with raw.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(sql.SQL("PREPARE lots_plan AS {}").format(sql.SQL(numbered)))  # type: ignore[arg-type]
        try:
            cursor.execute(sql.SQL("EXPLAIN EXECUTE lots_plan ({})").format(values))
            return "\n".join(str(row[0]) for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE lots_plan")


def confirm_state(bursts: tuple[datetime, int, int] | None) -> Callable[[Session], object]:
    """A confirm's state read, without or with the redemption bursts."""
    return lambda s: store.confirm_state(
        s,
        program_id=1,
        key="pos:1",
        account_id=1,
        terminal_id="T1",
        since=NOW - timedelta(days=365),
        bursts=bursts,
    )


QUERIES: dict[str, tuple[Callable[[Session], object], str]] = {
    "a confirm's state (the open lots)": (confirm_state(None), "ix_loyalty_lots_open"),
    "a redeeming confirm's state": (
        confirm_state((NOW - timedelta(minutes=10), 5, 50)),
        "ix_loyalty_lots_open",
    ),
    "an account's open lots": (lambda s: store.open_lots(s, 1), "ix_loyalty_lots_open"),
    "lots due to expire": (
        lambda s: store.due_expiring_lots(s, NOW, 100),
        "ix_loyalty_lots_expiring",
    ),
    "pending lots due": (lambda s: store.due_pending_lots(s, NOW, 100), "ix_loyalty_lots_"),
}


@pytest.mark.parametrize("query", list(QUERIES))
def test_lot_queries_use_the_partial_indexes(runtime: Runtime, query: str) -> None:
    run, index = QUERIES[query]
    with lot_statements(runtime) as caught, runtime.db.scope() as session:
        run(session)
    assert len(caught) == 1
    with runtime.db.engine.connect() as connection:
        found = plan(connection, *caught[0])
    assert index in found, found
    assert not re.search(r"Seq Scan on loyalty_lots|SCAN loyalty_lots(?! USING)", found), found
