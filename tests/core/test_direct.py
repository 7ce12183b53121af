"""Statements run straight on the driver give what SQLAlchemy gives, keep the read-only guard
and the statement listeners, and raise SQLAlchemy's errors, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlalchemy.orm import registry

from tactful.core import direct
from tactful.core.db import WriteInReadOnlyScope, json_text
from tactful.core.dialect import insert_ignore
from tactful.core.runtime import Runtime
from tactful.core.types import JSONType, UTCDateTime

MOSCOW = ZoneInfo("Europe/Moscow")
AT = datetime(2026, 3, 12, 22, 11, 46, 250_000, tzinfo=MOSCOW)  # 19:11:46.25 UTC

METADATA = MetaData()
ITEMS = Table(
    "direct_items",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
    Column("at", UTCDateTime(), nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("data", JSONType, nullable=False),
    Column("count", Integer, nullable=False),
    Column("kind", String(10), nullable=False, default="plain"),
)
INSERT = insert(ITEMS).values(
    id=bindparam("id"),
    name=bindparam("name"),
    at=bindparam("at"),
    flag=bindparam("flag"),
    data=bindparam("data"),
    count=bindparam("count"),
    kind=bindparam("kind"),
)
READ = select(ITEMS.c.id, ITEMS.c.name, ITEMS.c.at, ITEMS.c.flag, ITEMS.c.data).order_by(ITEMS.c.id)
BUMP = (
    update(ITEMS)
    .where(ITEMS.c.id == bindparam("item"))
    .values(count=ITEMS.c.count + 1)
    .returning(ITEMS.c.id, ITEMS.c.count)
)


class Item:
    """A row of ITEMS through the ORM (whose failed flush deactivates a transaction)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


registry().map_imperatively(Item, ITEMS)

ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "one",
        "at": AT,
        "flag": True,
        "data": {"a": [1, "x"]},
        "count": 0,
        "kind": "a",
    },
    {"id": 2, "name": "two", "at": None, "flag": False, "data": {}, "count": 5, "kind": "b"},
]


@pytest.fixture
def items(runtime: Runtime) -> Iterator[Table]:
    METADATA.create_all(runtime.db.engine)
    try:
        yield ITEMS
    finally:
        METADATA.drop_all(runtime.db.engine)


def _stored(runtime: Runtime) -> list[Any]:
    with runtime.db.scope(readonly=True) as session:
        return [tuple(row) for row in session.execute(READ)]


def test_rows_and_values_are_the_ones_sqlalchemy_gives(runtime: Runtime, items: Table) -> None:
    with runtime.db.scope() as session:
        inserted = direct.execute(session, INSERT, ROWS)
        assert inserted.rowcount == 2
        assert inserted == []
    with runtime.db.scope(readonly=True) as session:
        mine = direct.execute(session, READ)
        theirs = [tuple(row) for row in session.execute(READ)]
    assert (
        mine
        == theirs
        == [
            (
                1,
                "one",
                datetime(2026, 3, 12, 19, 11, 46, 250_000, tzinfo=UTC),
                True,
                {"a": [1, "x"]},
            ),
            (2, "two", None, False, {}),
        ]
    )
    assert mine[0][2].tzinfo is UTC
    assert mine.first() == mine[0]


def test_literals_the_statement_binds_itself_and_returning(runtime: Runtime, items: Table) -> None:
    with runtime.db.scope() as session:
        direct.execute(session, INSERT, ROWS)
        assert direct.execute(session, BUMP, {"item": 2}).one() == (2, 6)
        assert direct.execute(session, BUMP, {"item": 2}).one() == (2, 7)
        missing = direct.execute(session, BUMP, {"item": 9})
        assert missing == []
        assert missing.first() is None
        with pytest.raises(LookupError):
            missing.one()


def test_executemany_counts_only_new_rows(runtime: Runtime, items: Table) -> None:
    with runtime.db.scope() as session:
        ignore = insert_ignore(
            session,
            ITEMS,
            {name: bindparam(name) for name in ROWS[0]},
            conflict=["name"],
        )
        assert direct.execute(session, ignore, ROWS).rowcount == 2
        again = [ROWS[1], {**ROWS[0], "id": 3, "name": "three"}]
        assert direct.execute(session, ignore, again).rowcount == 1
    assert [row[:2] for row in _stored(runtime)] == [(1, "one"), (2, "two"), (3, "three")]


def test_a_bad_value_or_a_driver_error_stores_nothing(runtime: Runtime, items: Table) -> None:
    with runtime.db.scope() as session:
        direct.execute(session, INSERT, ROWS[:1])
    before = _stored(runtime)
    naive = {**ROWS[1], "at": datetime(2026, 1, 1)}
    with (
        pytest.raises(ValueError, match="naive datetime given where UTC is required"),
        runtime.db.scope() as session,
    ):
        direct.execute(session, INSERT, [ROWS[1], naive])
    with pytest.raises(IntegrityError), runtime.db.scope() as session:
        direct.execute(session, INSERT, ROWS[1])
        direct.execute(session, INSERT, {**ROWS[1], "id": 3})  # the name is taken
    assert _stored(runtime) == before
    with runtime.db.scope() as session:  # the pool's connection is still good
        assert direct.execute(session, INSERT, ROWS[1]).rowcount == 1


def test_each_transaction_of_a_session_runs_its_own_statements(
    runtime: Runtime, items: Table
) -> None:
    """The connection looked up for one transaction is not reused by the next, nor after a
    failure ended the transaction (nothing may run outside one, committed on its own)."""
    session = runtime.db.session()
    try:
        direct.execute(session, INSERT, ROWS[0])
        session.commit()
        direct.execute(session, INSERT, ROWS[1])  # a new transaction: rolled back below
        session.rollback()
        assert [row[0] for row in _stored(runtime)] == [1]
        direct.execute(session, INSERT, ROWS[1])
        session.add(Item(**{**ROWS[1], "id": 3}))  # the name is taken: the flush fails,
        with pytest.raises(IntegrityError):  # which deactivates the session's transaction
            session.flush()
        with pytest.raises(PendingRollbackError):
            direct.execute(session, INSERT, {**ROWS[1], "id": 4, "name": "four"})
        session.rollback()
        assert direct.execute(session, READ).first() == _stored(runtime)[0]
    finally:
        session.close()
    assert [row[0] for row in _stored(runtime)] == [1]


def test_read_only_scopes_refuse_writes(runtime: Runtime, items: Table) -> None:
    with pytest.raises(WriteInReadOnlyScope), runtime.db.scope(readonly=True) as session:
        direct.execute(session, INSERT, ROWS[0])
    assert _stored(runtime) == []


def test_statement_listeners_see_the_statements(runtime: Runtime, items: Table) -> None:
    seen: list[tuple[str, bool]] = []

    def note(_conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, many: bool) -> None:
        seen.append((statement.split(maxsplit=1)[0], many))

    event.listen(runtime.db.engine, "before_cursor_execute", note)
    try:
        with runtime.db.scope() as session:
            direct.execute(session, INSERT, ROWS)
            direct.execute(session, READ)
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", note)
    assert ("INSERT", True) in seen
    assert ("SELECT", False) in seen


def test_text_clauses_and_refused_statements(runtime: Runtime, items: Table) -> None:
    count = text("SELECT count(*) FROM direct_items WHERE name <> :name")
    expanding = select(ITEMS.c.id).where(ITEMS.c.id.in_(bindparam("ids", expanding=True)))
    defaulted = insert(ITEMS).values({name: bindparam(name) for name in ROWS[0] if name != "kind"})
    with runtime.db.scope() as session:
        direct.execute(session, INSERT, ROWS)
        assert direct.execute(session, count, {"name": "one"}).one() == (1,)
        with pytest.raises(ValueError, match="expanding"):
            direct.execute(session, expanding, {"ids": [1, 2]})
        with pytest.raises(ValueError, match="Python-side defaults go through the session: kind"):
            direct.execute(session, defaulted, {**ROWS[0], "id": 3, "name": "three"})
    assert [row[:2] for row in _stored(runtime)] == [(1, "one"), (2, "two")]


def test_json_parameters_orjson_refuses_still_round_trip(runtime: Runtime, items: Table) -> None:
    wide = {"big": 2**70, "list": [1.5, "ж"], "nested": {"ok": True}}
    with runtime.db.scope() as session:
        direct.execute(session, INSERT, {**ROWS[0], "data": wide})
        session.execute(INSERT, {**ROWS[1], "data": {"n": -(2**65)}})
    assert [row[4] for row in _stored(runtime)] == [wide, {"n": -(2**65)}]
    assert json_text({1: "a", "b": [2**64]}) == '{"1": "a", "b": [18446744073709551616]}'
    assert json_text({"a": [1, "x"]}) == '{"a":[1,"x"]}'
