"""The dashboard's figures, exactly, from a small shop built through the API (DuckDB warehouse,
SQLite and PostgreSQL databases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tactful.core import clock
from tactful.core.errors import NotFound
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.service import ContactQuality
from tactful.reports import service as reports
from tests.conftest import Tenant
from tests.reports.shop import NOW, WEEK_FROM, build_shop


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def test_dashboard_figures(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime
) -> None:
    build_shop(client, tenant, worker, runtime)
    with runtime.db.scope(readonly=True) as session:
        board = reports.dashboard(
            runtime, session, workspace_id=tenant.workspace_id, brand_id=tenant.brand_id
        )
    assert board.customers == 6
    assert board.profiles == 6
    assert (board.buyers, board.active, board.lapsed, board.repeat_buyers) == (3, 2, 1, 1)
    assert board.churn_rate == 1 / 3
    assert board.repeat_rate == 1 / 3
    assert (board.revenue_365d, board.receipts_365d, board.average_check) == (4_500, 3, 1_500)
    assert board.lifecycle == {
        "prospect": 3,
        "new": 1,
        "active": 1,
        "reactivated": 0,
        "at_risk": 0,
        "lapsed": 1,
    }
    assert board.reachable == {"email": 2, "sms": 1, "push": 0, "viber": 0, "telegram": 0}
    assert board.reachable_share("email") == 2 / 6
    assert board.quality == ContactQuality(
        invalid=1, bounced=1, complained=0, without_contact=2, merged=1
    )
    assert board.week_from == WEEK_FROM
    assert board.sent == {"email": (2, 20), "sms": (1, 350)}
    assert (board.messages_sent, board.messages_cost) == (3, 370)
    assert board.metrics_at == NOW


def test_empty_workspace_and_unknown_brand(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    with runtime.db.scope(readonly=True) as session:
        board = reports.dashboard(
            runtime, session, workspace_id=tenant.workspace_id, brand_id=tenant.brand_id
        )
        assert (board.customers, board.buyers, board.churn_rate, board.average_check) == (
            0,
            0,
            None,
            None,
        )
        assert board.lifecycle["prospect"] == 0
        assert board.reachable_share("email") is None
        assert board.sent == {}
        with pytest.raises(NotFound) as refused:
            reports.dashboard(
                runtime, session, workspace_id=tenant.workspace_id, brand_id=tenant.brand_id + 99
            )
        assert refused.value.field == "brand_id"


def test_week_starts_on_local_monday() -> None:
    # Sunday 23:30 UTC is already Monday in Moscow
    sunday = NOW.replace(day=8, hour=23, minute=30)
    assert reports.week_start(sunday, "Europe/Moscow") == NOW.replace(day=8, hour=21, minute=0)
    assert reports.week_start(sunday, "UTC") == NOW.replace(day=2, hour=0)
