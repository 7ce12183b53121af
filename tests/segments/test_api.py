"""Segments over HTTP on SQLite and PostgreSQL: bad definitions refused with the node's path
(nothing saved), the path from ingestion to memberships, enter/exit changes and their domain
events, versions, estimates, previews, exports, and a refresh that fails loudly."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core import clock, domain_events
from tactful.core.jobs.models import Job
from tactful.core.jobs.registry import job
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.core.warehouse import Warehouse
from tactful.segments.memberships import MEMBERSHIP_EVENT
from tactful.segments.models import Segment, SegmentChange, SegmentMembership, SegmentVersion
from tactful.tenancy.models import AuditEntry
from tests.conftest import Tenant

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SEEN_JOB = "tests.segment_membership_seen"


@job(SEEN_JOB)
def _seen(ctx: Any) -> None:
    """Stands in for journeys, which react to segment entries."""


domain_events.route(MEMBERSHIP_EVENT, SEEN_JOB)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def _count(runtime: Runtime, model: Any, *where: Any) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _identify(client: TestClient, tenant: Tenant, user: str, **traits: Any) -> None:
    response = client.post(
        "/v1/identify", headers=tenant.headers, json={"userId": user, "traits": traits}
    )
    assert response.status_code == 200, response.text


def _buy(
    client: TestClient, tenant: Tenant, user: str, receipt: str, days_ago: float, total: int
) -> None:
    response = client.post(
        "/v1/purchases",
        headers=tenant.headers,
        json={
            "receipt_id": receipt,
            "customer": {"user_id": user},
            "store_id": "S1",
            "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
            "lines": [
                {"product_id": "P1", "category_id": "garden", "quantity": 1, "unit_price": total}
            ],
        },
    )
    assert response.status_code == 200, response.text


def _lookup(client: TestClient, tenant: Tenant, user: str) -> int:
    found = client.get(
        "/v1/customers/lookup",
        params={"kind": "external", "value": user},
        headers=tenant.headers,
    )
    assert found.status_code == 200, found.text
    return int(found.json()["id"])


def _settle(worker: Worker) -> None:
    """Run the pipeline: resolver, loader, metric refresh, profile sync, segment refreshes."""
    worker.drain()
    worker.run_due_monitors()
    worker.drain()


@pytest.fixture
def shop(client: TestClient, tenant: Tenant, worker: Worker) -> dict[str, int]:
    """Three customers: Anna (bought twice recently, e-mail consent), Boris (bought long
    ago), Vera (never bought)."""
    _identify(
        client,
        tenant,
        "anna",
        first_name="Anna",
        gender="f",
        email="anna@example.com",
        phone="+7 912 000 11 22",
    )
    _identify(client, tenant, "boris", first_name="Boris", gender="m", email="boris@example.com")
    _identify(client, tenant, "vera", first_name="Vera", gender="f", phone="89120003344")
    _buy(client, tenant, "anna", "R1", 3, 150_000)
    _buy(client, tenant, "anna", "R2", 20, 50_000)
    _buy(client, tenant, "boris", "R3", 200, 70_000)
    worker.drain()
    ids = {name: _lookup(client, tenant, name) for name in ("anna", "boris", "vera")}
    consent = client.put(
        f"/v1/customers/{ids['anna']}/consents",
        headers=tenant.headers,
        json={
            "source": "checkout",
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
                    "channel": "sms",
                    "status": "granted",
                    "brand_id": tenant.brand_id,
                },
            ],
        },
    )
    assert consent.status_code == 200, consent.text
    _settle(worker)
    return ids


def women_who_bought(days: int = 30) -> dict[str, Any]:
    return {
        "all": [
            {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
            {"type": "purchase", "window": {"days": days}, "operator": "gte", "value": 1},
        ]
    }


def test_segment_from_ingestion_to_memberships_changes_and_events(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, shop: dict[str, int]
) -> None:
    created = client.post(
        "/v1/segments",
        headers=tenant.headers,
        json={
            "name": "Recent women",
            "definition": women_who_bought(),
            "refresh_mode": "continuous",
        },
    )
    assert created.status_code == 201, created.text
    segment = created.json()
    assert (segment["version"], segment["status"], segment["member_count"]) == (1, "new", 0)
    sid = segment["id"]

    refreshed = client.post(f"/v1/segments/{sid}/refresh", headers=tenant.headers)
    assert refreshed.json() == {
        "segment_id": sid,
        "status": "ok",
        "members": 1,
        "entered": 1,
        "exited": 0,
        "error": None,
    }
    members = client.get(f"/v1/segments/{sid}/members", headers=tenant.headers).json()
    assert [m["customer_id"] for m in members] == [shop["anna"]]

    # Vera buys: the load refreshes her metrics and the continuous segment takes her in.
    _buy(client, tenant, "vera", "R4", 1, 20_000)
    _settle(worker)
    members = client.get(f"/v1/segments/{sid}/members", headers=tenant.headers).json()
    assert [m["customer_id"] for m in members] == sorted([shop["anna"], shop["vera"]])

    # A month later Anna's purchases fall out of the window.
    clock.advance(timedelta(days=28))
    again = client.post(f"/v1/segments/{sid}/refresh", headers=tenant.headers).json()
    assert (again["members"], again["entered"], again["exited"]) == (1, 0, 1)
    changes = client.get(f"/v1/segments/{sid}/changes", headers=tenant.headers).json()
    assert [(c["customer_id"], c["change"], c["refresh"]) for c in changes] == [
        (shop["anna"], "exited", 3),
        (shop["vera"], "entered", 2),
        (shop["anna"], "entered", 1),
    ]
    with runtime.db.scope(readonly=True) as session:
        published = session.scalars(
            select(Job.payload).where(Job.name == SEEN_JOB).order_by(Job.id)
        ).all()
    assert [(p["segment_id"], p["refresh"], p["entered"], p["exited"]) for p in published] == [
        (sid, 1, [shop["anna"]], []),
        (sid, 2, [shop["vera"]], []),
        (sid, 3, [], [shop["anna"]]),
    ]
    status = client.get(f"/v1/segments/{sid}", headers=tenant.headers).json()
    assert (status["status"], status["member_count"], status["last_error"]) == ("ok", 1, None)
    assert status["last_good_refresh_at"].startswith("2026-03-30T12:00:00")


def test_preview_size_estimate_overlap_and_versions(
    client: TestClient, tenant: Tenant, runtime: Runtime, shop: dict[str, int]
) -> None:
    preview = client.post(
        "/v1/segments/preview", headers=tenant.headers, json={"definition": women_who_bought()}
    ).json()
    assert preview == {
        "size": 1,
        "description": "gender is “f” and made at least 1 purchases in the last 30 days",
        "sample": [
            {
                "customer_id": shop["anna"],
                "values": {"definition.all[0]": "f", "definition.all[1]": 2},
            }
        ],
    }
    everyone = {"any": [{"type": "attribute", "attribute": "gender", "operator": "is_set"}]}
    size = client.post("/v1/segments/size", headers=tenant.headers, json={"definition": everyone})
    assert size.json() == {"size": 3}
    price = client.put(
        "/v1/channel-prices",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id, "channel": "email", "price": 12},
    )
    assert price.status_code == 200, price.text
    estimate = client.post(
        "/v1/segments/estimate",
        headers=tenant.headers,
        json={"definition": everyone, "brand_id": tenant.brand_id, "cascade": ["sms", "email"]},
    ).json()
    assert estimate["size"] == 3
    assert estimate["reachable"] == {"email": 1, "sms": 1, "push": 0, "viber": 0, "telegram": 0}
    assert estimate["cost"]["email"] == 12
    assert estimate["cost"]["sms"] == 350
    # Anna is reachable by SMS first, so the cascade costs one SMS and no e-mail.
    assert (estimate["cascade_reached"], estimate["cascade_cost"]) == (1, 350)
    assert estimate["per_channel_in_cascade"] == {"sms": 1, "email": 0}

    first = client.post(
        "/v1/segments",
        headers=tenant.headers,
        json={
            "name": "Women",
            "definition": {
                "type": "attribute",
                "attribute": "gender",
                "operator": "eq",
                "value": "f",
            },
        },
    ).json()
    second = client.post(
        "/v1/segments",
        headers=tenant.headers,
        json={"name": "Buyers", "definition": {"type": "purchase"}},
    ).json()
    overlap = client.get(
        f"/v1/segments/{first['id']}/overlap/{second['id']}", headers=tenant.headers
    ).json()
    assert overlap == {"first": 2, "second": 2, "both": 1, "either": 3}

    updated = client.patch(
        f"/v1/segments/{second['id']}",
        headers=tenant.headers,
        json={
            "definition": {
                "type": "purchase",
                "measure": "amount",
                "operator": "gte",
                "value": 100_000,
            }
        },
    ).json()
    assert updated["version"] == 2
    versions = client.get(f"/v1/segments/{second['id']}/versions", headers=tenant.headers).json()
    assert [(v["version"], v["description"]) for v in versions] == [
        (1, "made at least 1 purchases ever"),
        (2, "made at least 100000 spent (minor units) ever"),
    ]
    same = client.patch(
        f"/v1/segments/{second['id']}",
        headers=tenant.headers,
        json={"definition": updated["definition"]},
    ).json()
    assert same["version"] == 2  # an unchanged definition is not a new version


def test_exports_are_audited_and_ads_get_only_hashes(
    client: TestClient, tenant: Tenant, runtime: Runtime, shop: dict[str, int]
) -> None:
    sid = client.post(
        "/v1/segments",
        headers=tenant.headers,
        json={
            "name": "Women",
            "definition": {
                "type": "attribute",
                "attribute": "gender",
                "operator": "eq",
                "value": "f",
            },
        },
    ).json()["id"]
    client.post(f"/v1/segments/{sid}/refresh", headers=tenant.headers)
    as_csv = client.get(f"/v1/segments/{sid}/export", headers=tenant.headers)
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["first_name"], r["email"], r["phone"]) for r in rows] == [
        ("Anna", "anna@example.com", "+79120001122"),
        ("Vera", "", "+79120003344"),
    ]
    as_parquet = client.get(
        f"/v1/segments/{sid}/export", params={"format": "parquet"}, headers=tenant.headers
    )
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert table.column("customer_id").to_pylist() == [shop["anna"], shop["vera"]]

    ads = client.get(
        f"/v1/segments/{sid}/export/ads", params={"platform": "google"}, headers=tenant.headers
    )
    assert ads.status_code == 200
    assert "anna@" not in ads.text
    assert "79120001122" not in ads.text
    hashed = list(csv.reader(io.StringIO(ads.text)))
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert hashed == [
        ["email_sha256", "phone_sha256"],
        [sha("anna@example.com"), sha("+79120001122")],
        ["", sha("+79120003344")],
    ]
    meta = client.get(
        f"/v1/segments/{sid}/export/ads", params={"platform": "meta"}, headers=tenant.headers
    )
    assert list(csv.reader(io.StringIO(meta.text)))[2] == ["", sha("79120003344")]
    audit = client.get(
        "/v1/audit-log",
        params={"target_type": "segment", "target_id": str(sid)},
        headers=tenant.headers,
    ).json()
    assert [(a["action"], a["details"].get("rows")) for a in audit] == [
        ("segment.exported_for_ads", 2),
        ("segment.exported_for_ads", 2),
        ("segment.exported", 2),
        ("segment.exported", 2),
        ("segment.created", None),
    ]


def test_a_failing_refresh_says_so_and_keeps_the_last_good_memberships(
    client: TestClient, tenant: Tenant, runtime: Runtime, shop: dict[str, int]
) -> None:
    sid = client.post(
        "/v1/segments",
        headers=tenant.headers,
        json={"name": "Recent women", "definition": women_who_bought()},
    ).json()["id"]
    good = client.post(f"/v1/segments/{sid}/refresh", headers=tenant.headers).json()
    assert good["status"] == "ok"
    working = runtime.warehouse
    runtime.warehouse = Warehouse("postgres://nobody@127.0.0.1:1/none", data_dir=working.data_dir)
    try:
        clock.advance(timedelta(hours=1))
        failed = client.post(f"/v1/segments/{sid}/refresh", headers=tenant.headers).json()
    finally:
        runtime.warehouse = working
    assert (failed["status"], failed["members"]) == ("failed", 1)
    assert "cannot connect to the PostgreSQL warehouse" in failed["error"]
    segment = client.get(f"/v1/segments/{sid}", headers=tenant.headers).json()
    assert segment["status"] == "failed"
    assert "cannot connect" in segment["last_error"]
    assert segment["last_good_refresh_at"] < segment["last_refresh_at"]
    assert _count(runtime, SegmentMembership, SegmentMembership.segment_id == sid) == 1
    assert _count(runtime, SegmentChange, SegmentChange.segment_id == sid) == 1


def _create(client: TestClient, tenant: Tenant, definition: Any, name: str = "S") -> Any:
    return client.post(
        "/v1/segments", headers=tenant.headers, json={"name": name, "definition": definition}
    )


@pytest.mark.parametrize(
    ("definition", "field", "reason"),
    [
        (
            {
                "all": [
                    {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
                    {"type": "attribute", "attribute": "shoe_size", "operator": "gt", "value": 40},
                ]
            },
            "definition.all[1].attribute",
            "unknown attribute 'shoe_size'",
        ),
        (
            {
                "all": [
                    {
                        "any": [
                            {"type": "metric", "metric": "revenue", "operator": "gt", "value": 1},
                            {"type": "metric", "metric": "happiness", "operator": "gt", "value": 1},
                        ]
                    }
                ]
            },
            "definition.all[0].any[1].metric",
            "unknown metric 'happiness'",
        ),
        (
            {"all": [{"type": "attribute", "attribute": "gender", "operator": "gt", "value": "f"}]},
            "definition.all[0].operator",
            "'gt' does not apply to a string",
        ),
        (
            {"not": {"type": "metric", "metric": "revenue", "operator": "gte", "value": "lots"}},
            "definition.not.value",
            "gte expects a number, got 'lots'",
        ),
        (
            {"all": [{"type": "attribute", "attribute": "gender", "operator": "eq", "value": "x"}]},
            "definition.all[0].value",
            "eq 'x' is not one of ['f', 'm']",
        ),
        (
            {"any": [{"type": "purchase", "window": {"start": "2099-01-01T00:00:00Z"}}]},
            "definition.any[0].window.start",
            "the window starts in the future",
        ),
        (
            {"all": [{"type": "segment", "segment_id": 999}]},
            "definition.all[0].segment_id",
            "segment 999 does not exist",
        ),
        (
            {
                "all": [
                    {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
                    {"type": "teleport"},
                ]
            },
            "definition.all[1]",
            "a node is",
        ),
        (
            {"all": [{"type": "event", "event": "Never Seen", "operator": "gte", "value": 1}]},
            "definition.all[0].event",
            "no event 'Never Seen' has been seen in this workspace",
        ),
        (
            {"all": [{"type": "purchase", "window": {"days": 0}}]},
            "definition.all[0].window.days",
            "greater than 0",
        ),
    ],
)
def test_bad_definitions_are_refused_with_the_node_path_and_nothing_is_saved(
    client: TestClient,
    tenant: Tenant,
    runtime: Runtime,
    definition: Any,
    field: str,
    reason: str,
) -> None:
    for path in ("/v1/segments", "/v1/segments/validate"):
        body: dict[str, Any] = {"definition": definition}
        if path == "/v1/segments":
            body["name"] = "Bad"
        response = client.post(path, headers=tenant.headers, json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        errors = {e["field"]: e["reason"] for e in response.json()["errors"]}
        assert field in errors, errors
        assert reason in errors[field]
    assert _count(runtime, Segment) == 0
    assert _count(runtime, SegmentVersion) == 0
    assert _count(runtime, AuditEntry, AuditEntry.action.like("segment.%")) == 0


def test_cycles_are_refused_and_the_segment_keeps_its_version(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    women = {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"}
    first = _create(client, tenant, women, "A").json()
    second = _create(
        client, tenant, {"all": [{"type": "segment", "segment_id": first["id"]}]}, "B"
    ).json()
    third = _create(
        client, tenant, {"any": [{"type": "segment", "segment_id": second["id"]}]}, "C"
    ).json()
    cyclic = client.patch(
        f"/v1/segments/{first['id']}",
        headers=tenant.headers,
        json={
            "definition": {"all": [women, {"not": {"type": "segment", "segment_id": third["id"]}}]}
        },
    )
    assert cyclic.status_code == 422, cyclic.text
    assert cyclic.json()["errors"] == [
        {
            "field": "definition.all[1].not.segment_id",
            "reason": f"the reference makes a cycle: {first['id']} → {third['id']} → "
            f"{second['id']} → {first['id']}",
        }
    ]
    itself = client.patch(
        f"/v1/segments/{first['id']}",
        headers=tenant.headers,
        json={"definition": {"type": "segment", "segment_id": first["id"]}},
    )
    assert itself.json()["errors"][0]["field"] == "definition.segment_id"
    unchanged = client.get(f"/v1/segments/{first['id']}", headers=tenant.headers).json()
    assert (unchanged["version"], unchanged["definition"]) == (1, women)
    assert _count(runtime, SegmentVersion) == 3
