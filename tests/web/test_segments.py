"""The segment builder: live estimates as conditions are added and nested, problems shown
next to the condition with what was typed kept, saving, editing, preview and overlap; only
roles that may edit segments see it, and the server refuses the others."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tactful.core.runtime import Runtime
from tactful.segments import service as segments
from tactful.segments.models import Segment
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import Browser, SignIn


def buyers(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    """The form of "bought at least once" (and whatever else is given)."""
    return {
        "nodes": ["n", "n.0"],
        "n.kind": "group",
        "n.join": "all",
        "n.0.kind": "metric",
        "n.0.metric": "receipts_count",
        "n.0.operator": "gte",
        "n.0.value": "1",
        "estimate_brand": str(tenant.brand_id),
        **extra,
    }


def segment_count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Segment)) or 0)


def estimate(browser: Browser, form: dict[str, Any]) -> tuple[str, dict[str, str]]:
    page = browser.post("/segments/estimate", form, htmx=True)
    assert page.status == 200, page.response.text
    size = page.text("[data-estimate='size']") if page.has("[data-estimate='size']") else ""
    return size, page.errors()


def test_estimate_follows_the_conditions(tenant: Tenant, shop: Shop, sign_in: SignIn) -> None:
    marketer = sign_in("marketer")
    new = marketer.get("/segments/new")
    assert new.status == 200
    assert new.text("[data-estimate='size']") == "3"
    assert new.text("[data-estimate='description']") == "receipts count is at least 1"
    assert new.texts("[data-table='reach'] [data-channel='email'] td") == ["email", "2", "0.20 RUB"]

    # a button adds a condition: the builder comes back with a fresh estimate
    added = marketer.post("/segments/builder", buyers(tenant, op="add:n:attribute"), htmx=True)
    assert added.value("n.1.kind") == "attribute"
    assert added.value("n.1.attribute") == "gender"
    assert added.value("n.1.operator") == "eq"
    form = buyers(
        tenant,
        nodes=["n", "n.0", "n.1"],
        **{"n.1.kind": "attribute", "n.1.attribute": "city", "n.1.operator": "eq"},
        **{"n.1.value": "Moscow"},
    )
    assert estimate(marketer, form) == ("1", {})
    # a nested "any" group: bought, and (lives in Moscow or bought in the last 7 days)
    nested = marketer.post("/segments/builder", {**form, "op": "add:n:group"}, htmx=True)
    assert nested.value("n.2.join") == "any"
    grouped = buyers(
        tenant,
        nodes=["n", "n.0", "n.1", "n.1.0", "n.1.1"],
        **{"n.1.kind": "group", "n.1.join": "any"},
        **{"n.1.0.kind": "attribute", "n.1.0.attribute": "city", "n.1.0.operator": "eq"},
        **{"n.1.0.value": "Moscow"},
        **{"n.1.1.kind": "metric", "n.1.1.metric": "days_since_last_purchase"},
        **{"n.1.1.operator": "lte", "n.1.1.value": "7"},
    )
    assert estimate(marketer, grouped) == ("2", {})
    page = marketer.post("/segments/estimate", grouped, htmx=True)
    assert page.text("[data-estimate='description']") == (
        "receipts count is at least 1 and (city is “Moscow” or days since last purchase is "
        "at most 7)"
    )
    # a value that does not fit: the problem is placed on its condition
    bad = buyers(tenant, **{"n.0.value": "many"})
    assert estimate(marketer, bad) == (
        "",
        {"n.0.value": "gte expects a number, got 'many'"},
    )


def test_saving_shows_problems_next_to_the_condition_and_keeps_the_text(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    refused = marketer.post("/segments", buyers(tenant, name="Loyal", **{"n.0.value": "many"}))
    assert refused.status == 422
    assert refused.error("n.0.value") == "gte expects a number, got 'many'"
    assert refused.has("[data-node='n.0'].invalid")
    assert refused.value("n.0.value") == "many"
    assert refused.value("name") == "Loyal"
    assert segment_count(runtime) == 0

    nameless = marketer.post("/segments", buyers(tenant, name=""))
    assert (nameless.status, nameless.error("name")) == (422, "give the segment a name")
    assert segment_count(runtime) == 0

    saved = marketer.post("/segments", buyers(tenant, name="Buyers", description="all of them"))
    assert saved.status == 303
    with runtime.db.scope(readonly=True) as session:
        [segment] = segments.list_segments(session, workspace_id=tenant.workspace_id)
    assert saved.response.headers["location"] == f"/segments/{segment.id}?saved=1"
    assert segment.definition == {
        "all": [{"type": "metric", "metric": "receipts_count", "operator": "gte", "value": 1}]
    }
    duplicate = marketer.post("/segments", buyers(tenant, name="Buyers"))
    assert (duplicate.status, duplicate.error("name")) == (
        409,
        "a segment named 'Buyers' already exists",
    )
    assert segment_count(runtime) == 1

    edit = marketer.get(f"/segments/{segment.id}", saved="1")
    assert edit.text(".notice") == "Saved."
    assert (edit.value("n.0.metric"), edit.value("n.0.value")) == ("receipts_count", "1")
    assert marketer.get("/segments").texts("[data-table='segments'] tr[data-segment] td")[:2] == [
        "Buyers all of them",
        "0",
    ]
    # a second version: negated condition
    changed = marketer.post(
        f"/segments/{segment.id}",
        buyers(tenant, name="Never bought", **{"n.0.negate": "on"}),
    )
    assert changed.status == 303
    with runtime.db.scope(readonly=True) as session:
        again = segments.get_segment(
            session, workspace_id=tenant.workspace_id, segment_id=segment.id
        )
        assert (again.name, again.version) == ("Never bought", 2)
        assert again.definition == {
            "all": [
                {
                    "not": {
                        "type": "metric",
                        "metric": "receipts_count",
                        "operator": "gte",
                        "value": 1,
                    }
                }
            ]
        }


def test_preview_and_overlap(tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime) -> None:
    with runtime.db.scope() as session:
        ids = [
            segments.create_segment(
                session,
                workspace_id=tenant.workspace_id,
                name=name,
                definition={"all": [condition]},
                actor="test",
            ).id
            for name, condition in (
                (
                    "Buyers",
                    {"type": "metric", "metric": "receipts_count", "operator": "gte", "value": 1},
                ),
                (
                    "E-mail",
                    {"type": "attribute", "attribute": "has_email", "operator": "is_true"},
                ),
            )
        ]
    marketer = sign_in("marketer")
    preview = marketer.post("/segments/preview", buyers(tenant), htmx=True)
    assert preview.texts("[data-table='preview'] tr[data-member]") == [
        f"{shop.anna} 2",
        f"{shop.boris} 1",
        f"{shop.vera} 1",
    ]
    overlap = marketer.get(f"/segments/{ids[0]}/overlap", other=str(ids[1]))
    assert {
        key: overlap.text(f"[data-overlap='{key}']")
        for key in ("first", "second", "both", "either")
    } == {"first": "3", "second": "3", "both": "2", "either": "4"}
    page = marketer.get(f"/segments/{ids[0]}")
    assert page.has("[data-action='overlap']")


def test_roles_without_segments_neither_see_nor_save(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    for role in ("analyst", "support"):
        browser = sign_in(role)
        assert "Segments" not in browser.get("/customers").texts("header.top nav a")
        assert browser.get("/segments").status == 403
        assert browser.get("/segments/new").status == 403
        refused = browser.post("/segments", buyers(tenant, name="Sneaky"))
        assert refused.status == 403
        assert browser.post("/segments/estimate", buyers(tenant), htmx=True).status == 403
    assert segment_count(runtime) == 0
    no_csrf = sign_in("marketer").client.post("/segments", data=buyers(tenant, name="X"))
    assert no_csrf.status_code == 403
    assert segment_count(runtime) == 0
