"""Metrics on SQLite and PostgreSQL databases (DuckDB warehouse): profiles, attributes and
reachability copied to the warehouse, incremental refresh after loads, the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.metrics import service as metrics
from tactful.metrics import store as metrics_store
from tactful.metrics import warehouse as mw
from tests.conftest import Tenant

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def _rows(runtime: Runtime, table: str, **where: Any) -> list[dict[str, Any]]:
    t = runtime.warehouse.table(table)
    for column, value in where.items():
        t = t.filter(t[column] == value)
    return runtime.warehouse.con.to_pyarrow(t).to_pylist()


def _post(client: TestClient, tenant: Tenant, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, headers=tenant.headers, json=body)
    assert response.status_code == 200, response.text


def _buy(
    client: TestClient,
    tenant: Tenant,
    receipt: str,
    days_ago: float,
    total: int,
    kind: str = "sale",
    original: str | None = None,
) -> None:
    body: dict[str, Any] = {
        "receipt_id": receipt,
        "kind": kind,
        "customer": {"user_id": "olga"},
        "store_id": "S7",
        "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
        "lines": [{"product_id": "P1", "category_id": "paint", "quantity": 1, "unit_price": total}],
        "bonus_spent": 100 if kind == "sale" and days_ago < 10 else 0,
    }
    if original:
        body["original_receipt_id"] = original
    _post(client, tenant, "/v1/purchases", body)


@pytest.fixture
def olga(client: TestClient, tenant: Tenant, worker: Worker) -> int:
    _post(
        client,
        tenant,
        "/v1/identify",
        {
            "userId": "olga",
            "traits": {
                "first_name": "Olga",
                "gender": "f",
                "birthday": "1988-04-02",
                "email": "olga@example.com",
                "timezone": "Asia/Yekaterinburg",
                "vip": True,
                "shoe_size": 38,
                "hobbies": ["roses", "tomatoes"],
            },
        },
    )
    worker.drain()
    found = client.get(
        "/v1/customers/lookup",
        params={"kind": "email", "value": "olga@example.com"},
        headers=tenant.headers,
    )
    return int(found.json()["id"])


def test_profiles_attributes_and_reachability_reach_the_warehouse(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, olga: int
) -> None:
    worker.run_due_monitors()
    worker.drain()
    [profile] = _rows(runtime, mw.PROFILES, customer_id=olga)
    assert {
        k: profile[k]
        for k in (
            "workspace_id",
            "gender",
            "city",
            "timezone",
            "utc_offset_minutes",
            "has_email",
            "has_phone",
            "anonymous",
            "is_test",
        )
    } == {
        "workspace_id": tenant.workspace_id,
        "gender": "f",
        "city": None,
        "timezone": "Asia/Yekaterinburg",
        "utc_offset_minutes": 300,
        "has_email": True,
        "has_phone": False,
        "anonymous": False,
        "is_test": False,
    }
    assert str(profile["birthday"]) == "1988-04-02"
    attributes = sorted(
        (r["name"], r["text_value"], r["number_value"], r["bool_value"])
        for r in _rows(runtime, mw.ATTRIBUTES, customer_id=olga)
    )
    assert attributes == [
        ("hobbies", "roses", None, None),
        ("hobbies", "tomatoes", None, None),
        ("shoe_size", None, 38.0, None),
        ("vip", None, None, True),
    ]
    assert [
        (r["channel"], r["has_contact"], r["consent"], r["reachable"])
        for r in _rows(runtime, mw.REACH, customer_id=olga)
    ] == [("email", True, False, False)]

    consent = client.put(
        f"/v1/customers/{olga}/consents",
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
            ],
        },
    )
    assert consent.status_code == 200
    worker.drain()  # the consent change copies her reachability at once
    assert [
        (r["channel"], r["has_contact"], r["consent"], r["reachable"])
        for r in _rows(runtime, mw.REACH, customer_id=olga)
    ] == [("email", True, True, True)]
    status = client.get("/v1/metrics/status", headers=tenant.headers).json()
    assert status["profiles_synced_at"].startswith("2026-03-02T12:00:00")
    assert status["last_error"] is None


def test_metrics_follow_each_load_for_the_customers_it_touched(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, olga: int
) -> None:
    _buy(client, tenant, "R1", 100, 4_000)
    _buy(client, tenant, "R2", 40, 3_000)
    _buy(client, tenant, "R3", 5, 1_000)
    worker.drain()
    response = client.get(f"/v1/customers/{olga}/metrics", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    metrics = body["metrics"]
    assert body["computed_at"].startswith("2026-03-02T12:00:00")
    assert {
        k: metrics[k]
        for k in (
            "receipts_count",
            "returns_count",
            "visits_count",
            "revenue",
            "avg_check",
            "avg_check_90d",
            "avg_check_prev_90d",
            "avg_check_trend",
            "typical_interval_days",
            "last_gap_days",
            "days_since_last_purchase",
            "favourite_store",
            "top_categories",
            "bonus_usage_share",
            "lifecycle_stage",
        )
    } == {
        "receipts_count": 3,
        "returns_count": 0,
        "visits_count": 3,
        "revenue": 8_000,
        "avg_check": 2_666,
        "avg_check_90d": 2_000,
        "avg_check_prev_90d": 4_000,
        "avg_check_trend": -0.5,
        "typical_interval_days": 47.5,
        "last_gap_days": 35.0,
        "days_since_last_purchase": 5,
        "favourite_store": "S7",
        "top_categories": ["paint"],
        "bonus_usage_share": 1 / 3,
        "lifecycle_stage": "active",
    }

    clock.advance(timedelta(days=1))
    _buy(client, tenant, "R4", 0.5, 2_000, kind="return", original="R3")
    worker.drain()
    after = client.get(f"/v1/customers/{olga}/metrics", headers=tenant.headers).json()
    assert after["computed_at"].startswith("2026-03-03T12:00:00")
    assert (
        after["metrics"]["revenue"],
        after["metrics"]["returns_count"],
        after["metrics"]["days_since_last_purchase"],
    ) == (6_000, 1, 6)


def test_each_refresh_counts_its_windows_from_its_own_minute(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, olga: int
) -> None:
    """On DuckDB the refresh queries are compiled once per workspace and read the moments
    from variables: a later refresh moves every window, exactly as a fresh compilation."""
    _buy(client, tenant, "R1", 89.5, 4_000)
    _buy(client, tenant, "R2", 364.5, 1_000)
    worker.drain()
    warehouse, ids = runtime.warehouse, pa.array([olga], pa.int64())

    def stored() -> dict[str, Any]:
        (row,) = _rows(runtime, mw.METRICS, customer_id=olga)
        return row

    def compiled_now() -> dict[str, Any]:
        chosen = ibis.memtable(pa.table({"customer_id": ids}))
        fresh = mw.compute_metrics(
            warehouse, workspace_id=tenant.workspace_id, now=clock.now(), customers=chosen
        )
        (row,) = warehouse.con.to_pyarrow(fresh).to_pylist()
        return row

    windows = ("avg_check_90d", "avg_check_prev_90d", "revenue_365d", "receipts_365d")
    assert [stored()[k] for k in windows] == [4_000, None, 5_000, 2]
    assert stored() == compiled_now()
    for _ in range(2):  # the second run reuses the first's compiled queries
        clock.advance(timedelta(days=1))
        mw.refresh_customers(
            warehouse, workspace_id=tenant.workspace_id, customer_ids=ids, now=clock.now()
        )
    assert [stored()[k] for k in windows] == [None, 4_000, 4_000, 1]
    assert clock.ensure_utc(stored()["computed_at"]) == NOW + timedelta(days=2)
    assert stored() == compiled_now()


def test_metric_catalog_rebuild_and_unknown_customers(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, olga: int
) -> None:
    catalog = {m["name"]: m for m in client.get("/v1/metrics", headers=tenant.headers).json()}
    assert catalog["overdue_ratio"] == {
        "name": "overdue_ratio",
        "type": "number",
        "meaning": "how overdue the next purchase is (2.5 = waited 2.5× the usual interval)",
        "window": "now",
        "formula": "days_since_last_purchase / typical_interval_days",
        "derived": True,
        "values": [],
        "default": None,
    }
    assert catalog["lifecycle_stage"]["values"] == [
        "prospect",
        "new",
        "active",
        "at_risk",
        "lapsed",
        "reactivated",
    ]
    missing = client.get(f"/v1/customers/{olga}/metrics", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.json()["errors"] == [
        {"field": "customer_id", "reason": f"customer {olga} has no metrics yet"}
    ]
    queued = client.post("/v1/metrics/rebuild", headers=tenant.headers, json={"profiles": True})
    assert (queued.status_code, queued.json()) == (202, {"queued": True})
    _buy(client, tenant, "R1", 3, 500)
    worker.drain()
    status = client.get("/v1/metrics/status", headers=tenant.headers).json()
    assert status["metrics_rebuilt_at"].startswith("2026-03-02T12:00:00")
    assert _rows(runtime, mw.METRICS, customer_id=olga)[0]["receipts_count"] == 1


def test_profile_sweeps_copy_only_profiles_newer_than_their_copy(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime, olga: int
) -> None:
    """The sweep looks back past its last run (SYNC_OVERLAP); a profile already copied as
    it is now is not copied again, one changed since is."""
    ws = tenant.workspace_id
    first = metrics.sync_changed_profiles(runtime, workspace_id=ws)
    assert first.customers >= 1
    clock.advance(timedelta(seconds=30))
    assert metrics.sync_changed_profiles(runtime, workspace_id=ws) == metrics.SyncOutcome(0)
    with runtime.db.scope(readonly=True) as session:
        assert metrics_store.profiles_synced_to(session, ws) == NOW + timedelta(seconds=30)

    clock.advance(timedelta(seconds=30))
    _post(client, tenant, "/v1/identify", {"userId": "olga", "traits": {"city": "Perm"}})
    worker.drain()
    clock.advance(timedelta(seconds=30))
    assert metrics.sync_changed_profiles(runtime, workspace_id=ws) == metrics.SyncOutcome(1)
    [row] = _rows(runtime, mw.PROFILES, customer_id=olga)
    assert (row["city"], clock.ensure_utc(row["updated_at"])) == (
        "Perm",
        NOW + timedelta(seconds=60),
    )
