"""Hot statements run straight on the driver.

A small Core select executed through SQLAlchemy costs about 110 µs of CPU on PostgreSQL
(compiled-cache lookup, parameter construction, execution context, result metadata); this
path costs about 60. For the statements a POS operation runs hundreds of times a second
(and the customer events every message sent records), :func:`execute` compiles a statement
once per dialect, then for each call applies the parameters' bind processors, runs the SQL
on the session's own driver connection (the same transaction), and applies the result
columns' processors: the values are the ones SQLAlchemy would give.

What stays as with SQLAlchemy: the ``before_cursor_execute`` listeners run (the read-only
scopes' guard refuses writes; tests catching statements see them), and driver errors are
raised as SQLAlchemy's ``DBAPIError`` subclasses (a broken connection is invalidated).
Statements must be built once (module constants or cached builders): plans are kept by
statement for the life of the process. Statements with expanding ``IN`` parameters, or
leaving columns to Python-side defaults, are refused: give them to the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import ClauseElement, TextClause

Processor = Callable[[Any], Any]

# plans by (dialect name, id of the statement); the statement is kept so its id stays its own
_PLANS: dict[tuple[str, int], tuple[ClauseElement, _Plan]] = {}
_MAX_PLANS = 1_000  # far above the hot statements' shapes: a statement built per call is a bug
_CURSOR = "tactful_direct_cursor"  # the key of a driver connection's cursor in its info
_BOUND = "tactful_direct_bound"  # the key of a session's _Bound in its info


@dataclass
class _Plan:
    sql: str
    positional: bool  # parameters by position (SQLite's ``?``), else by name
    # every parameter (in order, repeats included, when positional) with its processor
    binds: tuple[tuple[str, Processor | None], ...]
    fixed: dict[str, Any]  # values the statement binds itself (literals such as ``count + 1``)
    result_types: tuple[Any, ...]  # the result columns' types (none for a text clause)
    returns_rows: bool | None  # None: a text clause (the cursor tells)
    results: list[tuple[int, Processor]] | None = field(default=None)  # set on first rows


def _plan(dialect: Dialect, stmt: ClauseElement) -> _Plan:
    # as for executemany: no implicit RETURNING of the primary key
    compiled: Any = stmt.compile(dialect=dialect, for_executemany=True)
    if compiled.post_compile_params or compiled.escaped_bind_names:
        raise ValueError("statements with expanding or escaped parameters go through the session")
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError(
            "statements leaving columns to Python-side defaults go through the session: "
            + ", ".join(c.name for c in (*compiled.insert_prefetch, *compiled.update_prefetch))
        )
    processors = compiled._bind_processors
    if compiled.positional:
        names = list(compiled.positiontup)
    else:
        names = list(dict.fromkeys(compiled.bind_names.values()))
    fixed = {
        name: bind.effective_value
        for bind, name in compiled.bind_names.items()
        if not bind.required and bind.callable is None
    }
    return _Plan(
        sql=compiled.string,
        positional=bool(compiled.positional),
        binds=tuple((name, processors.get(name)) for name in names),
        fixed=fixed,
        result_types=tuple(column[3] for column in compiled._result_columns),
        returns_rows=None if isinstance(stmt, TextClause) else bool(compiled._result_columns),
    )


def _plan_of(dialect: Dialect, stmt: ClauseElement) -> _Plan:
    key = (dialect.name, id(stmt))
    found = _PLANS.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    if len(_PLANS) >= _MAX_PLANS:
        raise RuntimeError(f"more than {_MAX_PLANS} direct statements: one is built per call")
    plan = _plan(dialect, stmt)
    _PLANS[key] = (stmt, plan)
    return plan


def _arguments(plan: _Plan, params: Mapping[str, Any]) -> Any:
    values = {**plan.fixed, **params} if plan.fixed else params
    if plan.positional:
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in plan.binds
        )
    return {
        name: values[name] if process is None else process(values[name])
        for name, process in plan.binds
    }


def _result_processors(plan: _Plan, dialect: Dialect, description: Any) -> list[tuple[int, Any]]:
    if len(plan.result_types) != len(description):
        return []  # a text clause: the driver's values as they come
    found = []
    for index, (type_, column) in enumerate(zip(plan.result_types, description, strict=True)):
        process = type_._cached_result_processor(dialect, column[1])
        if process is not None:
            found.append((index, process))
    return found


@dataclass(frozen=True)
class _Bound:
    """Where a session's statements run during one of its transactions."""

    transaction: SessionTransaction  # the session's root transaction
    conn: Connection
    dialect: Dialect
    driver: Any  # the driver's connection
    cursor: Any


def _bound(session: Session) -> _Bound:
    """The session's connection, driver connection and cursor, looked up once per
    transaction (``Session.connection()`` costs about 10 µs a call, which the statements of
    a POS confirm noticed) and kept in the session's info while that transaction is the
    session's and still active; a new transaction, or one rolled back by a failure, looks
    them up again."""
    transaction = session.get_transaction()
    found: _Bound | None = session.info.get(_BOUND)
    if found is not None and found.transaction is transaction and transaction.is_active:
        return found
    conn = session.connection()
    pooled = conn.connection
    driver = pooled.driver_connection
    assert driver is not None
    # one cursor per driver connection, kept with it (its info goes when it is replaced)
    cursor = pooled.info.get(_CURSOR)
    if cursor is None:
        cursor = pooled.info[_CURSOR] = driver.cursor()
    root = session.get_transaction()
    assert root is not None
    found = session.info[_BOUND] = _Bound(root, conn, conn.dialect, driver, cursor)
    return found


class Rows(list[tuple[Any, ...]]):
    """The rows a statement returned (plain tuples), and its row count."""

    rowcount: int = -1

    def first(self) -> tuple[Any, ...] | None:
        return self[0] if self else None

    def one(self) -> tuple[Any, ...]:
        if len(self) != 1:
            raise LookupError(f"expected exactly one row, got {len(self)}")
        return self[0]


def execute(
    session: Session,
    stmt: ClauseElement,
    params: Mapping[str, Any] | list[dict[str, Any]] | None = None,
) -> Rows:
    """Run ``stmt`` with ``params`` (one mapping, or a list of them for
    ``executemany``) in the session's transaction, straight on its driver connection."""
    bound = _bound(session)
    conn, dialect, driver, cursor = bound.conn, bound.dialect, bound.driver, bound.cursor
    plan = _plan_of(dialect, stmt)
    arguments: Any
    if isinstance(params, list):  # not Sequence: an ABC check costs a microsecond
        many, arguments = True, [_arguments(plan, p) for p in params]
    else:
        many, arguments = False, _arguments(plan, params or {})
    conn.dispatch.before_cursor_execute(conn, cursor, plan.sql, arguments, None, many)
    try:
        if not many:
            cursor.execute(plan.sql, arguments)
        elif len(arguments) == 1:  # psycopg's executemany would enter pipeline mode
            cursor.execute(plan.sql, arguments[0])
        else:
            cursor.executemany(plan.sql, arguments)
        returns = plan.returns_rows
        if returns is None:
            returns = cursor.description is not None
        raw = cursor.fetchall() if returns else []
    except dialect.loaded_dbapi.Error as exc:
        if dialect.is_disconnect(exc, driver, cursor):
            conn.invalidate(exc)
        raise DBAPIError.instance(
            plan.sql, arguments, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
    if raw and plan.results is None:
        plan.results = _result_processors(plan, dialect, cursor.description)
    if raw and plan.results:
        processed = []
        for row in raw:
            values = list(row)
            for index, process in plan.results:
                values[index] = process(values[index])
            processed.append(tuple(values))
        raw = processed
    rows = Rows(raw)
    rows.rowcount = cursor.rowcount
    return rows
