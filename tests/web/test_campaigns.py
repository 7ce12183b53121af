"""The campaign pages: a draft defined in a form keeps wrong values next to their field and
stores nothing; the draft shows its audience and cost; launched, it waits for a second
person (a marketer neither sees nor may use the approval); approved, it sends to a real SMTP
server until done and its report shows what was delivered; roles without campaigns are
refused."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tactful.campaigns import service as campaigns
from tactful.campaigns.models import Campaign
from tactful.campaigns.schemas import CampaignIn
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.messaging.channels.email import close_pools
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy
from tactful.tenancy.service import get_workspace
from tests.campaigns.conftest import EVERYONE, SmtpSink, add_members, email_setup, tick
from tests.messaging.conftest import smtp

__all__ = ["smtp"]  # the real SMTP server fixture
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import SignIn


def campaigns_count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Campaign)) or 0)


BUYERS = {"all": [{"type": "metric", "metric": "receipts_count", "operator": "gte", "value": 1}]}


def make_segment(
    runtime: Runtime, tenant: Tenant, name: str, members: list[int], definition: Any = EVERYONE
) -> int:
    """A segment whose materialised members are ``members`` (its definition is what the live
    estimate evaluates)."""
    with runtime.db.scope() as session:
        segment = segments.create_segment(
            session,
            workspace_id=tenant.workspace_id,
            name=name,
            definition=definition,
            actor="test",
        )
        add_members(session, segment.id, members)
        return segment.id


def draft_form(tenant: Tenant, template_id: int, segment_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "brand_id": str(tenant.brand_id),
        "description": "",
        "target_segment_ids": str(segment_id),
        "template_id": str(template_id),
        "channels": "email",
        "message_class": "marketing",
        "topic": "promotions",
        "schedule_kind": "now",
        "schedule_at": "",
        "local_date": "",
        "local_time": "",
        "control_percent": "0",
        "throttle_per_minute": "",
        "expires_after_hours": "48",
        "requires_approval": "on",
        **fields,
    }


def test_wrong_values_stay_next_to_their_field_and_nothing_is_stored(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime, smtp: tuple[SmtpSink, int]
) -> None:
    brand = email_setup(runtime, tenant, smtp[1])
    segment = make_segment(runtime, tenant, "Buyers", [shop.anna, shop.boris])
    marketer = sign_in("marketer")
    new = marketer.get("/campaigns/new")
    assert new.status == 200
    assert new.value("control_percent") == "10"
    assert new.texts("[data-segments='target'] label") == ["Buyers"]

    wrong = marketer.post(
        "/campaigns",
        draft_form(
            tenant,
            brand.template_id,
            segment,
            name="",
            control_percent="sixty",
            throttle_per_minute="0",
        ),
    )
    assert wrong.status == 422
    assert wrong.errors() == {"control_percent": "a percentage from 0 to 50"}
    assert wrong.value("control_percent") == "sixty"
    wrong = marketer.post(
        "/campaigns",
        draft_form(
            tenant, brand.template_id, segment, name="", throttle_per_minute="0", local_time="x"
        ),
    )
    assert wrong.status == 422
    assert wrong.errors() == {
        "name": "String should have at least 1 character",
        "throttle_per_minute": "Input should be greater than or equal to 1",
    }
    assert wrong.value("throttle_per_minute") == "0"
    assert wrong.value("name") == ""
    assert wrong.html.select_one("[name='target_segment_ids'][checked]") is not None

    no_part = marketer.post(
        "/campaigns", draft_form(tenant, brand.template_id, segment, channels="email, email")
    )
    assert (no_part.status, no_part.errors()) == (
        422,
        {"channels": "email is in the cascade twice"},
    )
    assert no_part.value("channels") == "email, email"
    past = marketer.post(
        "/campaigns",
        draft_form(
            tenant, brand.template_id, segment, schedule_kind="local_time", local_date="2026-03-05"
        ),
    )
    assert (past.status, past.errors()) == (
        422,
        {"local_time": "use HH:MM, 24-hour"},
    )
    assert past.value("schedule_kind") == "local_time"
    assert past.value("local_date") == "2026-03-05"
    no_segment = marketer.post(
        "/campaigns", draft_form(tenant, brand.template_id, segment, target_segment_ids="999")
    )
    assert (no_segment.status, no_segment.errors()) == (
        422,
        {"target_segment_ids": "segment 999 does not exist"},
    )
    bad_time = marketer.post(
        "/campaigns",
        draft_form(
            tenant, brand.template_id, segment, schedule_kind="at", schedule_at="tomorrow at ten"
        ),
    )
    assert (bad_time.status, bad_time.errors()) == (422, {"schedule_at": "use YYYY-MM-DD HH:MM"})
    assert bad_time.value("schedule_at") == "tomorrow at ten"
    assert campaigns_count(runtime) == 0

    at = marketer.post(
        "/campaigns",
        draft_form(
            tenant,
            brand.template_id,
            segment,
            schedule_kind="at",
            schedule_at="2026-03-05T10:00",
            control_percent="12.5",
        ),
    )
    assert at.status == 303
    campaign_id = int(at.response.headers["location"].split("/")[2].split("?")[0])
    with runtime.db.scope(readonly=True) as session:
        stored = session.get(Campaign, campaign_id)
        assert stored is not None
        assert (stored.schedule, stored.control_share) == (
            {"kind": "at", "at": "2026-03-05T10:00:00+03:00"},
            0.125,
        )
    page = marketer.get(f"/campaigns/{campaign_id}")
    assert page.text("[data-def='schedule']") == "at 2026-03-05 10:00 (Europe/Moscow)"
    assert page.text("[data-def='control']") == "12.5 %"


def test_a_draft_launched_approved_and_sent_to_smtp_reaches_done_with_its_report(
    tenant: Tenant,
    shop: Shop,
    sign_in: SignIn,
    runtime: Runtime,
    smtp: tuple[SmtpSink, int],
    worker: Worker,
) -> None:
    sink, port = smtp
    # SMTP connection pools are kept per provider id and version for the process: one of
    # the other backend's test (same ids) would still point at its stopped server
    close_pools()
    brand = email_setup(runtime, tenant, port)
    buyers = [shop.anna, shop.boris, shop.vera]
    segment = make_segment(runtime, tenant, "Buyers", buyers, BUYERS)
    excluded = make_segment(runtime, tenant, "Vera", [shop.vera])
    marketer = sign_in("marketer")
    saved = marketer.post(
        "/campaigns",
        draft_form(
            tenant,
            brand.template_id,
            segment,
            exclusion_segment_ids=str(excluded),
            throttle_per_minute="100",
        ),
    )
    assert saved.status == 303
    location = saved.response.headers["location"]
    campaign_id = int(location.split("/")[2].split("?")[0])
    page = marketer.get(f"/campaigns/{campaign_id}", saved="1")
    assert page.text(".notice") == "The draft is saved."
    assert page.text("[data-campaign-status]") == "draft"
    assert page.text("[data-def='targets']") == "Buyers"
    assert page.text("[data-def='exclusions']") == "Vera"
    assert page.text("[data-def='throttle']") == "100 a minute"
    assert {
        k: page.text(f"[data-estimate='{k}']")
        for k in ("audience", "excluded", "targeted", "control")
    } == {"audience": "2", "excluded": "1", "targeted": "2", "control": "0"}
    assert page.text("[data-confirm-size]") == "2"
    # the live definitions: Anna and Boris are reachable by e-mail at the brand's price
    assert page.text("[data-estimate='reached']") == "2"
    assert page.text("[data-estimate='cost']") == "0.20 RUB"
    assert page.has("svg[data-chart='cascade'] rect")

    unconfirmed = marketer.post(
        f"/campaigns/{campaign_id}/launch", page.form("[data-form='launch']")
    )
    assert (unconfirmed.status, unconfirmed.error("confirm")) == (
        422,
        "tick the box to confirm the audience",
    )
    launched = marketer.post(
        f"/campaigns/{campaign_id}/launch", {**page.form("[data-form='launch']"), "confirm": "yes"}
    )
    assert launched.status == 303
    waiting = marketer.get(f"/campaigns/{campaign_id}")
    assert waiting.text("[data-campaign-status]") == "awaiting_approval"
    assert not waiting.has("[data-action='approve']")
    assert waiting.has("[data-waiting-approval]")
    assert marketer.post(f"/campaigns/{campaign_id}/approve", {}).status == 403

    admin = sign_in("admin")
    review = admin.get(f"/campaigns/{campaign_id}")
    assert review.has("[data-action='approve']")
    approved = admin.post(f"/campaigns/{campaign_id}/approve", {"comment": "fine"})
    assert approved.status == 303
    scheduled = admin.get(f"/campaigns/{campaign_id}")
    assert scheduled.text("[data-campaign-status]") == "scheduled"
    assert scheduled.has("[data-progress][hx-get]")

    tick(worker)
    tick(worker)
    progress = admin.get(f"/campaigns/{campaign_id}/progress")
    assert progress.text("[data-progress] [data-status]") == "done"
    assert progress.response.headers["HX-Refresh"] == "true"
    assert sorted(r for _f, rcpt, _b in sink.messages for r in rcpt) == [
        "anna@example.com",
        "boris@example.com",
    ]
    report = admin.get(f"/campaigns/{campaign_id}")
    assert report.text("[data-campaign-status]") == "done"
    assert not report.has("[data-progress][hx-get]")
    assert report.texts("[data-table='runs'] tr[data-run] td")[:2] == ["1", "done"]
    assert report.text("[data-metric='targeted']") == "2"
    # the SMTP server accepted both: sent; it reports no delivery back
    assert report.text("[data-metric='sent']") == "2"
    assert report.text("[data-metric='delivered']") == "0"
    assert report.texts("[data-table='messages'] tr") == [
        "waiting 0",
        "sent 2",
        "delivered 0",
        "opened 0",
        "clicked 0",
        "failed 0",
        "unknown 0",
        "cancelled 0",
        "stopped at send 0",
    ]
    assert report.has("svg[data-chart='messages'] rect")
    assert report.texts("[data-group='target'] td")[:2] == ["target", "2"]
    assert not report.has("[data-action='cancel']")


def test_roles_without_campaigns_are_refused_and_a_marketer_cancels(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime, smtp: tuple[SmtpSink, int]
) -> None:
    brand = email_setup(runtime, tenant, smtp[1])
    segment = make_segment(runtime, tenant, "Buyers", [shop.anna])
    marketer = sign_in("marketer")
    saved = marketer.post("/campaigns", draft_form(tenant, brand.template_id, segment))
    campaign_id = int(saved.response.headers["location"].split("/")[2].split("?")[0])
    for role in ("analyst", "support"):
        browser = sign_in(role)
        assert "Campaigns" not in browser.get("/").texts("header nav a")
        assert browser.get("/campaigns").status == 403
        assert browser.get(f"/campaigns/{campaign_id}").status == 403
        form = draft_form(tenant, brand.template_id, segment, name="Theirs")
        assert browser.post("/campaigns", form).status == 403
        launch = {"expected_recipients": "1", "confirm": "yes"}
        assert browser.post(f"/campaigns/{campaign_id}/launch", launch).status == 403
        assert browser.post(f"/campaigns/{campaign_id}/cancel", {}).status == 403
    with runtime.db.scope() as session:
        other = tenancy.create_brand(
            session, workspace_id=tenant.workspace_id, slug="outlet", name="Outlet"
        ).id
    outsider = sign_in("marketer", brand_id=other)
    assert outsider.get("/campaigns").has("[data-empty='campaigns']")
    assert outsider.get(f"/campaigns/{campaign_id}").status == 403
    assert outsider.post(f"/campaigns/{campaign_id}/cancel", {}).status == 403
    assert campaigns_count(runtime) == 1
    assert marketer.get(f"/campaigns/{campaign_id}").text("[data-campaign-status]") == "draft"

    listing = marketer.get("/campaigns")
    assert listing.texts(f"[data-campaign='{campaign_id}'] td")[:4] == [
        "Spring sale",
        "Main brand",
        "draft",
        "now",
    ]
    admin = sign_in("admin")
    launch_form = admin.get(f"/campaigns/{campaign_id}").form("[data-form='launch']")
    launched = admin.post(f"/campaigns/{campaign_id}/launch", {**launch_form, "confirm": "yes"})
    assert launched.status == 303
    own = admin.get(f"/campaigns/{campaign_id}")
    assert own.text("[data-campaign-status]") == "awaiting_approval"
    assert not own.has("[data-action='approve']")  # not by whoever launched it
    assert admin.post(f"/campaigns/{campaign_id}/approve", {}).status == 403
    assert own.has("[data-action='cancel']")
    cancelled = marketer.post(f"/campaigns/{campaign_id}/cancel", {})
    assert cancelled.status == 303
    page = marketer.get(f"/campaigns/{campaign_id}")
    assert page.text("[data-campaign-status]") == "cancelled"
    assert not page.has("[data-action='cancel']")
    assert not page.has("[data-action='launch']")
    again = marketer.post(f"/campaigns/{campaign_id}/cancel", {})
    assert (again.status, again.text(".error.banner")) == (409, "the campaign is already cancelled")
    assert marketer.get("/campaigns", status="draft").has("[data-empty='campaigns']")


def test_a_rejected_campaign_returns_to_draft_and_is_edited(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime, smtp: tuple[SmtpSink, int]
) -> None:
    brand = email_setup(runtime, tenant, smtp[1])
    segment = make_segment(runtime, tenant, "Buyers", [shop.anna, shop.boris], BUYERS)
    marketer = sign_in("marketer")
    saved = marketer.post("/campaigns", draft_form(tenant, brand.template_id, segment))
    campaign_id = int(saved.response.headers["location"].split("/")[2].split("?")[0])
    launch_form = marketer.get(f"/campaigns/{campaign_id}").form("[data-form='launch']")
    assert (
        marketer.post(f"/campaigns/{campaign_id}/launch", {**launch_form, "confirm": "yes"}).status
        == 303
    )
    owner = sign_in("owner")
    rejected = owner.post(f"/campaigns/{campaign_id}/reject", {"comment": "too broad"})
    assert rejected.status == 303
    page = marketer.get(f"/campaigns/{campaign_id}")
    assert page.text("[data-campaign-status]") == "draft"
    assert page.text("[data-last-error]") == f"rejected by user:{owner.user_id}: too broad"

    edit = marketer.get(f"/campaigns/{campaign_id}/edit")
    form = edit.form()
    assert (form["name"], form["channels"], form["control_percent"], form["topic"]) == (
        "Spring sale",
        "email",
        "0",
        "promotions",
    )
    assert form["target_segment_ids"] == str(segment)
    wrong = marketer.post(
        f"/campaigns/{campaign_id}/edit", {**form, "throttle_per_minute": "fast", "name": "Spring"}
    )
    assert wrong.status == 422
    assert wrong.errors() == {
        "throttle_per_minute": "Input should be a valid integer, unable to parse string as an "
        "integer"
    }
    assert (wrong.value("throttle_per_minute"), wrong.value("name")) == ("fast", "Spring")
    with runtime.db.scope(readonly=True) as session:
        stored = session.get(Campaign, campaign_id)
        assert stored is not None
        assert (stored.name, stored.throttle_per_minute) == ("Spring sale", None)

    good = marketer.post(
        f"/campaigns/{campaign_id}/edit",
        {
            **form,
            "name": "Spring sale, narrower",
            "control_percent": "5",
            "throttle_per_minute": "60",
        },
    )
    assert good.status == 303
    with runtime.db.scope(readonly=True) as session:
        stored = session.get(Campaign, campaign_id)
        assert stored is not None
        assert (stored.name, stored.control_share, stored.throttle_per_minute, stored.status) == (
            "Spring sale, narrower",
            0.05,
            60,
            "draft",
        )
    page = marketer.get(f"/campaigns/{campaign_id}")
    assert page.text("h1").startswith("Spring sale, narrower")
    assert page.text("[data-def='control']") == "5.0 %"


def test_a_test_send_goes_to_test_customers_only(
    tenant: Tenant,
    shop: Shop,
    sign_in: SignIn,
    runtime: Runtime,
    smtp: tuple[SmtpSink, int],
    worker: Worker,
) -> None:
    sink, port = smtp
    close_pools()
    brand = email_setup(runtime, tenant, port)
    segment = make_segment(runtime, tenant, "Buyers", [shop.anna, shop.boris], BUYERS)
    marketer = sign_in("marketer")
    saved = marketer.post("/campaigns", draft_form(tenant, brand.template_id, segment))
    campaign_id = int(saved.response.headers["location"].split("/")[2].split("?")[0])
    assert marketer.get(f"/campaigns/{campaign_id}").has("[data-action='test-send']")
    nobody = marketer.post(f"/campaigns/{campaign_id}/test-send", htmx=True)
    assert nobody.text("[data-field='test-send']") == "the workspace has no test customers"
    with runtime.db.scope() as session:
        customers.update_profile(
            session,
            workspace=get_workspace(session, tenant.workspace_id),
            customer_id=shop.boris,
            traits={"is_test": True},
            source="test",
            actor="test",
        )
    sent = marketer.post(f"/campaigns/{campaign_id}/test-send", htmx=True)
    assert sent.texts(f"[data-test-customer='{shop.boris}'] td") == [
        str(shop.boris),
        "scheduled",
        "email",
        "ok",
    ]
    tick(worker)
    assert [rcpt for _f, rcpt, _b in sink.messages] == [["boris@example.com"]]
    assert marketer.get(f"/campaigns/{campaign_id}").text("[data-campaign-status]") == "draft"
    assert sign_in("analyst").post(f"/campaigns/{campaign_id}/test-send").status == 403


def test_editing_keeps_what_the_form_does_not_show(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime, smtp: tuple[SmtpSink, int]
) -> None:
    brand = email_setup(runtime, tenant, smtp[1])
    segment = make_segment(runtime, tenant, "Buyers", [shop.anna], BUYERS)
    recurring = {"kind": "recurring", "frequency": "weekly", "weekdays": ["mon"], "time": "10:00"}
    with runtime.db.scope() as session:
        campaign_id = campaigns.create_campaign(
            session,
            workspace_id=tenant.workspace_id,
            spec=CampaignIn.model_validate(
                {
                    "brand_id": tenant.brand_id,
                    "name": "Weekly",
                    "template_id": brand.template_id,
                    "steps": [{"channel": "email", "timeout_seconds": 3600}],
                    "target_segment_ids": [segment],
                    "schedule": recurring,
                    "goal": {"kind": "buyers", "attribution_days": 3},
                }
            ),
            actor="test",
        ).id
    marketer = sign_in("marketer")
    page = marketer.get(f"/campaigns/{campaign_id}")
    assert page.text("[data-def='schedule']") == "weekly at 10:00"
    form = marketer.get(f"/campaigns/{campaign_id}/edit").form()
    assert form["schedule_kind"] == "recurring"
    saved = marketer.post(f"/campaigns/{campaign_id}/edit", {**form, "name": "Weekly news"})
    assert saved.status == 303
    with runtime.db.scope(readonly=True) as session:
        stored = session.get(Campaign, campaign_id)
        assert stored is not None
        assert stored.name == "Weekly news"
        assert stored.schedule["kind"] == "recurring"
        assert (stored.schedule["weekdays"], stored.schedule["time"]) == (["mon"], "10:00")
        assert stored.steps[0]["timeout_seconds"] == 3600
        assert stored.goal == {"kind": "buyers", "attribution_days": 3}
