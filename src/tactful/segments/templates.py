"""Member queries compiled once per definition and reused at every later moment.

Building a definition's Ibis expression and compiling it to SQL costs 30-50 ms of Python
per evaluation, as much as DuckDB takes to answer the query on a million customers. A
segment refreshed on a schedule or continuously is the same definition every time; only the
moment it is evaluated at changes. So the SQL is compiled into a *template*: the query's
text with each literal that depends on the moment (``now - 90 days``, today's date, ...)
cut out and remembered as an offset from the moment. Filling a template in is a string join.

A template is made by compiling the definition at the real moment and at two sentinel
moments far in the past (different years, months, days and hours). A timestamp or date
literal present at a sentinel but not at the real moment depends on the moment; its offset
from the sentinel is what the template remembers. The template is then filled in for the
real moment and for the second sentinel, and must reproduce the compiled SQL at both
exactly; when it does not (a literal that depends on the moment in any other way than by a
fixed offset), the definition gets no template and is compiled at every evaluation, as
before. Moments are taken in whole seconds.

DuckDB and PostgreSQL warehouses only; Spark evaluates through Ibis each time.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Hashable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops

from tactful.core.warehouse import Warehouse

SENTINELS = (
    datetime(1811, 3, 7, 5, 11, 13, tzinfo=UTC),
    datetime(1877, 11, 23, 17, 43, 29, tzinfo=UTC),
)
MAX_TEMPLATES = 512  # per warehouse; the oldest is dropped beyond it


@dataclass(frozen=True)
class Moment:
    """A literal cut out of a template: the moment (or its date) plus a fixed offset."""

    dtype: dt.DataType  # a timestamp or a date
    offset: timedelta

    def value(self, now: datetime) -> datetime | date:
        return now.date() + self.offset if self.dtype.is_date() else now + self.offset


@dataclass(frozen=True)
class Template:
    """SQL text around the moment literals: ``parts[0] m0 parts[1] m1 ... parts[-1]``."""

    parts: tuple[str, ...]
    moments: tuple[Moment, ...]

    def sql(self, backend: Any, now: datetime) -> str:
        pieces = [self.parts[0]]
        for moment, text in zip(self.moments, self.parts[1:], strict=True):
            pieces.append(_render(backend, moment.value(now), moment.dtype))
            pieces.append(text)
        return "".join(pieces)


# per warehouse: the table generation the templates were made for, and the templates by key
# (None: the definition cannot have one)
_TEMPLATES: weakref.WeakKeyDictionary[Warehouse, tuple[int, dict[Hashable, Template | None]]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def member_ids(
    warehouse: Warehouse, *, key: Hashable, build: Callable[[datetime], ibis.Table], now: datetime
) -> list[int]:
    """The ``customer_id`` column of the query ``build(now)`` makes, through the template
    of ``key`` (which must name everything the query depends on besides the moment)."""
    backend: Any = warehouse.con
    if warehouse.kind not in ("duckdb", "postgres"):
        return [int(v) for v in backend.to_pyarrow(build(now))["customer_id"].to_pylist()]
    sql = member_sql(warehouse, key=key, build=build, now=now)
    if warehouse.kind == "duckdb":
        column = backend.raw_sql(sql).arrow().read_all().column(0)
        return [int(v) for v in column.to_pylist()]
    with closing(backend.raw_sql(sql)) as cursor:
        return [int(row[0]) for row in cursor.fetchall()]


def member_sql(
    warehouse: Warehouse, *, key: Hashable, build: Callable[[datetime], ibis.Table], now: datetime
) -> str:
    """The SQL of ``build(now)``: filled in from the template of ``key``, or compiled (and
    a template made for the next time). ``now`` is taken in whole seconds."""
    backend: Any = warehouse.con
    now = now.replace(microsecond=0)
    with _LOCK:
        generation, known = _TEMPLATES.get(warehouse, (-1, {}))
        if generation != warehouse.generation:  # a table changed: templates are stale
            known = {}
            _TEMPLATES[warehouse] = (warehouse.generation, known)
        found = known.get(key, False)
    if isinstance(found, Template):
        return found.sql(backend, now)
    expr = build(now)
    sql: str = backend.compile(expr)
    if found is None:  # no template can be made for this definition
        return sql
    template = _make(backend, build, expr, sql, now)
    with _LOCK:
        if len(known) >= MAX_TEMPLATES:
            known.pop(next(iter(known)))
        known[key] = template
    return sql


def _make(
    backend: Any,
    build: Callable[[datetime], ibis.Table],
    expr: ibis.Table,
    sql: str,
    now: datetime,
) -> Template | None:
    first, second = SENTINELS
    at_first = build(first)
    at_second = build(second)
    seen_now = _moment_literals(expr)
    texts: dict[str, Moment] = {}
    for value, dtype in _moment_literals(at_first) - seen_now:
        base: datetime | date = first.date() if dtype.is_date() else first
        offset = value - base
        assert isinstance(offset, timedelta)
        texts[_render(backend, value, dtype)] = Moment(dtype, offset)
    source: str = backend.compile(at_first)
    if texts:
        pattern = re.compile("|".join(re.escape(text) for text in sorted(texts, key=len)[::-1]))
        template = Template(
            tuple(pattern.split(source)), tuple(texts[found] for found in pattern.findall(source))
        )
    else:  # the query does not depend on the moment
        template = Template((source,), ())
    if template.sql(backend, now) != sql:
        return None
    if template.sql(backend, second) != backend.compile(at_second):
        return None
    return template


def _moment_literals(expr: ibis.Table) -> set[tuple[Any, dt.DataType]]:
    found: set[tuple[Any, dt.DataType]] = set()
    for literal in expr.op().find(ops.Literal):
        assert isinstance(literal, ops.Literal)
        if literal.dtype.is_timestamp() or literal.dtype.is_date():
            found.add((literal.value, literal.dtype))
    return found


def _render(backend: Any, value: datetime | date, dtype: dt.DataType) -> str:
    literal = ops.Literal(value, dtype)
    compiler = backend.compiler
    node = compiler.visit_Literal(literal, value=literal.value, dtype=literal.dtype)
    text: str = node.sql(dialect=compiler.dialect)
    return text
