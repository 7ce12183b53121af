"""The contact policy pages: rules, suppression reasons of the last days and versions for
every role that may see them; the editor (owners and admins only) shows a wrong value next
to its field and keeps it, publishes good rules, and replays the last days (what-if)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.policy import service as policy
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import SignIn


def versions(runtime: Runtime, tenant: Tenant, brand_id: int | None = None) -> list[int]:
    with runtime.db.scope(readonly=True) as session:
        return [r.version for r in rule_rows(session, tenant, brand_id)]


def rule_rows(session: Session, tenant: Tenant, brand_id: int | None) -> list[object]:
    return list(policy.rule_history(session, workspace_id=tenant.workspace_id, brand_id=brand_id))


def test_rules_and_suppressions_are_shown_without_the_editor_to_analysts(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    analyst = sign_in("analyst")
    page = analyst.get("/policy")
    assert page.status == 200
    assert page.texts("[data-table='caps'] tr[data-cap] td")[:3] == [
        "marketing-per-day",
        "2",
        "day",
    ]
    assert page.texts("[data-table='suppressions'] tr td")[1:] == [
        "suppressed",
        "no advertising consent for the brand and channel",
        "1",
    ]
    assert page.has("svg[data-chart='reasons'] rect")
    assert not page.has("[data-action='edit-rules']")
    assert analyst.get("/policy/edit").status == 403
    editor = sign_in("admin").get("/policy/edit")
    refused = analyst.post("/policy/edit", {**editor.form(), "action": "save"})
    assert refused.status == 403
    assert versions(runtime, tenant) == []
    marketer = sign_in("marketer")
    assert not marketer.get("/policy").has("[data-action='edit-rules']")
    assert marketer.post("/policy/edit", {**editor.form(), "action": "save"}).status == 403
    assert versions(runtime, tenant) == []


def test_editor_keeps_wrong_values_then_publishes_good_ones(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    admin = sign_in("admin")
    assert admin.get("/policy").has("[data-action='edit-rules']")
    editor = admin.get("/policy/edit")
    form = editor.form()
    assert form["caps.0.id"] == "marketing-per-day"
    assert form["caps.0.limit"] == "2"
    assert form["send_windows.default"] == "09:00-21:00"
    wrong = admin.post(
        "/policy/edit",
        {**form, "caps.0.limit": "lots", "send_windows.default": "9-21", "action": "save"},
    )
    assert wrong.status == 422
    assert wrong.errors() == {
        "caps.0.limit": "Input should be a valid integer, unable to parse string as an integer",
        "send_windows.default": "use HH:MM, 24-hour",
    }
    assert wrong.value("caps.0.limit") == "lots"
    assert wrong.value("send_windows.default") == "9-21"
    assert versions(runtime, tenant) == []

    good = admin.post(
        "/policy/edit",
        {
            **form,
            "caps.0.limit": "3",
            "caps.2.id": "sms-per-week",
            "caps.2.limit": "1",
            "caps.2.period": "week",
            "caps.2.channel": "sms",
            "send_windows.weekdays.sun": "12:00-18:00",
            "send_windows.holidays": "2026-03-08",
            "comment": "a third message a day",
            "action": "save",
        },
    )
    assert (good.status, good.response.headers["location"]) == (303, "/policy?saved=1")
    assert versions(runtime, tenant) == [1]
    with runtime.db.scope(readonly=True) as session:
        rules, version = policy.current_rules(
            session, workspace_id=tenant.workspace_id, brand_id=None
        )
    assert version == 1
    assert [(c.id, c.limit, c.period, c.channel) for c in rules.caps] == [
        ("marketing-per-day", 3, "day", None),
        ("marketing-per-week", 6, "week", None),
        ("sms-per-week", 1, "week", "sms"),
    ]
    assert rules.send_windows is not None
    assert [(w.start, w.end) for w in rules.send_windows.weekdays["sun"]] == [("12:00", "18:00")]
    assert [d.isoformat() for d in rules.send_windows.holidays] == ["2026-03-08"]
    shown = admin.get("/policy", saved="1")
    assert shown.text(".notice") == "The rules are published."
    assert shown.texts("[data-table='history'] td")[3] == "a third message a day"


def test_what_if_replays_the_last_days_and_keeps_nothing(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    owner = sign_in("owner")
    form = owner.get("/policy/edit").form()
    replay = owner.post("/policy/edit", {**form, "caps.0.limit": "0", "action": "whatif"})
    assert replay.status == 200
    assert replay.texts("[data-what-if='actual'] td") == ["0", "0", "0", "1", "0.00 RUB"]
    assert replay.texts("[data-what-if='proposed'] td") == ["0", "0", "0", "1", "0.00 RUB"]
    assert replay.value("caps.0.limit") == "0"
    bad_days = owner.post("/policy/edit", {**form, "days": "a week", "action": "whatif"})
    assert (bad_days.status, bad_days.error("days")) == (422, "a number of days")
    assert versions(runtime, tenant) == []
