"""A marketer's campaign and journey flows in Chromium against a real ``tactful serve`` (its
own workers run the jobs): a campaign drafted in the form to a segment, estimated, launched,
approved by a second person and sent to a real local SMTP server until done, its report
counting exactly what the server received; a journey from the abandoned-cart scenario drawn
step by step and published, and a draft whose send step lost its message refused with the
problem on that step. Every page visited is saved as a full-page screenshot."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.service import ConsentInput
from tactful.policy import service as policy
from tactful.policy.schemas import RuleSet
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy
from tactful.tenancy import users
from tactful.tenancy.models import Workspace
from tests.campaigns.conftest import EVERYONE, add_members
from tests.conftest import Tenant
from tests.e2e.conftest import Server, Shots, serving, sign_in
from tests.messaging.conftest import SmtpSink, email_setup, free_port
from tests.policy.conftest import AT

pytestmark = pytest.mark.e2e

CONSENTING = 3  # members reachable by e-mail
APPROVER_EMAIL = "approver@example.com"
APPROVER_PASSWORD = "approver-password-42"


@dataclass(frozen=True)
class Shop:
    """The served app, the SMTP server it sends to and what was made for the flows."""

    server: Server
    sink: SmtpSink
    brand_id: int
    template_id: int
    segment_id: int
    members: int
    approver_id: int


def _customer(session: Any, tenant: Tenant, n: int, *, consent: bool) -> int:
    """A customer with an e-mail (and, if ``consent``, advertising consent by e-mail)."""
    workspace = session.get(Workspace, tenant.workspace_id)
    assert workspace is not None
    [cid] = resolve_profiles(
        session,
        workspace=workspace,
        records=[
            ProfileRecord(
                idents=[
                    normalise("external", f"e2e{n}", region="RU", namespace="user_id"),
                    normalise("email", f"buyer{n}@example.com", region="RU"),
                ],
                source="test",
                at=AT,
                traits={"timezone": "Europe/Moscow", "gender": "f"},
            )
        ],
    ).customer_ids
    if consent:
        customers.set_consents(
            session,
            workspace_id=tenant.workspace_id,
            customer_id=cid,
            changes=[
                ConsentInput(kind="personal_data", status="granted"),
                ConsentInput(
                    kind="advertising", channel="email", status="granted", brand_id=tenant.brand_id
                ),
            ],
            source="test",
            evidence={},
            actor="test",
            at=AT,
            audit=False,
        )
    return int(cid)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    made: dict[str, int] = {}

    def prepare(runtime: Runtime) -> None:
        with runtime.db.scope() as session:
            workspace = tenancy.first_workspace(session)
            assert workspace is not None
            [brand] = tenancy.list_brands(session, workspace_id=workspace.id)
            tenant = Tenant(workspace.id, brand.id, "")
            # real time, not a frozen one: no quiet hours, caps or spacing in the way
            policy.set_rules(
                session,
                workspace_id=workspace.id,
                brand_id=None,
                rules_=RuleSet(caps=[], spacing=[], send_windows=None),
                actor="test",
            )
            made["approver_id"] = users.create_user(
                session,
                workspace_id=workspace.id,
                email=APPROVER_EMAIL,
                name="Approver",
                password=APPROVER_PASSWORD,
                roles=[(None, "admin")],
                actor="test",
            ).id
        made["template_id"] = email_setup(runtime, tenant, port).template_id
        with runtime.db.scope() as session:
            members = [_customer(session, tenant, n, consent=n <= CONSENTING) for n in (1, 2, 3, 4)]
            segment = segments.create_segment(
                session,
                workspace_id=tenant.workspace_id,
                name="Garden buyers",
                definition=EVERYONE,
                actor="test",
            )
            add_members(session, segment.id, members)
            made.update(brand_id=tenant.brand_id, segment_id=segment.id, members=len(members))

    try:
        with serving(tmp_path_factory.mktemp("e2e-campaigns") / "data", prepare) as server:
            yield Shop(
                server,
                sink,
                made["brand_id"],
                made["template_id"],
                made["segment_id"],
                made["members"],
                made["approver_id"],
            )
    finally:
        controller.stop()


def expect(locator: Any) -> Any:
    return pytest.importorskip("playwright.sync_api").expect(locator)


def shown_number(locator: Any) -> int:
    return int(re.sub(r"\D", "", locator.inner_text()))


def signed_in(page: Any, server: Server, shots: Shots, **who: str) -> None:
    sign_in(page, server, **who)
    page.wait_for_url(f"{server.url}/")
    shots("dashboard")


def id_in(url: str, kind: str) -> int:
    found = re.search(rf"/{kind}/(\d+)", url)
    assert found is not None, url
    return int(found.group(1))


def test_a_campaign_launched_and_approved_is_sent_to_smtp_and_reported(
    page: Any, shop: Shop, shots: Shots, browser: Any
) -> None:
    server = shop.server
    signed_in(page, server, shots)
    page.click("header.top nav a:text-is('Campaigns')")
    page.wait_for_url(f"{server.url}/campaigns")
    shots("campaigns")
    page.goto(f"{server.url}/campaigns/new")
    form = page.locator("#campaign-form")
    form.locator("input[name=name]").fill("Garden week")
    form.locator(f"[data-segments='target'] input[value='{shop.segment_id}']").check()
    form.locator("select[name=template_id]").select_option(str(shop.template_id))
    form.locator("input[name=channels]").fill("email")
    form.locator("input[name=topic]").fill("promotions")
    form.locator("select[name=schedule_kind]").select_option("now")
    form.locator("input[name=control_percent]").fill("0")
    expect(form.locator("input[name=requires_approval]")).to_be_checked()
    shots("new-campaign")
    form.locator("[data-action='create-campaign']").click()
    page.wait_for_url(re.compile(r"/campaigns/\d+\?saved"))
    campaign_id = id_in(page.url, "campaigns")
    expect(page.locator(".notice")).to_have_text("The draft is saved.")
    expect(page.locator("[data-campaign-status]")).to_have_text("draft")
    expect(page.locator("[data-def='targets']")).to_have_text("Garden buyers")
    expect(page.locator("[data-def='approval']")).to_have_text("by a second person")
    estimate = {
        k: shown_number(page.locator(f"[data-estimate='{k}']"))
        for k in ("audience", "excluded", "targeted", "control", "reached")
    }
    assert estimate == {
        "audience": shop.members,
        "excluded": 0,
        "targeted": shop.members,
        "control": 0,
        "reached": CONSENTING,  # the one without consent is not reached
    }
    assert shown_number(page.locator("[data-confirm-size]")) == shop.members
    shots("draft-with-estimate")

    # launching without the tick is refused next to the box
    page.click("[data-action='launch']")
    expect(page.locator("[data-form='launch'] .error")).to_have_text(
        "tick the box to confirm the audience"
    )
    shots("launch-unconfirmed")
    page.check("[data-form='launch'] input[name=confirm]")
    page.click("[data-action='launch']")
    page.wait_for_url(re.compile(rf"/campaigns/{campaign_id}"))
    expect(page.locator("[data-campaign-status]")).to_have_text("awaiting_approval")
    expect(page.locator("[data-waiting-approval]")).to_be_visible()
    expect(page.locator("[data-action='approve']")).to_have_count(0)
    shots("awaiting-approval")
    assert shop.sink.messages == []

    second = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        approver = second.new_page()
        approver.set_default_timeout(15_000)
        approver_shots = Shots(approver, shots.folder)
        approver_shots.count = shots.count
        signed_in(
            approver, server, approver_shots, email=APPROVER_EMAIL, password=APPROVER_PASSWORD
        )
        approver.goto(f"{server.url}/campaigns/{campaign_id}")
        expect(approver.locator("[data-approval]")).to_be_visible()
        approver_shots("approval")
        approver.click("[data-action='approve']")
        expect(approver.locator("[data-def='approved']")).to_contain_text(
            f"user:{shop.approver_id}, "
        )
        approver_shots("approved")
        shots.count = approver_shots.count
    finally:
        second.close()

    # the server's own workers start the run (a monitor every 10 s) and send; the progress
    # section polls and reloads the page when the campaign is done
    page.reload()
    expect(page.locator("[data-campaign-status]")).to_have_text(
        re.compile("scheduled|sending|done")
    )
    shots("scheduled")
    expect(page.locator("[data-campaign-status]")).to_have_text("done", timeout=60_000)
    deadline = time.monotonic() + 30
    while len(shop.sink.messages) < CONSENTING and time.monotonic() < deadline:
        time.sleep(0.5)
    received = sorted(r for _f, rcpt, _b in shop.sink.messages for r in rcpt)
    assert received == [f"buyer{n}@example.com" for n in range(1, CONSENTING + 1)]
    # the report counts a message as sent once the delivery is recorded: reload until then
    deadline = time.monotonic() + 30
    while True:
        page.reload()
        sent = shown_number(page.locator("[data-metric='sent']"))
        if sent == len(received) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sent == len(received) == CONSENTING
    expect(page.locator("[data-progress] [data-status]")).to_have_text("done")
    expect(page.locator("[data-progress][hx-get]")).to_have_count(0)
    assert page.locator("[data-table='runs'] tr[data-run] td").all_inner_texts()[:2] == [
        "1",
        "done",
    ]
    assert shown_number(page.locator("[data-metric='targeted']")) == shop.members
    assert shown_number(page.locator("[data-metric='delivered']")) == 0  # SMTP reports none
    assert shown_number(page.locator("[data-live='sent']")) == CONSENTING
    assert shown_number(page.locator("[data-live='suppressed']")) == shop.members - CONSENTING
    assert page.locator("[data-messages='sent'] td").all_inner_texts() == [
        "sent",
        str(CONSENTING),
    ]
    assert page.locator("[data-table='suppressed'] td").all_inner_texts() == [
        "no_advertising_consent",
        str(shop.members - CONSENTING),
    ]
    expect(page.locator("svg[data-chart='messages'] rect").first).to_be_attached()
    shots("done-with-report")
    page.goto(f"{server.url}/campaigns")
    assert page.locator(f"[data-campaign='{campaign_id}'] td").all_inner_texts()[:3] == [
        "Garden week",
        "Main brand",
        "done",
    ]
    shots("campaigns-done")


CART_STEPS = ["wait_for_order", "remind", "wait_a_day", "remind_again"]


def create_cart_journey(page: Any, server: Server, name: str) -> int:
    page.goto(f"{server.url}/journeys")
    page.check("[data-scenario='abandoned_cart'] input[name=scenario]")
    page.fill("[data-form='new-journey'] input[name=name]", name)
    page.click("[data-action='create-journey']")
    page.wait_for_url(re.compile(r"/journeys/\d+\?saved"))
    return id_in(page.url, "journeys")


def drawn_steps(page: Any) -> list[list[str]]:
    levels = page.locator("[data-level]")
    return [
        [box.get_attribute("data-step") for box in levels.nth(i).locator("[data-step]").all()]
        for i in range(levels.count())
    ]


def test_a_journey_from_the_cart_scenario_is_drawn_and_published(
    page: Any, shop: Shop, shots: Shots
) -> None:
    server = shop.server
    signed_in(page, server, shots)
    page.click("header.top nav a:text-is('Journeys')")
    page.wait_for_url(f"{server.url}/journeys")
    expect(page.locator("[data-scenario='abandoned_cart']")).to_be_visible()
    shots("journeys")
    journey_id = create_cart_journey(page, server, "Cart reminder")
    expect(page.locator(".notice")).to_have_text("The journey is created as a draft.")
    expect(page.locator("[data-journey-status]")).to_have_text("draft")
    expect(page.locator("[data-trigger]")).to_have_text("When the event Checkout Started")
    assert drawn_steps(page) == [[key] for key in CART_STEPS]
    assert page.locator("[data-step='wait_for_order'] [data-way]").all_inner_texts() == [
        "on event → end",
        "on timeout → remind",
    ]
    expect(page.locator("[data-step='remind'] [data-summary]")).to_contain_text("by email")
    expect(page.locator("[data-step-error]")).to_have_count(0)
    shots("journey-draft")
    page.click("[data-action='publish']")
    page.wait_for_url(re.compile(rf"/journeys/{journey_id}\?saved"))
    expect(page.locator("[data-journey-status]")).to_have_text("live")
    expect(page.locator("[data-version='1'] td").first).to_have_text("1 live")
    expect(page.locator("[data-action='pause']")).to_be_visible()
    shots("journey-live")
    page.goto(f"{server.url}/journeys")
    assert page.locator(f"[data-journey='{journey_id}'] td").all_inner_texts()[:3] == [
        "Cart reminder",
        "Main brand",
        "live",
    ]
    shots("journeys-live")


def test_a_send_step_without_a_message_is_refused_on_that_step(
    page: Any, shop: Shop, shots: Shots
) -> None:
    server = shop.server
    signed_in(page, server, shots)
    journey_id = create_cart_journey(page, server, "Cart without a message")
    page.click("[data-step='remind'] [data-action='edit-step']")
    page.wait_for_url(f"{server.url}/journeys/{journey_id}/steps/remind")
    page.select_option("[data-form='step'] select[name=template_id]", "")
    shots("step-without-message")
    page.click("[data-action='save-step']")
    page.wait_for_url(re.compile(rf"/journeys/{journey_id}\?saved"))
    shots("draft-without-message")
    page.click("[data-action='publish']")
    expect(page.locator("[data-step-error]")).to_have_text(
        ["send step 'remind' has no message (template_id)"]
    )
    expect(page.locator("[data-step='remind']")).to_have_class(re.compile(r"\binvalid\b"))
    expect(page.locator("[data-step='wait_a_day']")).not_to_have_class(re.compile(r"\binvalid\b"))
    expect(page.locator("[data-journey-status]")).to_have_text("draft")
    expect(page.locator("[data-empty='versions']")).to_be_visible()
    shots("publish-refused")
