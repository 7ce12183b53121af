"""Catching the statements a piece of code runs and asking the database for their plans."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime


@contextmanager
def statements_over(runtime: Runtime, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements naming ``table`` executed meanwhile, with their parameters."""
    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if table in statement:
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
        cursor.execute(sql.SQL("PREPARE tested_plan AS {}").format(sql.SQL(numbered)))  # type: ignore[arg-type]
        try:
            cursor.execute(sql.SQL("EXPLAIN EXECUTE tested_plan ({})").format(values))
            return "\n".join(str(row[0]) for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE tested_plan")


def plan_of(runtime: Runtime, table: str, run: Callable[[Session], object]) -> str:
    """The plan of the one statement over ``table`` that ``run`` executes."""
    with statements_over(runtime, table) as caught, runtime.db.scope() as session:
        run(session)
    assert len(caught) == 1, caught
    with runtime.db.engine.connect() as connection:
        return plan(connection, *caught[0])
