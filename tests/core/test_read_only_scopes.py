"""A read-only scope never commits, so a write in it would be lost: on every database it is
refused at once, whether it comes from the ORM's flush or from a statement, and nothing
changes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from tactful.core.db import WriteInReadOnlyScope
from tactful.core.runtime import Runtime
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant


def _names(runtime: Runtime) -> list[str]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(Workspace.name).order_by(Workspace.id)))


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
