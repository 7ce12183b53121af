"""PostgreSQL plans a statement afresh each time it runs unprepared, and for each of a prepared
statement's first five runs. Pooled connections prepare a statement on its second run, and
keep what they prepared through an idle ping and through rollbacks, which still store
nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from tactful.core.db import Database, create_db_engine
from tactful.tenancy.models import Workspace
from tactful.testing.postgres import TempPostgres

pytestmark = pytest.mark.postgres

_QUERY = select(Workspace.id).where(Workspace.id > bindparam("after")).limit(1)
# the count's own text does not match: it may be prepared too
_PREPARED = text(
    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT workspaces.id%'"
)


@pytest.fixture
def pg_url(pg_server: TempPostgres) -> Iterator[str]:
    name = f"prepared_{time.monotonic_ns()}"
    url = pg_server.create_database(name)
    with create_db_engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE workspaces (id bigint PRIMARY KEY)"))
    yield url
    pg_server.drop_database(name)


def _run_query(db: Database) -> None:
    with db.scope() as session:
        assert session.execute(_QUERY, {"after": 0}).all() == []


def _prepared(db: Database) -> int:
    with db.scope() as session:
        return int(session.execute(_PREPARED).scalar_one())


def _prepared_twice(pg_url: str, **options: float) -> Database:
    """A database behind a pool of one connection, which has prepared ``_QUERY``."""
    db = Database(create_db_engine(pg_url, pool_size=1, **options))
    _run_query(db)
    _run_query(db)
    assert _prepared(db) == 1
    return db


def test_a_statement_is_prepared_on_its_second_run(pg_url: str) -> None:
    db = Database(create_db_engine(pg_url, pool_size=1))  # every scope gets one connection
    _run_query(db)
    assert _prepared(db) == 0
    _run_query(db)
    assert _prepared(db) == 1
    db.dispose()


def test_a_connection_pinged_after_sitting_idle_keeps_its_prepared_statements(
    pg_url: str,
) -> None:
    """The ping ends its transaction with a commit: psycopg deallocates every prepared
    statement of a connection that rolls back."""
    db = _prepared_twice(pg_url, ping_after_idle=0.05)
    with db.scope() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    time.sleep(0.1)  # past the idle threshold: the next checkout pings
    with db.scope() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
        assert session.execute(_PREPARED).scalar_one() == 1
    db.dispose()


def test_a_failed_scope_rolls_back_and_keeps_the_prepared_statements(pg_url: str) -> None:
    db = _prepared_twice(pg_url)
    with pytest.raises(RuntimeError), db.scope() as session:
        session.execute(text("INSERT INTO workspaces (id) VALUES (7)"))
        assert session.execute(_QUERY, {"after": 0}).all() == [(7,)]
        raise RuntimeError("the request was refused")
    _run_query(db)  # the row is gone
    assert _prepared(db) == 1
    db.dispose()


def test_a_transaction_whose_statement_failed_rolls_back_and_the_connection_goes_on(
    pg_url: str,
) -> None:
    db = _prepared_twice(pg_url)
    with pytest.raises(IntegrityError), db.scope() as session:
        session.execute(text("INSERT INTO workspaces (id) VALUES (1)"))
        session.execute(text("INSERT INTO workspaces (id) VALUES (1)"))
    _run_query(db)
    assert _prepared(db) == 1
    db.dispose()


def test_a_connection_given_back_in_a_transaction_is_rolled_back(pg_url: str) -> None:
    db = _prepared_twice(pg_url)
    raw = db.engine.raw_connection()  # the pool's own rollback, when it takes it back
    with raw.cursor() as cursor:
        cursor.execute("INSERT INTO workspaces (id) VALUES (7)")
    raw.close()
    session = db.session()  # a session closed without committing
    session.execute(text("INSERT INTO workspaces (id) VALUES (8)"))
    session.close()
    _run_query(db)
    assert _prepared(db) == 1
    db.dispose()
