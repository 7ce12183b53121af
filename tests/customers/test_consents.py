"""Consents and subscriptions: per channel and brand, evidence, history, audit, events."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Consent, ConsentChange
from tactful.events.models import InboxEvent
from tests.conftest import Tenant


def _customer(client: TestClient, tenant: Tenant, worker: Worker) -> int:
    response = client.post(
        "/v1/identify",
        json={"userId": "c-1", "traits": {"email": "olga@example.com", "first_name": "Olga"}},
        headers=tenant.headers,
    )
    assert response.status_code == 200
    worker.drain()
    found = client.get(
        "/v1/customers/lookup",
        params={"kind": "email", "value": "OLGA@example.com"},
        headers=tenant.headers,
    )
    assert found.status_code == 200
    return int(found.json()["id"])


def test_consents_with_evidence_history_and_events(
    runtime: Runtime, client: TestClient, tenant: Tenant, worker: Worker
) -> None:
    cid = _customer(client, tenant, worker)
    body = {
        "source": "checkout",
        "evidence": {"text_version": "2026-01", "ip": "203.0.113.7"},
        "changes": [
            {"kind": "personal_data", "status": "granted"},
            {
                "kind": "advertising",
                "channel": "email",
                "status": "granted",
                "brand_id": tenant.brand_id,
            },
            {
                "kind": "topic",
                "topic": "promotions",
                "status": "granted",
                "brand_id": tenant.brand_id,
            },
        ],
    }
    response = client.put(f"/v1/customers/{cid}/consents", json=body, headers=tenant.headers)
    assert response.status_code == 200
    assert sorted(
        (c["brand_scope"], c["kind"], c["channel"], c["topic"], c["status"])
        for c in response.json()
    ) == [
        (f"b{tenant.brand_id}", "advertising", "email", "", "granted"),
        (f"b{tenant.brand_id}", "topic", "*", "promotions", "granted"),
        ("ws", "personal_data", "*", "", "granted"),
    ]
    leave = client.put(
        f"/v1/customers/{cid}/consents",
        headers=tenant.headers,
        json={
            "source": "unsubscribe_link",
            "evidence": {"delivery": 17},
            "changes": [
                {
                    "kind": "topic",
                    "topic": "promotions",
                    "status": "revoked",
                    "brand_id": tenant.brand_id,
                }
            ],
        },
    )
    assert leave.status_code == 200
    history = client.get(f"/v1/customers/{cid}/consents/history", headers=tenant.headers).json()
    assert [(h["kind"], h["status"], h["previous_status"], h["source"]) for h in history] == [
        ("topic", "revoked", "granted", "unsubscribe_link"),
        ("topic", "granted", None, "checkout"),
        ("advertising", "granted", None, "checkout"),
        ("personal_data", "granted", None, "checkout"),
    ]
    assert history[0]["evidence"] == {"delivery": 17}
    audit = client.get(
        "/v1/audit-log", params={"action": "consent.changed"}, headers=tenant.headers
    ).json()
    assert len(audit) == 4
    worker.drain()
    with runtime.db.scope(readonly=True) as session:
        names = session.scalars(
            select(InboxEvent.name).where(InboxEvent.source == "consent").order_by(InboxEvent.seq)
        ).all()
    assert names == ["Subscribed", "Subscribed", "Subscribed", "Unsubscribed"]


def test_bad_consent_changes_are_refused_and_nothing_changes(
    runtime: Runtime, client: TestClient, tenant: Tenant, worker: Worker
) -> None:
    cid = _customer(client, tenant, worker)
    cases = [
        (
            {"kind": "advertising", "status": "granted"},
            "changes[0].channel",
            "advertising consent is given per channel",
        ),
        (
            {"kind": "topic", "status": "granted"},
            "changes[0].topic",
            "a topic subscription names its topic",
        ),
        (
            {"kind": "personal_data", "status": "granted", "brand_id": tenant.brand_id},
            "changes[0].brand_id",
            "personal-data consent is given to the workspace, not a brand",
        ),
        (
            {"kind": "advertising", "channel": "pigeon", "status": "granted"},
            "changes[0].channel",
            "channel must be '*' or one of",
        ),
    ]
    for change, field, reason in cases:
        response = client.put(
            f"/v1/customers/{cid}/consents",
            headers=tenant.headers,
            json={"source": "x", "changes": [change]},
        )
        assert response.status_code == 422, change
        [error] = response.json()["errors"]
        assert error["field"] == field
        assert error["reason"].startswith(reason)
    missing = client.put(
        "/v1/customers/999999/consents",
        headers=tenant.headers,
        json={"source": "x", "changes": [{"kind": "personal_data", "status": "granted"}]},
    )
    assert missing.status_code == 404
    with runtime.db.scope(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Consent)) == 0
        assert session.scalar(select(func.count()).select_from(ConsentChange)) == 0


def test_reachability_follows_contacts_and_consents(
    runtime: Runtime, client: TestClient, tenant: Tenant, worker: Worker
) -> None:
    from tactful.customers import service

    cid = _customer(client, tenant, worker)
    client.post(
        "/v1/identify",
        headers=tenant.headers,
        json={
            "userId": "c-1",
            "traits": {"phone": "+79120000077"},
            "context": {"device": {"id": "dev-1", "token": "fcm-token-1"}},
        },
    )
    worker.drain()

    def reach(message_class: str, topic: str | None = None) -> tuple[dict[str, str], set[str]]:
        with runtime.db.scope(readonly=True) as session:
            found = service.reachability(
                session,
                workspace_id=tenant.workspace_id,
                brand_id=tenant.brand_id,
                customer_ids=[cid],
                message_class=message_class,
                topic=topic,
            )[cid]
        return found.addresses, set(found.channels)

    addresses, channels = reach("transactional")
    assert addresses == {
        "email": "olga@example.com",
        "sms": "+79120000077",
        "viber": "+79120000077",
        "call": "+79120000077",
        "push": "fcm-token-1",
        "webhook": "",  # the brand's outgoing webhook needs no contact of the customer
    }
    assert channels == {"email", "sms", "viber", "call", "push", "webhook"}
    assert reach("marketing")[1] == set()  # no consent yet
    client.put(
        f"/v1/customers/{cid}/consents",
        headers=tenant.headers,
        json={
            "source": "form",
            "changes": [
                {"kind": "personal_data", "status": "granted"},
                {
                    "kind": "advertising",
                    "channel": "email",
                    "status": "granted",
                    "brand_id": tenant.brand_id,
                },
                {
                    "kind": "advertising",
                    "channel": "push",
                    "status": "granted",
                    "brand_id": tenant.brand_id,
                },
            ],
        },
    )
    assert reach("marketing")[1] == {"email", "push"}
    assert reach("marketing", "promotions")[1] == {"email", "push"}
    client.put(
        f"/v1/customers/{cid}/consents",
        headers=tenant.headers,
        json={
            "source": "link",
            "changes": [
                {
                    "kind": "topic",
                    "topic": "promotions",
                    "status": "revoked",
                    "brand_id": tenant.brand_id,
                }
            ],
        },
    )
    assert reach("marketing", "promotions")[1] == set()
    assert reach("service", "promotions")[1] == set()
    assert reach("marketing", "new_arrivals")[1] == {"email", "push"}
    with runtime.db.scope() as session:
        service.set_contact_status(
            session,
            workspace_id=tenant.workspace_id,
            kind="email",
            value="olga@example.com",
            status="bounced",
            reason="550 mailbox unavailable",
            actor="test",
        )
    assert reach("marketing")[1] == {"push"}
    assert "email" not in reach("transactional")[0]
