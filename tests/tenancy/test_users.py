"""People: argon2-hashed passwords, roles per brand or workspace, lock-out, permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.errors import Conflict, Unauthorized, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.tenancy import service, users
from tactful.tenancy.models import RoleGrant, User
from tests.conftest import Tenant


def test_initialisation_creates_an_owner_who_can_sign_in(runtime: Runtime) -> None:
    with runtime.db.scope() as session:
        result = service.initialize(session, phone_region="RU", timezone="Europe/Moscow")
    assert result.owner_email == "owner@example.com"
    assert result.owner_password is not None
    with runtime.db.scope() as session:
        stored = session.scalars(select(User)).one()
        assert result.owner_password not in stored.password_hash
        assert stored.password_hash.startswith("$argon2")
        principal = users.authenticate_user(
            session,
            workspace_id=result.workspace.id,
            email="Owner@Example.com",
            password=result.owner_password,
        )
    assert (principal.role, principal.brand_roles) == ("owner", ((None, "owner"),))
    assert principal.can("users.manage")
    with runtime.db.scope() as session:
        again = service.initialize(session, phone_region="RU", timezone="Europe/Moscow")
    assert (again.owner_email, again.owner_password) == (None, None)


def test_roles_give_exactly_their_permissions(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        other = service.create_brand(
            session, workspace_id=tenant.workspace_id, slug="garden", name="Garden"
        )
        analyst = users.create_user(
            session,
            workspace_id=tenant.workspace_id,
            email="ann@example.com",
            name="Ann",
            password="correct horse",
            roles=[(None, "analyst")],
            actor="test",
        )
        marketer = users.create_user(
            session,
            workspace_id=tenant.workspace_id,
            email="max@example.com",
            name="Max",
            password="correct horse",
            roles=[(other.id, "marketer")],
            actor="test",
        )
        a = users.principal_for(session, analyst)
        m = users.principal_for(session, marketer)
    assert a.can("reports.view")
    assert not a.can("customers.view_pii")
    assert not a.can("campaigns.launch")
    assert m.can("campaigns.launch", brand_id=other.id)
    assert not m.can("campaigns.launch", brand_id=tenant.brand_id)
    assert not m.can("campaigns.approve", brand_id=other.id)
    with pytest.raises(ValueError, match="unknown permission"):
        m.can("rockets.launch")


def test_bad_input_and_lock_out(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        for kwargs, field in [
            ({"email": "nope", "password": "correct horse", "roles": [(None, "admin")]}, "email"),
            (
                {"email": "a@example.com", "password": "short", "roles": [(None, "admin")]},
                "password",
            ),
            (
                {
                    "email": "a@example.com",
                    "password": "correct horse",
                    "roles": [(None, "wizard")],
                },
                "roles[0].role",
            ),
            ({"email": "a@example.com", "password": "correct horse", "roles": []}, "roles"),
        ]:
            with pytest.raises(ValidationFailed) as err:
                users.create_user(
                    session, workspace_id=tenant.workspace_id, name="A", actor="test", **kwargs
                )  # type: ignore[arg-type]
            assert err.value.field == field
        assert session.scalar(select(func.count()).select_from(User)) == 1  # the owner
        users.create_user(
            session,
            workspace_id=tenant.workspace_id,
            email="b@example.com",
            name="B",
            password="correct horse",
            roles=[(None, "support")],
            actor="test",
        )
        with pytest.raises(Conflict):
            users.create_user(
                session,
                workspace_id=tenant.workspace_id,
                email="B@example.com",
                name="B",
                password="correct horse",
                roles=[(None, "support")],
                actor="test",
            )
        assert session.scalar(select(func.count()).select_from(RoleGrant)) == 2
    start = clock.now()
    with clock.frozen(start):
        for _ in range(5):
            with runtime.db.scope() as session, pytest.raises(Unauthorized):
                users.authenticate_user(
                    session,
                    workspace_id=tenant.workspace_id,
                    email="b@example.com",
                    password="wrong password",
                )
        with runtime.db.scope() as session, pytest.raises(Unauthorized, match="too many"):
            users.authenticate_user(
                session,
                workspace_id=tenant.workspace_id,
                email="b@example.com",
                password="correct horse",
            )
        clock.advance(timedelta(minutes=16))
        with runtime.db.scope() as session:
            principal = users.authenticate_user(
                session,
                workspace_id=tenant.workspace_id,
                email="b@example.com",
                password="correct horse",
            )
    assert principal.role == "support"
