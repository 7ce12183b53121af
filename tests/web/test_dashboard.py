"""The dashboard page: the report's figures with charts; who may see it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.reports.shop import Shop
from tests.web.conftest import SignIn


def test_dashboard_shows_the_figures_with_charts(shop: Shop, sign_in: SignIn) -> None:
    page = sign_in("analyst").get("/")
    assert page.status == 200
    tiles = {
        name: page.text(f"[data-metric='{name}']")
        for name in ("customers", "active", "churn", "repeat", "average-check", "sent", "cost")
    }
    assert tiles == {
        "customers": "6",
        "active": "2",
        "churn": "33.3 %",
        "repeat": "33.3 %",
        "average-check": "15.00 RUB",
        "sent": "3",
        "cost": "3.70 RUB",
    }
    assert page.texts("[data-reach='email'] td") == ["email", "2", "33.3 %"]
    assert page.texts("[data-reach='sms'] td") == ["sms", "1", "16.7 %"]
    assert page.texts("[data-table='sent'] [data-channel='sms'] td") == ["sms", "1", "3.50 RUB"]
    for chart in ("lifecycle", "reach", "quality", "sent"):
        assert page.has(f"svg[data-chart='{chart}'] rect"), chart
    lifecycle = page.texts("svg[data-chart='lifecycle'] text")
    assert lifecycle[:4] == ["prospect", "3", "new", "1"]
    quality = page.texts("svg[data-chart='quality'] text")
    assert quality == [
        "invalid contacts",
        "1",
        "bounced",
        "1",
        "complained",
        "0",
        "no e-mail or phone",
        "2",
        "duplicates merged",
        "1",
    ]


def test_dashboard_needs_a_signed_in_role_that_may_see_it(
    client: TestClient, sign_in: SignIn
) -> None:
    anonymous = client.get("/", follow_redirects=False)
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/login?next=/")
    pos = sign_in("pos").get("/")
    assert pos.status == 403
    assert pos.text("main p") == "your role does not allow dashboard: view"
    other_brand = sign_in("marketer").get("/", brand_id="999")
    assert other_brand.text("[data-metric='customers']") == "6"
