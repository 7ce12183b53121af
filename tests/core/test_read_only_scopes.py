"""A read-only scope never commits, so a write in it would be lost: on every database it is
refused at once, whether it comes from the ORM's flush or from a statement, and nothing
changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import bindparam, select, text

from tactful.core.db import Database, WriteInReadOnlyScope, create_db_engine
from tactful.core.runtime import Runtime
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant


def _names(runtime: Runtime) -> list[str]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(Workspace.name).order_by(Workspace.id)))


def test_a_read_with_a_common_table_expression_is_not_taken_for_a_write(
    runtime: Runtime, tenant: Tenant
) -> None:
    before = _names(runtime)
    with runtime.db.scope(readonly=True) as session:
        found = session.execute(
            text(
                'WITH t AS (SELECT id, name AS "update", name AS updated_name FROM workspaces '
                "WHERE name <> 'DELETE FROM' ORDER BY id) SELECT updated_name FROM t"
            )
        ).scalars()
        assert list(found) == before


def test_a_flush_in_a_read_only_scope_is_refused(runtime: Runtime, tenant: Tenant) -> None:
    before = _names(runtime)
    refused = pytest.raises(WriteInReadOnlyScope, match="must not write: UPDATE workspaces")
    with refused, runtime.db.scope(readonly=True) as session:
        workspace = session.get(Workspace, tenant.workspace_id)
        assert workspace is not None
        workspace.name = "changed"
        session.flush()
    assert _names(runtime) == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO workspaces (slug, name) VALUES ('x', 'x')",
        "  delete from workspaces",
        "UPDATE workspaces SET name = 'changed'",
        "WITH t AS (INSERT INTO workspaces (slug, name) VALUES ('x', 'x') RETURNING id) "
        "SELECT id FROM t",
        "with gone as (\n  delete from workspaces returning id\n) select count(*) from gone",
        "WITH t AS (SELECT id FROM workspaces) UPDATE workspaces SET name = 'changed' "
        "WHERE id IN (SELECT id FROM t)",
        "WITH t AS (SELECT id FROM workspaces) UPDATE workspaces AS w SET name = 'changed' "
        "FROM t WHERE w.id = t.id",
    ],
)
def test_a_writing_statement_in_a_read_only_scope_is_refused(
    runtime: Runtime, tenant: Tenant, statement: str
) -> None:
    before = _names(runtime)
    with pytest.raises(WriteInReadOnlyScope), runtime.db.scope(readonly=True) as session:
        session.execute(text(statement))
    assert _names(runtime) == before
    with runtime.db.scope(readonly=True) as session:  # reads go on as before
        assert session.scalar(text("SELECT count(*) FROM workspaces")) == len(before)


@contextmanager
def _one_connection(runtime: Runtime) -> Iterator[Database]:
    """The runtime's database behind a pool of one connection: every scope gets the same."""
    engine = create_db_engine(
        runtime.db.engine.url.render_as_string(hide_password=False), pool_size=1
    )
    try:
        yield Database(engine)
    finally:
        engine.dispose()


def test_reads_take_no_transaction_on_postgresql_and_writes_still_do(
    runtime: Runtime, tenant: Tenant
) -> None:
    """On PostgreSQL a read-only scope's statements run outside a transaction (under READ
    COMMITTED each takes its own snapshot anyway); SQLite's read transaction keeps one
    snapshot for the scope. The connection goes back to the pool transactional: the next
    read-write scope on it is one transaction, whose failure stores nothing."""
    postgres = runtime.db.dialect == "postgresql"
    before = _names(runtime)
    with _one_connection(runtime) as database:
        with database.scope(readonly=True) as session:
            assert session.scalar(select(Workspace.name).limit(1)) is not None
            raw: Any = session.connection().connection.driver_connection
            if postgres:
                assert raw.autocommit
                assert raw.info.transaction_status == TransactionStatus.IDLE
            else:
                assert raw.in_transaction
        with pytest.raises(RuntimeError), database.scope() as session:
            session.execute(text("UPDATE workspaces SET name = 'changed'"))
            assert session.connection().connection.driver_connection is raw
            if postgres:
                assert not raw.autocommit
                assert raw.info.transaction_status == TransactionStatus.INTRANS
            else:
                assert raw.in_transaction
            raise RuntimeError("the request failed")
    assert _names(runtime) == before


def test_a_read_only_scope_keeps_the_connections_prepared_statements(runtime: Runtime) -> None:
    """psycopg forgets every prepared statement of a connection when it rolls back (and
    deallocates them on the server), so the read-only scopes that used to end by rolling back
    their read transaction cost the next requests on that connection a fresh parse and plan
    of each statement. On PostgreSQL they no longer open one."""
    if runtime.db.dialect != "postgresql":
        pytest.skip("SQLite prepares statements in the driver's own cache")
    query = select(Workspace.id).where(Workspace.id > bindparam("after")).limit(1)
    prepared = text(  # its own text does not match: it is prepared too
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT workspaces.id%'"
    )
    with _one_connection(runtime) as database:
        for _ in range(2):  # a pooled connection prepares a statement on its second run
            with database.scope() as session:
                session.execute(query, {"after": 0}).all()
        with database.scope() as session:
            assert session.scalar(prepared) == 1
        with database.scope(readonly=True) as session:
            session.execute(query, {"after": 0}).all()
        with database.scope() as session:
            assert session.scalar(prepared) == 1
