"""A small shop built through the public API (and the customers service where the API has no
call): customers with and without contacts and consents, purchases, a merge, an invalid and a
bounced contact, and deliveries of this week and the last. Shared by the report and web tests.

``NOW`` is Wednesday 4 March 2026, 12:00 UTC; the workspace's week (Europe/Moscow) began on
Monday 2 March at 00:00 local time, 1 March 21:00 UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.messaging.models import Delivery
from tests.conftest import Tenant

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
WEEK_FROM = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Shop:
    """Customer ids by who they are."""

    anna: int  # e-mail and phone, all consents, two visits (active, repeat buyer)
    boris: int  # e-mail and consents, one purchase 400 days ago (lapsed)
    vera: int  # phone only, no consents, one purchase 5 days ago (new)
    dmitry: int  # no contact at all, never bought
    egor: int  # an invalid e-mail only
    fedor: int  # a bounced phone; survivor of a merge with a duplicate


def post(client: TestClient, tenant: Tenant, path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, headers=tenant.headers, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def identify(client: TestClient, tenant: Tenant, user_id: str, **traits: Any) -> None:
    post(client, tenant, "/v1/identify", {"userId": user_id, "traits": traits})


def buy(client: TestClient, tenant: Tenant, user_id: str, receipt: str, days_ago: int, total: int):
    post(
        client,
        tenant,
        "/v1/purchases",
        {
            "receipt_id": receipt,
            "kind": "sale",
            "customer": {"user_id": user_id},
            "store_id": "S1",
            "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
            "lines": [
                {"product_id": "P1", "category_id": "garden", "quantity": 1, "unit_price": total}
            ],
        },
    )


def consent(
    client: TestClient, tenant: Tenant, customer_id: int, channels: tuple[str, ...]
) -> None:
    response = client.put(
        f"/v1/customers/{customer_id}/consents",
        headers=tenant.headers,
        json={
            "source": "form",
            "changes": [
                {"kind": "personal_data", "status": "granted"},
                *(
                    {
                        "kind": "advertising",
                        "channel": channel,
                        "status": "granted",
                        "brand_id": tenant.brand_id,
                    }
                    for channel in channels
                ),
            ],
        },
    )
    assert response.status_code == 200, response.text


def customer_id(client: TestClient, tenant: Tenant, user_id: str) -> int:
    response = client.get(
        "/v1/customers/lookup",
        params={"kind": "external", "value": user_id},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def build_shop(client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime) -> Shop:
    """Build the shop (with the clock frozen at ``NOW``) and bring the warehouse up to date."""
    identify(
        client,
        tenant,
        "anna",
        first_name="Anna",
        email="anna@example.com",
        phone="+79120000001",
        city="Moscow",
    )
    identify(client, tenant, "boris", first_name="Boris", email="boris@example.com")
    identify(client, tenant, "vera", first_name="Vera", phone="+79120000003")
    identify(client, tenant, "dmitry", first_name="Dmitry")
    identify(client, tenant, "egor", first_name="Egor", email="not-an-e-mail")
    identify(client, tenant, "fedor", first_name="Fedor", phone="+79120000006")
    identify(client, tenant, "fedya", first_name="Fedya", email="fedor@example.com")
    worker.drain()
    # one record names the duplicate's e-mail and Fedor's user id: the two are merged
    identify(client, tenant, "fedor", email="fedor@example.com")
    worker.drain()
    shop = Shop(
        *(
            customer_id(client, tenant, u)
            for u in ("anna", "boris", "vera", "dmitry", "egor", "fedor")
        )
    )
    consent(client, tenant, shop.anna, ("email", "sms"))
    consent(client, tenant, shop.boris, ("email",))
    buy(client, tenant, "anna", "R1", 40, 3_000)
    buy(client, tenant, "anna", "R2", 10, 1_000)
    buy(client, tenant, "boris", "R3", 400, 2_000)
    buy(client, tenant, "vera", "R4", 5, 500)
    with runtime.db.scope() as session:
        customers.set_contact_status(
            session,
            workspace_id=tenant.workspace_id,
            kind="phone",
            value="+79120000006",
            status="bounced",
            reason="550 no such user",
            actor="test",
        )
        for n, (channel, sent_at, cost) in enumerate(
            [
                ("email", WEEK_FROM + timedelta(hours=1), 10),
                ("email", NOW - timedelta(hours=1), 10),
                ("sms", NOW - timedelta(days=1), 350),
                ("email", WEEK_FROM - timedelta(minutes=1), 10),  # last week
                ("email", None, 0),  # suppressed: never sent
            ],
            start=1,
        ):
            session.add(
                Delivery(
                    workspace_id=tenant.workspace_id,
                    brand_id=tenant.brand_id,
                    customer_id=shop.anna,
                    decision_id=900_000 + n,
                    source="test",
                    message_class="marketing",
                    channel=channel,
                    status="sent" if sent_at else "suppressed",
                    cost=cost,
                    sent_at=sent_at,
                    created_at=NOW - timedelta(days=8),
                    updated_at=NOW,
                )
            )
    worker.drain()
    worker.run_due_monitors()
    worker.drain()
    return shop
