"""Workspaces, brands, API keys, the audit log and first-start initialisation."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core.errors import Unauthorized, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.tenancy import service
from tactful.tenancy.models import ApiKey, AuditEntry, Brand, Workspace
from tests.conftest import Tenant


def _count(runtime: Runtime, model: type) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_initialize_is_idempotent(runtime: Runtime) -> None:
    with runtime.db.scope() as session:
        first = service.initialize(session, phone_region="RU", timezone="Europe/Moscow")
    with runtime.db.scope() as session:
        second = service.initialize(session, phone_region="RU", timezone="Europe/Moscow")
    assert first.created is True
    assert first.admin_key is not None
    assert first.admin_key.startswith("tk_")
    assert (second.created, second.admin_key) == (False, None)
    assert second.workspace.id == first.workspace.id
    assert second.brand.id == first.brand.id
    assert (_count(runtime, Workspace), _count(runtime, Brand), _count(runtime, ApiKey)) == (
        1,
        1,
        1,
    )


def test_key_is_stored_hashed_and_authenticates(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert tenant.admin_key not in (stored.key_hash, stored.prefix)
        principal = service.authenticate_api_key(session, tenant.admin_key)
    assert principal.workspace_id == tenant.workspace_id
    assert principal.scopes == frozenset({"admin"})
    assert principal.actor == f"api_key:{stored.id}"


@pytest.mark.parametrize("bad", ["", "tk_nothing", "tk_12345678_wrongsecret", "garbage"])
def test_wrong_keys_are_refused(runtime: Runtime, tenant: Tenant, bad: str) -> None:
    with runtime.db.scope() as session, pytest.raises(Unauthorized):
        service.authenticate_api_key(session, bad)


def test_api_requires_a_key(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/v1/workspace")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 401
    assert body["instance"] == "/v1/workspace"
    assert body["detail"].startswith("an API key is required")


def test_segment_style_basic_auth_is_accepted(client: TestClient, tenant: Tenant) -> None:
    token = base64.b64encode(f"{tenant.admin_key}:".encode()).decode()
    response = client.get("/v1/workspace", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200
    assert response.json()["slug"] == "default"


def test_scoped_key_cannot_reach_admin_endpoints(
    runtime: Runtime, client: TestClient, tenant: Tenant
) -> None:
    created = client.post(
        "/v1/api-keys", json={"name": "site", "scopes": ["ingest"]}, headers=tenant.headers
    )
    assert created.status_code == 201
    body = created.json()
    assert body["scopes"] == ["ingest"]
    ingest_key = body["key"]
    denied = client.get("/v1/brands", headers={"Authorization": f"Bearer {ingest_key}"})
    assert denied.status_code == 403
    assert denied.json()["detail"] == "this credential lacks the 'admin' scope"

    revoked = client.delete(f"/v1/api-keys/{body['id']}", headers=tenant.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = client.get("/v1/brands", headers={"Authorization": f"Bearer {ingest_key}"})
    assert after.status_code == 401
    assert after.json()["detail"] == "the API key has been revoked"
    listed = client.get("/v1/api-keys", headers=tenant.headers).json()
    assert all("key" not in k for k in listed)


def test_brand_creation_is_validated_and_audited(
    runtime: Runtime, client: TestClient, tenant: Tenant
) -> None:
    bad = client.post("/v1/brands", json={"slug": "Bad Slug!", "name": "X"}, headers=tenant.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"] == [
        {
            "field": "slug",
            "reason": "use lowercase letters, digits and dashes (up to 63 characters)",
        }
    ]
    assert _count(runtime, Brand) == 1

    missing = client.post("/v1/brands", json={"slug": "garden"}, headers=tenant.headers)
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{"field": "name", "reason": "Field required"}]

    ok = client.post(
        "/v1/brands", json={"slug": "garden", "name": "Garden"}, headers=tenant.headers
    )
    assert ok.status_code == 201
    dup = client.post(
        "/v1/brands", json={"slug": "garden", "name": "Again"}, headers=tenant.headers
    )
    assert dup.status_code == 409
    assert _count(runtime, Brand) == 2

    audit = client.get(
        "/v1/audit-log", params={"action": "brand.created"}, headers=tenant.headers
    ).json()
    assert [(a["target_id"], a["details"]) for a in audit] == [
        (str(ok.json()["id"]), {"slug": "garden"}),
        (str(tenant.brand_id), {"slug": "main"}),
    ]


def test_invalid_scopes_and_regions_are_refused(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        with pytest.raises(ValidationFailed) as err:
            service.issue_api_key(
                session, workspace_id=tenant.workspace_id, name="x", scopes=["root"]
            )
        assert err.value.field == "scopes"
        with pytest.raises(ValidationFailed) as err:
            service.create_workspace(
                session, slug="other", name="Other", phone_region="XX", timezone="Europe/Moscow"
            )
        assert err.value.field == "phone_region"
        with pytest.raises(ValidationFailed) as err:
            service.create_workspace(
                session, slug="other", name="Other", phone_region="DE", timezone="Mars/Olympus"
            )
        assert err.value.field == "timezone"
    assert _count(runtime, Workspace) == 1
    assert _count(runtime, ApiKey) == 1
    assert _count(runtime, AuditEntry) == 3  # brand.created, api_key.issued, user.created


def test_channel_prices_default_and_override(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    with runtime.db.scope(readonly=True) as session:
        assert service.channel_prices(session, brand_id=tenant.brand_id) == service.DEFAULT_PRICES
    ok = client.put(
        "/v1/channel-prices",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id, "channel": "sms", "price": 290},
    )
    assert ok.status_code == 200
    assert (ok.json()["price"], ok.json()["currency"]) == (290, "RUB")
    bad = client.put(
        "/v1/channel-prices",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id, "channel": "sms", "price": -1},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "price"
    with runtime.db.scope(readonly=True) as session:
        prices = service.channel_prices(session, brand_id=tenant.brand_id)
    assert prices == {**service.DEFAULT_PRICES, "sms": 290}
