"""Segment-spec ingestion and purchases over HTTP: per-item results, duplicates, limits,
bad input (clear 4xx, nothing stored), and the path to the profile and the warehouse."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.events.models import InboxEvent
from tests.conftest import Tenant


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def inbox_count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(InboxEvent)) or 0)


def test_track_reaches_the_profile_timeline(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime
) -> None:
    headers = basic(tenant.admin_key)
    r1 = client.post(
        "/v1/identify",
        headers=headers,
        json={
            "userId": "u-1",
            "anonymousId": "anon-1",
            "messageId": "m1",
            "traits": {
                "email": "Maria@Example.com",
                "phone": "8 912 111 22 33",
                "first_name": "Maria",
                "garden_size": 12.5,
            },
            "timestamp": "2026-05-01T10:00:00Z",
        },
    )
    assert r1.status_code == 200
    assert r1.json()["results"] == [
        {"index": 0, "message_id": "m1", "status": "accepted", "errors": []}
    ]
    r2 = client.post(
        "/v1/track",
        headers=headers,
        json={
            "anonymousId": "anon-1",
            "event": "Product Viewed",
            "messageId": "m2",
            "properties": {"product_id": "P1", "price": 1990},
            "timestamp": "2026-05-01T10:05:00Z",
        },
    )
    assert r2.status_code == 200
    worker.drain()

    profile = client.get(
        "/v1/customers/lookup",
        params={"kind": "phone", "value": "+79121112233"},
        headers=tenant.headers,
    ).json()
    assert (profile["first_name"], profile["email"], profile["attributes"]) == (
        "Maria",
        "maria@example.com",
        {"garden_size": 12.5},
    )
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("external", "u-1"),
        ("anonymous", "anon-1"),
        ("email", "maria@example.com"),
        ("phone", "+79121112233"),
    }
    timeline = client.get(f"/v1/customers/{profile['id']}/timeline", headers=tenant.headers).json()
    assert [(t["kind"], t["title"]) for t in timeline] == [
        ("event", "track: Product Viewed"),
        ("event", "identify: identify"),
    ]
    assert timeline[0]["details"]["properties"] == {"product_id": "P1", "price": 1990}

    catalog = client.get("/v1/events/catalog", headers=tenant.headers).json()
    assert {
        "type": "track",
        "name": "Product Viewed",
        "property": "price",
        "value_type": "number",
        "example": "1990",
    } in catalog
    attrs = client.get("/v1/attributes", headers=tenant.headers).json()
    assert [(a["name"], a["type"]) for a in attrs] == [("garden_size", "number")]
    status = client.get("/v1/events/loader", headers=tenant.headers).json()
    assert status == {"waiting_rows": 0, "lag_seconds": 0.0}


def test_batch_keeps_valid_items_and_reports_each(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Cart Viewed", "messageId": "a"},
            {"type": "track", "userId": "u1", "messageId": "b"},
            {"type": "identify", "messageId": "c"},
            {"type": "teleport", "userId": "u1", "messageId": "d"},
            {"type": "page", "anonymousId": "x", "name": "Home", "messageId": "e"},
            {"type": "track", "userId": "u1", "event": "Cart Viewed", "messageId": "a"},
            "not an object",
        ],
        "sentAt": "2026-05-01T10:00:00Z",
    }
    response = client.post("/v1/batch", headers=basic(tenant.admin_key), json=body)
    assert response.status_code == 200
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 1, 4)
    statuses = [(r["message_id"], r["status"], r["errors"]) for r in result["results"]]
    assert statuses == [
        ("a", "accepted", []),
        ("b", "rejected", [{"field": "batch[1].event", "reason": "Field required"}]),
        (
            "c",
            "rejected",
            [{"field": "batch[2]", "reason": "either userId or anonymousId is required"}],
        ),
        (
            "d",
            "rejected",
            [
                {
                    "field": "batch[3].type",
                    "reason": "type must be one of "
                    "['alias', 'group', 'identify', 'page', 'screen', 'track']",
                }
            ],
        ),
        ("e", "accepted", []),
        ("a", "duplicate", []),
        (None, "rejected", [{"field": "batch[6]", "reason": "not an object"}]),
    ]
    again = client.post("/v1/batch", headers=basic(tenant.admin_key), json=body).json()
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 3, 4)
    assert inbox_count(runtime) == 2


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/track", {"userId": "u", "event": ""}, 422, "event"),
        ("/v1/track", {"event": "X"}, 422, ""),
        ("/v1/identify", {"userId": "u", "traits": "not a dict"}, 422, "traits"),
        ("/v1/alias", {"userId": "u"}, 422, "previousId"),
        (
            "/v1/track",
            {"userId": "u", "event": "X", "timestamp": "2999-01-01T00:00:00Z"},
            422,
            "timestamp",
        ),
        ("/v1/batch", {"batch": []}, 422, "batch"),
        ("/v1/batch", {"events": [{"type": "track"}]}, 422, "batch"),
    ],
)
def test_bad_calls_are_refused_and_nothing_is_stored(
    client: TestClient,
    tenant: Tenant,
    runtime: Runtime,
    path: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    response = client.post(path, headers=basic(tenant.admin_key), json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert field in fields, fields
    assert inbox_count(runtime) == 0


def test_malformed_and_oversize_bodies(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    headers = {**basic(tenant.admin_key), "content-type": "application/json"}
    broken = client.post("/v1/track", headers=headers, content=b'{"userId": "u", "event": ')
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["field"] == "body"
    big_call = {"userId": "u", "event": "X", "properties": {"blob": "x" * 33_000}}
    too_big = client.post("/v1/track", headers=headers, content=json.dumps(big_call))
    assert too_big.status_code == 413
    assert too_big.json()["detail"].endswith("the limit is 32768 bytes")
    big_batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "X", "properties": {"blob": "y" * 20_000}}
            for _ in range(30)
        ]
    }
    assert (
        client.post("/v1/batch", headers=headers, content=json.dumps(big_batch)).status_code == 413
    )
    bomb = gzip.compress(json.dumps(big_batch).encode())
    assert len(bomb) < 500 * 1024
    unzipped = client.post(
        "/v1/batch", headers={**headers, "content-encoding": "gzip"}, content=bomb
    )
    assert unzipped.status_code == 413
    assert inbox_count(runtime) == 0


def test_gzip_and_write_key_in_body(client: TestClient, tenant: Tenant, runtime: Runtime) -> None:
    body = {
        "writeKey": tenant.admin_key,
        "batch": [{"type": "track", "userId": "u", "event": "Application Opened"}],
    }
    response = client.post(
        "/v1/batch",
        content=gzip.compress(json.dumps(body).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert inbox_count(runtime) == 1


def test_keys_are_checked(client: TestClient, tenant: Tenant, runtime: Runtime) -> None:
    body = {"userId": "u", "event": "X"}
    assert client.post("/v1/track", json=body).status_code == 401
    assert client.post("/v1/track", json=body, headers=basic("tk_00000000_nope")).status_code == 401
    pos = client.post(
        "/v1/api-keys", headers=tenant.headers, json={"name": "till", "scopes": ["pos"]}
    ).json()["key"]
    assert client.post("/v1/track", json=body, headers=basic(pos)).status_code == 403
    ingest = client.post(
        "/v1/api-keys", headers=tenant.headers, json={"name": "site", "scopes": ["ingest"]}
    ).json()["key"]
    assert client.post("/v1/track", json=body, headers=basic(ingest)).status_code == 200
    assert (
        client.get("/v1/customers", headers={"Authorization": f"Bearer {ingest}"}).status_code
        == 403
    )
    assert inbox_count(runtime) == 1


def receipt(receipt_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "receipt_id": receipt_id,
        "store_id": "S001",
        "channel": "offline",
        "occurred_at": "2026-05-02T09:30:00+05:00",
        "customer": {"card": "2000 0000 0001 7", "phone": "+7 912 000-00-01"},
        "lines": [
            {
                "product_id": "P1",
                "category_id": "garden",
                "quantity": 2,
                "unit_price": 49_900,
                "discount": 9_800,
            },
            {"product_id": "P2", "category_id": "paint", "quantity": 1.5, "unit_price": 10_000},
        ],
        "bonus_accrued": 120,
        "bonus_spent": 0,
    }
    body.update(overrides)
    return body


def test_purchases_reach_the_warehouse(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime
) -> None:
    single = client.post(
        "/v1/purchases", headers=basic(tenant.admin_key), json=receipt("R-1", total=105_000)
    )
    assert single.status_code == 200, single.text
    batch = client.post(
        "/v1/purchases",
        headers=basic(tenant.admin_key),
        json={
            "purchases": [
                receipt("R-2", occurred_at="2026-05-02T09:50:00+05:00"),
                receipt("R-1"),
                receipt(
                    "R-3",
                    kind="return",
                    original_receipt_id="R-1",
                    lines=[
                        {"product_id": "P1", "quantity": 1, "unit_price": 49_900, "discount": 4_900}
                    ],
                    occurred_at="2026-05-03T12:00:00+05:00",
                ),
                receipt("R-4", kind="return"),
                receipt(
                    "R-5",
                    lines=[{"product_id": "P1", "quantity": 1, "unit_price": 100, "discount": 101}],
                ),
                receipt("R-6", total=1),
            ]
        },
    ).json()
    assert [(r["message_id"], r["status"]) for r in batch["results"]] == [
        ("receipt:R-2", "accepted"),
        ("receipt:R-1", "duplicate"),
        ("receipt:R-3", "accepted"),
        ("receipt:R-4", "rejected"),
        ("receipt:R-5", "rejected"),
        ("receipt:R-6", "rejected"),
    ]
    assert batch["results"][3]["errors"] == [
        {
            "field": "purchases[3]",
            "reason": "a return names original_receipt_id, the sale it returns",
        }
    ]
    assert batch["results"][4]["errors"] == [
        {
            "field": "purchases[4].lines[0]",
            "reason": "discount 101 exceeds quantity × unit_price (100)",
        }
    ]
    assert batch["results"][5]["errors"] == [
        {"field": "purchases[5]", "reason": "total 1 differs from the sum of line amounts (105000)"}
    ]
    worker.drain()

    con = runtime.warehouse.con
    receipts = con.to_pyarrow(
        runtime.warehouse.table("receipts").order_by("receipt_id")
    ).to_pylist()
    assert [
        (
            r["receipt_id"],
            r["kind"],
            r["gross"],
            r["discount"],
            r["amount"],
            r["signed_amount"],
            r["lines"],
        )
        for r in receipts
    ] == [
        ("R-1", "sale", 114_800, 9_800, 105_000, 105_000, 2),
        ("R-2", "sale", 114_800, 9_800, 105_000, 105_000, 2),
        ("R-3", "return", 49_900, 4_900, 45_000, -45_000, 1),
    ]
    assert len({r["customer_id"] for r in receipts}) == 1
    assert str(receipts[0]["occurred_at"]) == "2026-05-02 04:30:00+00:00"
    lines = con.to_pyarrow(
        runtime.warehouse.table("receipt_lines").order_by(["receipt_id", "line_no"])
    ).to_pylist()
    assert [
        (line["receipt_id"], line["line_no"], line["product_id"], line["quantity"], line["amount"])
        for line in lines
    ] == [
        ("R-1", 1, "P1", 2.0, 90_000),
        ("R-1", 2, "P2", 1.5, 15_000),
        ("R-2", 1, "P1", 2.0, 90_000),
        ("R-2", 2, "P2", 1.5, 15_000),
        ("R-3", 1, "P1", 1.0, 45_000),
    ]
    # the loader is idempotent: pretending nothing was loaded appends nothing twice
    with runtime.db.scope() as session:
        session.execute(InboxEvent.__table__.update().values(loaded_at=None))
    worker.drain()
    assert con.execute(runtime.warehouse.table("receipt_lines").count()) == 5
    profile = client.get(
        "/v1/customers/lookup",
        params={"kind": "card", "value": "2000000000017"},
        headers=tenant.headers,
    ).json()
    timeline = client.get(f"/v1/customers/{profile['id']}/timeline", headers=tenant.headers).json()
    assert [t["title"] for t in timeline] == [
        "Return R-3 in S001",
        "Purchase R-2 in S001",
        "Purchase R-1 in S001",
    ]


def test_values_no_database_can_store_reject_their_items_and_keep_the_rest(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    """A NUL character or an integer beyond 64 bits in one item used to fail the whole batch
    at the database on PostgreSQL (a 500: every valid item lost, and the sender retrying
    for ever)."""
    nul = "must not contain the NUL character (\\u0000)"
    out_of_range = "must be a number from -9223372036854775808 to 9223372036854775807"
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "a"},
            {
                "type": "track",
                "userId": "u1",
                "event": "Viewed",
                "messageId": "b",
                "properties": {"note": "x\x00y"},
            },
            {
                "type": "track",
                "userId": "u1",
                "event": "Viewed",
                "messageId": "c",
                "properties": {"n": [1, 2**64]},
            },
            {"type": "identify", "userId": "u\x002", "messageId": "d"},
        ]
    }
    response = client.post("/v1/batch", headers=basic(tenant.admin_key), json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (1, 3)
    assert [(r["message_id"], r["status"], r["errors"]) for r in result["results"]] == [
        ("a", "accepted", []),
        ("b", "rejected", [{"field": "batch[1].properties.note", "reason": nul}]),
        ("c", "rejected", [{"field": "batch[2].properties.n[1]", "reason": out_of_range}]),
        ("d", "rejected", [{"field": "batch[3].userId", "reason": nul}]),
    ]
    single = client.post(
        "/v1/track",
        headers=basic(tenant.admin_key),
        json={"userId": "u1", "event": "Viewed\x00", "messageId": "e"},
    )
    assert single.status_code == 422, single.text
    receipts = client.post(
        "/v1/purchases",
        headers=basic(tenant.admin_key),
        json={"purchases": [{"receipt_id": "r\x001", "customer": {"user_id": "u1"}}]},
    )
    assert receipts.status_code == 200, receipts.text
    assert receipts.json()["results"][0]["errors"] == [
        {"field": "purchases[0].receipt_id", "reason": nul}
    ]
    assert inbox_count(runtime) == 1
