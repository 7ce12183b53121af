"""The journey pages: a journey from a ready-made scenario is drawn step by step with its
ways out, publishes, and counts a customer who entered on the step they wait on; a step's
settings are saved to the draft (a wrong duration stays next to its field); a send step
without a message is refused at publishing with the problem on that step; pause, resume and
stop; roles without journeys are refused."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.journeys import service as journeys
from tactful.journeys.models import Journey
from tactful.tenancy import service as tenancy
from tests.conftest import Tenant
from tests.journeys.conftest import run_jobs
from tests.reports.shop import Shop
from tests.web.conftest import Browser, SignIn

CART_STEPS = ["wait_for_order", "remind", "wait_a_day", "remind_again"]


def journeys_count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Journey)) or 0)


def draft_of(runtime: Runtime, tenant: Tenant, journey_id: int) -> dict[str, object]:
    with runtime.db.scope(readonly=True) as session:
        journey = journeys.get_journey(
            session, workspace_id=tenant.workspace_id, journey_id=journey_id
        )
        return dict(journey.draft)


def create_cart(browser: Browser, tenant: Tenant) -> int:
    created = browser.post(
        "/journeys",
        {"scenario": "abandoned_cart", "brand_id": str(tenant.brand_id), "name": ""},
    )
    assert created.status == 303, created.response.text
    return int(created.response.headers["location"].split("/")[2].split("?")[0])


def test_a_scenario_is_drawn_publishes_and_counts_who_entered(
    tenant: Tenant,
    shop: Shop,
    sign_in: SignIn,
    runtime: Runtime,
    client: TestClient,
    worker: Worker,
) -> None:
    marketer = sign_in("marketer")
    listing = marketer.get("/journeys")
    assert listing.status == 200
    assert listing.has("[data-empty='journeys']")
    assert len(listing.html.select("[data-scenario]")) == len(journeys.SCENARIOS)
    journey_id = create_cart(marketer, tenant)
    page = marketer.get(f"/journeys/{journey_id}", saved="1")
    assert page.text(".notice") == "The journey is created as a draft."
    assert page.text("[data-journey-status]") == "draft"
    assert page.text("[data-trigger]") == "When the event Checkout Started"
    assert [
        [box["data-step"] for box in level.select("[data-step]")]
        for level in page.html.select("[data-level]")
    ] == [[key] for key in CART_STEPS]
    assert page.texts("[data-step='wait_for_order'] [data-way]") == [
        "on event → end",
        "on timeout → remind",
    ]
    assert page.text("[data-step='remind'] [data-summary]") == "Your cart is waiting by email"
    assert (
        page.text("[data-step='remind_again'] [data-summary]")
        == "Your cart is waiting by push → sms"
    )
    assert page.has("[data-empty='versions']")
    assert page.has("[data-action='publish']")

    published = marketer.post(f"/journeys/{journey_id}/publish")
    assert published.status == 303
    live = marketer.get(f"/journeys/{journey_id}", saved="3")
    assert live.text("[data-journey-status]") == "live"
    assert live.texts("[data-version='1'] td")[:2] == ["1 live", f"user:{marketer.user_id}"]

    response = client.post(
        "/v1/track",
        headers=tenant.headers,
        json={
            "userId": "anna",
            "event": "Checkout Started",
            "properties": {"cart_id": "c1", "items": [{"name": "Rake", "price": 990}]},
            "timestamp": clock.now().isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    run_jobs(worker)
    counted = marketer.get(f"/journeys/{journey_id}")
    assert counted.text("[data-metric='entered']") == "1"
    assert counted.text("[data-step='wait_for_order'] [data-count='now']") == "1"
    assert counted.text("[data-step='remind'] [data-count='now']") == "0"
    assert counted.texts("[data-version='1'] td")[3:] == ["1", "1"]
    assert marketer.get("/journeys").texts(f"[data-journey='{journey_id}'] td")[:5] == [
        "Abandoned cart",
        "Main brand",
        "live",
        "event",
        "1",
    ]

    paused = marketer.post(f"/journeys/{journey_id}/pause")
    assert paused.status == 303
    page = marketer.get(f"/journeys/{journey_id}")
    assert page.text("[data-journey-status]") == "paused"
    assert page.has("[data-action='resume']")
    assert marketer.post(f"/journeys/{journey_id}/resume").status == 303
    assert marketer.post(f"/journeys/{journey_id}/stop").status == 303
    stopped = marketer.get(f"/journeys/{journey_id}")
    assert stopped.text("[data-journey-status]") == "stopped"
    assert not stopped.has("[data-action='publish']")
    assert not stopped.has("[data-action='edit-step']")
    assert stopped.text("[data-step='wait_for_order'] [data-count='now']") == "0"


def test_step_settings_are_saved_to_the_draft_and_problems_show_on_their_step(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    journey_id = create_cart(marketer, tenant)
    before = draft_of(runtime, tenant, journey_id)
    wait = marketer.get(f"/journeys/{journey_id}/steps/wait_a_day")
    assert wait.value("duration") == "P1D"
    wrong = marketer.post(
        f"/journeys/{journey_id}/steps/wait_a_day", {**wait.form(), "duration": "two days"}
    )
    assert wrong.status == 422
    assert wrong.errors() == {
        "duration": "Input should be a valid timedelta, invalid digit in duration"
    }
    assert wrong.value("duration") == "two days"
    assert draft_of(runtime, tenant, journey_id) == before

    saved = marketer.post(
        f"/journeys/{journey_id}/steps/wait_a_day",
        {**wait.form(), "duration": "PT12H", "title": "Half a day"},
    )
    assert (saved.status, saved.response.headers["location"]) == (
        303,
        f"/journeys/{journey_id}?saved=2#step-wait_a_day",
    )
    page = marketer.get(f"/journeys/{journey_id}", saved="2")
    assert page.text("[data-step='wait_a_day'] [data-summary]") == "wait PT12H"
    assert page.text("[data-step='wait_a_day'] strong") == "Half a day"

    send = marketer.get(f"/journeys/{journey_id}/steps/remind_again")
    assert send.value("channels") == "push, sms"
    kept = marketer.post(
        f"/journeys/{journey_id}/steps/remind_again", {**send.form(), "channels": "email, push"}
    )
    assert kept.status == 303
    steps = draft_of(runtime, tenant, journey_id)["steps"]
    assert steps[3]["channels"] == [  # type: ignore[index]
        {"channel": "email", "wait_for": "delivered"},
        {"channel": "push", "timeout": "PT4H", "wait_for": "delivered"},
    ]

    remind = marketer.get(f"/journeys/{journey_id}/steps/remind")
    no_message = marketer.post(
        f"/journeys/{journey_id}/steps/remind", {**remind.form(), "template_id": ""}
    )
    assert no_message.status == 303
    refused = marketer.post(f"/journeys/{journey_id}/publish")
    assert refused.status == 422
    assert refused.texts("[data-step-error]") == ["send step 'remind' has no message (template_id)"]
    assert refused.has("[data-step='remind'].invalid")
    assert not refused.has("[data-step='wait_a_day'].invalid")
    assert refused.text("[data-journey-status]") == "draft"
    assert refused.has("[data-empty='versions']")


def test_roles_without_journeys_are_refused(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    journey_id = create_cart(sign_in("admin"), tenant)
    before = draft_of(runtime, tenant, journey_id)
    for role in ("analyst", "support"):
        browser = sign_in(role)
        assert "Journeys" not in browser.get("/").texts("header nav a")
        assert browser.get("/journeys").status == 403
        assert browser.get(f"/journeys/{journey_id}").status == 403
        assert browser.post("/journeys", {"scenario": "birthday"}).status == 403
        assert browser.post(f"/journeys/{journey_id}/publish").status == 403
        assert browser.post(f"/journeys/{journey_id}/stop").status == 403
        assert (
            browser.post(f"/journeys/{journey_id}/steps/remind", {"template_id": ""}).status == 403
        )
    with runtime.db.scope() as session:
        other = tenancy.create_brand(
            session, workspace_id=tenant.workspace_id, slug="outlet", name="Outlet"
        ).id
    outsider = sign_in("marketer", brand_id=other)
    assert outsider.get("/journeys").has("[data-empty='journeys']")
    assert outsider.get(f"/journeys/{journey_id}").status == 403
    assert outsider.post(f"/journeys/{journey_id}/stop").status == 403
    assert journeys_count(runtime) == 1
    assert draft_of(runtime, tenant, journey_id) == before
    marketer = sign_in("marketer")
    unknown = marketer.post("/journeys", {"scenario": "nothing", "brand_id": "", "name": ""})
    assert (unknown.status, unknown.error("scenario")) == (
        422,
        "there is no scenario 'nothing'; choose one of ['abandoned_cart', 'birthday', "
        "'post_purchase_cross_sell', 'signup_confirmation_call', 'welcome_series', 'win_back']",
    )
    assert journeys_count(runtime) == 1


def test_every_scenario_is_drawn_with_every_step(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    admin = sign_in("admin")
    for key in sorted(journeys.SCENARIOS):
        created = admin.post("/journeys", {"scenario": key, "brand_id": str(tenant.brand_id)})
        assert created.status == 303, key
        journey_id = int(created.response.headers["location"].split("/")[2].split("?")[0])
        page = admin.get(f"/journeys/{journey_id}")
        assert page.status == 200, key
        draft = draft_of(runtime, tenant, journey_id)
        keys = [s["key"] for s in draft["steps"]]  # type: ignore[attr-defined]
        assert sorted(b["data-step"] for b in page.html.select("[data-step]")) == sorted(keys)
        for step in keys:
            assert admin.get(f"/journeys/{journey_id}/steps/{step}").status == 200, (key, step)
        assert admin.post(f"/journeys/{journey_id}/publish").status == 303, key
    assert journeys_count(runtime) == len(journeys.SCENARIOS)
