"""Pooled PostgreSQL connections are checked only after sitting idle, not on every checkout:
a backend killed while idle is replaced before anyone uses it, and one killed while busy
costs the statement that finds it, never the next transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy import Engine, event, text

from tactful.core.db import Database, create_db_engine
from tactful.testing.postgres import TempPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_server: TempPostgres) -> Iterator[str]:
    name = f"liveness_{time.monotonic_ns()}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


def backend_pid(db: Database) -> int:
    with db.scope() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def kill(url: str, pid: int) -> None:
    """Terminate a backend from another connection (as a server restart or a proxy would)."""
    other = create_db_engine(url, pool_size=1)
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    other.dispose()


def count_statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    return seen


def test_a_busy_connection_is_not_pinged(pg_url: str) -> None:
    engine = create_db_engine(pg_url, pool_size=1, ping_after_idle=3600)
    db = Database(engine)
    first = backend_pid(db)
    seen = count_statements(engine)
    assert backend_pid(db) == first
    # only the statement itself: no liveness round trip on a connection in use
    assert seen == ["SELECT pg_backend_pid()"]
    db.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_use(pg_url: str) -> None:
    engine = create_db_engine(pg_url, pool_size=1, ping_after_idle=0.05)
    db = Database(engine)
    first = backend_pid(db)
    kill(pg_url, first)
    time.sleep(0.1)  # past the idle threshold, so the next checkout pings
    second = backend_pid(db)
    assert second != first
    with db.scope() as session:
        assert session.execute(text("SELECT 41 + 1")).scalar_one() == 42
    db.dispose()


def test_a_connection_killed_while_busy_fails_once_then_the_pool_recovers(pg_url: str) -> None:
    engine = create_db_engine(pg_url, pool_size=2, ping_after_idle=3600)
    db = Database(engine)
    with db.scope() as a, db.scope() as b:  # two pooled connections
        pids = {
            int(a.execute(text("SELECT pg_backend_pid()")).scalar_one()),
            int(b.execute(text("SELECT pg_backend_pid()")).scalar_one()),
        }
    for pid in pids:
        kill(pg_url, pid)
    with pytest.raises(sqlalchemy.exc.OperationalError), db.scope() as session:
        session.execute(text("SELECT 1"))
    # the disconnect invalidated the whole pool: every later transaction gets a live one
    for _ in range(3):
        assert backend_pid(db) not in pids
    db.dispose()
