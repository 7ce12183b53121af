"""Ready-made scenarios: each is created as a valid draft that publishes as it stands; the
abandoned cart runs end to end with the cart's items in the e-mail a real SMTP server
receives."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.journeys.graph import parse_graph
from tactful.segments import service as segments
from tests.journeys.conftest import (
    Brand,
    MakeCustomer,
    SmtpSink,
    deliveries,
    email_of,
    history,
    instances,
    later,
    run_jobs,
    track,
)

SCENARIOS = {
    "abandoned_cart": "event",
    "welcome_series": "event",
    "birthday": "date",
    "win_back": "segment",
    "post_purchase_cross_sell": "event",
    "signup_confirmation_call": "event",
}


def test_every_scenario_is_created_valid_and_publishes(
    runtime: Runtime, brand: Brand, client: TestClient
) -> None:
    tenant = brand.tenant
    listed = client.get("/v1/journeys/scenarios", headers=tenant.headers).json()
    assert sorted(s["key"] for s in listed) == sorted(SCENARIOS)
    for key, trigger in SCENARIOS.items():
        created = client.post(
            f"/v1/journeys/scenarios/{key}",
            headers=tenant.headers,
            json={"brand_id": tenant.brand_id},
        )
        assert created.status_code == 201, (key, created.text)
        journey = created.json()
        assert (journey["status"], journey["scenario"]) == ("draft", key)
        graph = parse_graph(journey["draft"])
        assert graph.trigger.type == trigger
        checked = client.post(f"/v1/journeys/{journey['id']}/validate", headers=tenant.headers)
        assert checked.json() == {"valid": True, "problems": []}, key
        published = client.post(f"/v1/journeys/{journey['id']}/publish", headers=tenant.headers)
        assert published.status_code == 200, (key, published.text)
        assert published.json()["version"] == 1
    # a second copy reuses the templates and gets a name of its own
    again = client.post(
        "/v1/journeys/scenarios/abandoned_cart",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id},
    ).json()
    assert again["name"] == "Abandoned cart 2"
    first = client.get("/v1/journeys", headers=tenant.headers).json()[0]
    step = "remind"
    templates = {
        s["template_id"] for j in (first, again) for s in j["draft"]["steps"] if s["key"] == step
    }
    assert len(templates) == 1
    with runtime.db.scope(readonly=True) as session:
        churning = [
            s
            for s in segments.list_segments(session, workspace_id=tenant.workspace_id)
            if s.name == "Churning customers"
        ]
    assert len(churning) == 1
    call = next(
        j
        for j in client.get("/v1/journeys", headers=tenant.headers).json()
        if j["scenario"] == "signup_confirmation_call"
    )
    condition = call["draft"]["steps"][2]["branches"][0]["condition"]
    assert condition["journey_id"] == str(call["id"])
    unknown = client.post(
        "/v1/journeys/scenarios/teleport", headers=tenant.headers, json={"brand_id": 1}
    )
    assert unknown.status_code == 404


def test_the_abandoned_cart_runs_end_to_end_with_the_carts_items(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    smtp: tuple[SmtpSink, int],
    frozen: None,
) -> None:
    sink, _port = smtp
    tenant = brand.tenant
    forgets, orders = make_customer(), make_customer()
    with runtime.db.scope() as session:
        customer = session.get(Customer, forgets)
        assert customer is not None
        customer.first_name = "Anna"
    journey_id = client.post(
        "/v1/journeys/scenarios/abandoned_cart",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id},
    ).json()["id"]
    client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers)
    cart = [
        {"product_id": "P1", "name": "Garden rake", "price": 990, "quantity": 1},
        {"product_id": "P2", "name": "Watering can", "price": 1490, "quantity": 2},
    ]
    track(
        client,
        tenant,
        email_of(runtime, forgets),
        "Checkout Started",
        cart_id="K1",
        value=3970,
        products=cart,
    )
    track(
        client,
        tenant,
        email_of(runtime, orders),
        "Checkout Started",
        cart_id="K2",
        value=990,
        products=cart[:1],
    )
    run_jobs(worker)
    clock.advance(timedelta(minutes=10))
    track(client, tenant, email_of(runtime, orders), "Order Completed", cart_id="K2", total=990)
    run_jobs(worker)
    later(worker, timedelta(minutes=50))
    run_jobs(worker)

    [mail] = sink.parsed()
    assert mail["To"] == email_of(runtime, forgets)
    assert mail["Subject"] == "Anna, your cart is waiting"
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    plain = text.get_content()
    assert "Garden rake × 1 — 990" in " ".join(plain.split())
    assert "Watering can × 2 — 1490" in " ".join(plain.split())
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    assert "Garden rake" in html.get_content()
    found = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (found[orders].status, found[orders].exit_reason) == ("exited", "goal")
    assert found[orders].converted_at is not None
    assert history(runtime, found[forgets].id) == [
        ("wait_for_order", "timeout"),
        ("remind", "scheduled"),
    ]
    assert found[forgets].step_key == "wait_a_day"
    [delivery] = deliveries(runtime)
    assert (delivery.customer_id, delivery.status, delivery.source) == (
        forgets,
        "sent",
        f"journey:{journey_id}:v1:step:remind",
    )
    # ordering the cart a day later still counts, and stops the second reminder
    clock.advance(timedelta(hours=20))
    track(client, tenant, email_of(runtime, forgets), "Order Completed", cart_id="K1", total=3970)
    run_jobs(worker)
    later(worker, timedelta(hours=5))
    [instance] = [i for i in instances(runtime, journey_id) if i.customer_id == forgets]
    assert (instance.status, instance.exit_reason) == ("exited", "goal")
    assert len(deliveries(runtime)) == 1
    assert len(sink.messages) == 1
