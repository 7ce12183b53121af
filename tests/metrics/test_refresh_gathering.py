"""A load's metrics refresh waits a moment and then also covers the loads that came
meanwhile: one run for all of them, the others' jobs finished with it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core import clock
from tactful.core.jobs.models import Job
from tactful.core.jobs.registry import JOBS
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.metrics import jobs as metrics_jobs
from tactful.metrics import warehouse as mw
from tests.conftest import Tenant

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def _post(client: TestClient, tenant: Tenant, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, headers=tenant.headers, json=body)
    assert response.status_code == 200, response.text


def _buy(client: TestClient, tenant: Tenant, user: str, receipt: str, total: int) -> None:
    _post(
        client,
        tenant,
        "/v1/purchases",
        {
            "receipt_id": receipt,
            "customer": {"user_id": user},
            "store_id": "S7",
            "occurred_at": (NOW - timedelta(days=3)).isoformat(),
            "lines": [{"product_id": "P1", "quantity": 1, "unit_price": total}],
        },
    )


def _refresh_jobs(runtime: Runtime) -> list[tuple[str, int, datetime]]:
    with runtime.db.scope(readonly=True) as session:
        rows = session.execute(
            select(Job.status, Job.attempts, Job.run_at)
            .where(Job.name == metrics_jobs.REFRESH_JOB)
            .order_by(Job.id)
        )
        return [(status, attempts, clock.ensure_utc(at)) for status, attempts, at in rows]


def _revenue(runtime: Runtime, workspace_id: int) -> dict[int, int]:
    table = runtime.warehouse.table(mw.METRICS)
    rows = runtime.warehouse.con.to_pyarrow(
        table.filter(table.workspace_id == workspace_id).select("customer_id", "revenue")
    ).to_pylist()
    return {int(r["customer_id"]): int(r["revenue"]) for r in rows}


def test_refreshes_asked_for_meanwhile_run_as_one(
    client: TestClient,
    tenant: Tenant,
    worker: Worker,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for user in ("olga", "anna"):
        _post(client, tenant, "/v1/identify", {"userId": user, "traits": {"first_name": user}})
    worker.drain()
    earlier = _refresh_jobs(runtime)
    before = _revenue(runtime, tenant.workspace_id)
    # the real delay (the suite's other tests run gathering jobs at once)
    spec = JOBS[metrics_jobs.REFRESH_JOB]
    monkeypatch.setitem(JOBS, spec.name, replace(spec, delay=metrics_jobs.REFRESH_DELAY))

    _buy(client, tenant, "olga", "R1", 4_000)
    worker.drain()  # resolved and loaded; its refresh waits
    clock.advance(timedelta(seconds=1))
    _buy(client, tenant, "anna", "R2", 2_500)
    worker.drain()
    due = NOW + metrics_jobs.REFRESH_DELAY
    assert _refresh_jobs(runtime)[len(earlier) :] == [
        ("queued", 0, due),
        ("queued", 0, due + timedelta(seconds=1)),
    ]
    assert _revenue(runtime, tenant.workspace_id) == before

    clock.advance(metrics_jobs.REFRESH_DELAY - timedelta(seconds=1))
    worker.drain()
    # the first ran (one attempt) and covered the second, which was never claimed
    assert [(s, a) for s, a, _ in _refresh_jobs(runtime)[len(earlier) :]] == [
        ("done", 1),
        ("done", 0),
    ]
    assert sorted(_revenue(runtime, tenant.workspace_id).values()) == [2_500, 4_000]
