"""A marketer's flows in Chromium on a small demo chain (300 customers): the segment builder
re-estimates as a condition is added, a template previews live for a real customer, a
customer found by e-mail or phone shows why a message was not sent, a wrong value is shown
next to its field with the typed text kept, and a role without the permission does not see
the action. Every page visited is saved as a full-page screenshot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Consent, Identity
from tactful.demo.load import load_demo
from tests.e2e.conftest import Server, Shots, serving, sign_in

pytestmark = pytest.mark.e2e

CUSTOMERS = 300


@dataclass(frozen=True)
class Chain:
    """The running demo chain and the customer the profile flow looks up."""

    server: Server
    customer_id: int
    email: str
    phone: str


def _load(runtime: Runtime) -> None:
    load_demo(runtime, customers=CUSTOMERS, seed=7)
    worker = Worker(runtime, worker_id="demo")
    worker.drain()
    worker.run_due_monitors()  # the metrics the segment builder counts on
    worker.drain()


def _customer_with_sms_consent(runtime: Runtime) -> tuple[int, str, str]:
    """The first customer with an e-mail, a phone and advertising consent for SMS."""
    with runtime.db.scope(readonly=True) as session:
        consenting = select(Consent.customer_id).where(
            Consent.kind == "advertising", Consent.channel == "sms", Consent.status == "granted"
        )
        rows = session.execute(
            select(Identity.customer_id, Identity.kind, Identity.value)
            .where(
                Identity.customer_id.in_(consenting),
                Identity.kind.in_(("email", "phone")),
                Identity.valid.is_(True),
            )
            .order_by(Identity.customer_id)
        ).all()
    contacts: dict[int, dict[str, str]] = {}
    for customer_id, kind, value in rows:
        contacts.setdefault(customer_id, {})[kind] = value
    return next(
        (cid, found["email"], found["phone"])
        for cid, found in contacts.items()
        if {"email", "phone"} <= found.keys()
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    data_dir = tmp_path_factory.mktemp("e2e-chain") / "data"
    found: list[tuple[int, str, str]] = []

    def prepare(runtime: Runtime) -> None:
        _load(runtime)
        found.append(_customer_with_sms_consent(runtime))

    with serving(data_dir, prepare) as server:
        customer_id, email, phone = found[0]
        yield Chain(server, customer_id, email, phone)


def expect(locator: Any) -> Any:
    return pytest.importorskip("playwright.sync_api").expect(locator)


def signed_in(page: Any, server: Server, shots: Shots) -> None:
    sign_in(page, server)
    page.wait_for_url(f"{server.url}/")
    shots("dashboard")


def size_of(server: Server, definition: dict[str, Any]) -> int:
    with server.api as api:
        response = api.post("/v1/segments/size", json={"definition": definition})
    assert response.status_code == 200, response.text
    return int(response.json()["size"])


def shown_number(locator: Any) -> int:
    return int(re.sub(r"\D", "", locator.inner_text()))


def test_segment_estimate_changes_as_a_condition_is_added(
    page: Any, chain: Chain, shots: Shots
) -> None:
    server = chain.server
    signed_in(page, server, shots)
    page.click("header.top nav a:text-is('Segments')")
    page.wait_for_url(f"{server.url}/segments")
    shots("segments")
    page.goto(f"{server.url}/segments/new")
    size = page.locator("#estimate [data-estimate='size']")
    buyers = {"type": "metric", "metric": "receipts_count", "operator": "gte", "value": 1}
    expected = size_of(server, {"all": [buyers]})
    assert 0 < expected <= CUSTOMERS + 100
    assert shown_number(size) == expected
    assert page.locator("[data-estimate='description']").inner_text() == (
        "receipts count is at least 1"
    )
    shots("builder-buyers")

    page.click("[data-add='n'] button[value='add:n:consent']")
    page.wait_for_selector("select[name='n.1.kind']")
    channel = page.input_value("select[name='n.1.channel']")
    brand_id = int(page.input_value("select[name='n.1.brand_id']"))
    consent = {"type": "consent", "channel": channel, "brand_id": brand_id, "granted": True}
    narrowed = size_of(server, {"all": [buyers, consent]})
    assert 0 < narrowed < expected
    expect(size).to_have_text(f"{narrowed:,}")
    shots("builder-with-consent")

    # a value that does not fit, typed: the problem sits on its condition, the text stays
    page.fill("input[name='n.0.value']", "many")
    error = page.locator("em.error[data-field='n.0.value']")
    expect(error).to_have_text("gte expects a number, got 'many'")
    assert page.input_value("input[name='n.0.value']") == "many"
    expect(page.locator("[data-estimate='invalid']")).to_be_visible()
    shots("builder-wrong-value")
    page.fill("input[name='n.0.value']", "2")
    twice = size_of(server, {"all": [{**buyers, "value": 2}, consent]})
    assert twice <= narrowed
    expect(size).to_have_text(f"{twice:,}")
    expect(error).to_have_count(0)
    # a changed select re-renders the builder, keeping what was typed
    page.select_option("select[name='n.0.operator']", "gt")
    assert page.input_value("input[name='n.0.value']") == "2"
    over_two = size_of(server, {"all": [{**buyers, "operator": "gt", "value": 2}, consent]})
    expect(size).to_have_text(f"{over_two:,}")


def test_template_previews_live_for_a_customer(page: Any, chain: Chain, shots: Shots) -> None:
    server = chain.server
    with server.api as api:
        customer = api.get(f"/v1/customers/{chain.customer_id}").json()
    first_name = customer["first_name"]
    assert first_name
    signed_in(page, server, shots)
    page.goto(f"{server.url}/templates/new")
    shots("template-new")
    page.fill("input[name='key']", "spring-sale")
    page.fill("input[name='name']", "Spring sale")
    page.fill("input[name='parts.email.subject']", "Spring is here, {{ customer.first_name }}")
    page.fill(
        "textarea[name='parts.email.body']",
        "<mj-section><mj-column><mj-text>Seeds and tools for {{ customer.first_name }}"
        "</mj-text></mj-column></mj-section>",
    )
    page.select_option("select[name='preview_channel']", "email")
    page.fill("input[name='preview_customer']", str(chain.customer_id))
    page.click("button[data-action='preview']")
    subject = page.locator("#preview [data-rendered='subject']")
    expect(subject).to_have_text(f"Spring is here, {first_name}")
    assert (
        f"Seeds and tools for {first_name}"
        in page.locator("#preview [data-rendered='text']").inner_text()
    )
    shots("template-preview")

    page.fill("input[name='parts.email.subject']", "Last days of spring, {{ customer.first_name }}")
    page.click("button[data-action='preview']")
    expect(subject).to_have_text(f"Last days of spring, {first_name}")
    page.click("button[data-action='save']")
    page.wait_for_url(re.compile(r".*/templates/\d+\?saved=1$"))
    assert page.locator("h1").inner_text() == "Spring sale v1"
    shots("template-saved")


def test_profile_found_by_email_or_phone_says_why_a_message_was_not_sent(
    page: Any, chain: Chain, shots: Shots
) -> None:
    server = chain.server
    with server.api as api:
        revoked = api.put(
            f"/v1/customers/{chain.customer_id}/consents",
            json={
                "changes": [
                    {"kind": "advertising", "status": "revoked", "channel": "sms", "brand_id": 1}
                ],
                "source": "call_centre",
                "evidence": {"call": "asked to stop SMS"},
            },
        )
        assert revoked.status_code == 200, revoked.text
        template = api.post(
            "/v1/templates",
            json={
                "brand_id": 1,
                "key": "weekend",
                "name": "Weekend offer",
                "parts": {"sms": {"text": "Weekend offer, {{ customer.first_name }}!"}},
            },
        )
        assert template.status_code == 201, template.text
        sent = api.post(
            "/v1/messages",
            json={
                "brand_id": 1,
                "customer_id": chain.customer_id,
                "template_id": template.json()["id"],
                "message_class": "marketing",
                "steps": [{"channel": "sms"}],
            },
        )
    assert sent.status_code == 201, sent.text
    assert (sent.json()["outcome"], sent.json()["reason"]) == (
        "suppressed",
        "no_advertising_consent",
    )

    signed_in(page, server, shots)
    page.click("header.top nav a:text-is('Customers')")
    page.wait_for_url(f"{server.url}/customers")
    shots("customers")
    page.fill("input[name='q']", chain.email.upper())
    page.click("button:text-is('Search')")
    page.wait_for_url(f"{server.url}/customers/{chain.customer_id}")
    assert page.locator("[data-field='email']").inner_text() == chain.email
    assert page.locator("[data-field='phone']").inner_text() == chain.phone
    decision = page.locator("[data-table='decisions'] tr[data-decision]").first
    cells = decision.locator("td").all_inner_texts()
    assert cells[1:] == [
        "api:api_key:1",
        "marketing",
        "—",
        "suppressed",
        "no advertising consent for the brand and channel",
    ]
    assert page.locator("[data-table='timeline'] [data-why]").all_inner_texts() == [
        "why not: no advertising consent for the brand and channel"
    ]
    shots("profile-by-email")

    # the same customer by the phone typed the way people say it
    local = "8 (" + chain.phone[2:5] + ") " + chain.phone[5:8] + "-" + chain.phone[8:10] + "-"
    page.goto(f"{server.url}/customers")
    page.fill("input[name='q']", local + chain.phone[10:])
    page.press("input[name='q']", "Enter")
    page.wait_for_url(f"{server.url}/customers/{chain.customer_id}")
    shots("profile-by-phone")


def test_wrong_values_stay_next_to_their_field_and_roles_see_only_what_they_may(
    page: Any, chain: Chain, shots: Shots
) -> None:
    server = chain.server
    signed_in(page, server, shots)
    page.click("header.top nav a:text-is('Settings')")
    page.wait_for_url(f"{server.url}/settings")
    shots("settings")
    page.fill("form[data-form='price'] input[name='price']", "cheap")
    page.click("form[data-form='price'] button[type=submit]")
    expect(page.locator("form[data-form='price'] em.error[data-field='price']")).to_have_text(
        "Input should be a valid integer, unable to parse string as an integer"
    )
    assert page.input_value("form[data-form='price'] input[name='price']") == "cheap"
    assert page.locator("[data-table='prices'] td").count() == 0
    shots("price-wrong-value")

    page.click("nav.tabs a:text-is('People and roles')")
    page.wait_for_url(f"{server.url}/settings/users")
    person = "form[data-form='user']"
    page.fill(f"{person} input[name='email']", "nina@chain.example")
    page.fill(f"{person} input[name='name']", "Nina")
    page.fill(f"{person} input[name='password']", "short")
    page.select_option(f"{person} select[name='role']", "analyst")
    page.click(f"{person} button[type=submit]")
    expect(page.locator(f"{person} em.error[data-field='password']")).to_have_text(
        "use at least 10 characters"
    )
    assert page.input_value(f"{person} input[name='email']") == "nina@chain.example"
    assert page.input_value(f"{person} select[name='role']") == "analyst"
    assert page.locator("[data-user='nina@chain.example']").count() == 0
    shots("person-wrong-value")
    page.fill(f"{person} input[name='password']", "a long enough password")
    page.click(f"{person} button[type=submit]")
    page.wait_for_url(f"{server.url}/settings/users?saved=1")
    assert page.locator("[data-user='nina@chain.example'] td").nth(2).inner_text() == "analyst"
    shots("person-added")
    page.click("text=Sign out")
    page.wait_for_url(f"{server.url}/login")

    sign_in(page, server, email="nina@chain.example", password="a long enough password")
    page.wait_for_url(f"{server.url}/")
    nav = page.locator("header.top nav a").all_inner_texts()
    assert "Settings" not in nav
    assert "Segments" not in nav
    assert "Customers" in nav
    shots("analyst-dashboard")
    page.goto(f"{server.url}/customers")
    assert page.locator("[data-action='export']").count() == 0
    shots("analyst-customers")
    page.goto(f"{server.url}/policy")
    assert page.locator("[data-table='caps']").count() == 1
    assert page.locator("[data-action='edit-rules']").count() == 0
    shots("analyst-policy")
    response = page.goto(f"{server.url}/settings")
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Not allowed"
    shots("analyst-settings-refused")
