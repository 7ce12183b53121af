"""Every trigger: an event with property filters (over HTTP, through the resolver), a segment
entry and exit, a date attribute in the customer's time zone, a loyalty tier change and an API
call; historical imports never trigger."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi.testclient import TestClient

from tactful.core import clock, domain_events
from tactful.core.jobs.context import MonitorContext
from tactful.core.jobs.registry import MONITORS
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.events import service as events
from tactful.journeys.models import JourneyInstance
from tactful.tenancy.models import Workspace
from tests.journeys.conftest import (
    Brand,
    MakeCustomer,
    count,
    deliveries,
    email_of,
    enter,
    history,
    instances,
    publish,
    run_jobs,
    send,
    track,
)


def test_an_event_with_matching_properties_lets_the_customer_in_with_the_cart(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    anna, boris = make_customer(), make_customer()
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {
                "type": "event",
                "event": "Checkout Started",
                "where": [{"property": "value", "operator": "gte", "value": 1000}],
            },
            "steps": [send("remind", brand)],
        },
    )
    products = [{"product_id": "P7", "name": "Rake", "price": 990, "quantity": 2}]
    track(
        client,
        tenant,
        email_of(runtime, anna),
        "Checkout Started",
        cart_id="K1",
        value=1980,
        products=products,
    )
    track(client, tenant, email_of(runtime, boris), "Checkout Started", cart_id="K2", value=500)
    track(client, tenant, email_of(runtime, boris), "Product Viewed", value=5000)
    ran = run_jobs(worker)
    assert "journeys.on_events" in ran
    [instance] = instances(runtime, journey_id)
    assert (instance.customer_id, instance.status) == (anna, "completed")
    event = instance.context["event"]
    assert (event["name"], event["properties"]["cart_id"], event["items"]) == (
        "Checkout Started",
        "K1",
        products,
    )
    [delivery] = deliveries(runtime)
    assert (delivery.customer_id, delivery.status) == (anna, "sent")
    assert delivery.context["event"]["items"][0]["name"] == "Rake"
    assert delivery.context["journey"]["step"] == "remind"


def test_historical_imports_never_trigger(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, worker: Worker, frozen: None
) -> None:
    tenant = brand.tenant
    anna = make_customer()
    publish(
        runtime,
        brand,
        {"trigger": {"type": "event", "event": "Checkout Started"}, "steps": [send("s", brand)]},
    )
    with runtime.db.scope() as session:
        workspace = session.get(Workspace, tenant.workspace_id)
        assert workspace is not None
        result = events.ingest_segment(
            session,
            events.IngestContext(workspace=workspace, source="import:test", historical=True),
            [
                {
                    "type": "track",
                    "event": "Checkout Started",
                    "properties": {"cart_id": "K1"},
                    "userId": email_of(runtime, anna).split("@")[0],
                    "timestamp": clock.now().isoformat(),
                }
            ],
        )
        assert result.accepted == 1
    ran = run_jobs(worker)
    assert "events.resolve" in ran
    assert "journeys.on_events" not in ran
    assert count(runtime, JourneyInstance) == 0
    assert deliveries(runtime) == []


def _membership(
    runtime: Runtime,
    tenant: Any,
    segment_id: int,
    refresh: int,
    entered: list[int],
    exited: list[int],
) -> None:
    with runtime.db.scope() as session:
        domain_events.publish(
            session,
            "segments.membership_changed",
            {
                "workspace_id": tenant.workspace_id,
                "segment_id": segment_id,
                "refresh": refresh,
                "entered": entered,
                "exited": exited,
                "at": clock.now().isoformat(),
            },
            key=f"{segment_id}:{refresh}:0",
        )


def _segment(runtime: Runtime, tenant: Any, name: str) -> int:
    from tactful.segments import service as segments

    with runtime.db.scope() as session:
        return segments.create_segment(
            session,
            workspace_id=tenant.workspace_id,
            name=name,
            definition={"type": "attribute", "attribute": "city", "operator": "eq", "value": name},
            actor="test",
        ).id


def test_segment_entry_and_exit_trigger_journeys(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, worker: Worker, frozen: None
) -> None:
    tenant = brand.tenant
    a, b, c = make_customer(), make_customer(), make_customer()
    vip = _segment(runtime, tenant, "Kazan")
    on_enter = publish(
        runtime,
        brand,
        {"trigger": {"type": "segment", "segment_id": vip}, "steps": [send("welcome", brand)]},
        name="enter",
    )
    on_exit = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "segment", "segment_id": vip, "on": "exit"},
            "steps": [send("goodbye", brand, channels=["sms"])],
        },
        name="exit",
    )
    _membership(runtime, tenant, vip, 1, [a, b], [])
    run_jobs(worker)
    _membership(runtime, tenant, vip, 2, [c], [b])
    run_jobs(worker)
    entered = sorted((i.journey_id, i.customer_id, i.entry_key) for i in instances(runtime))
    assert entered == [
        (on_enter, a, f"segment:{vip}:1:enter"),
        (on_enter, b, f"segment:{vip}:1:enter"),
        (on_enter, c, f"segment:{vip}:2:enter"),
        (on_exit, b, f"segment:{vip}:2:exit"),
    ]
    sent = sorted((d.customer_id, d.channel) for d in deliveries(runtime))
    assert sent == [(a, "email"), (b, "email"), (b, "sms"), (c, "email")]
    # the same refresh announced again lets nobody in twice
    with runtime.db.scope() as session:
        domain_events.publish(
            session,
            "segments.membership_changed",
            {
                "workspace_id": tenant.workspace_id,
                "segment_id": vip,
                "refresh": 1,
                "entered": [a, b],
                "exited": [],
            },
            key="again",
        )
    run_jobs(worker)
    assert len(instances(runtime)) == 4
    assert len(deliveries(runtime)) == 4


def _birthday(runtime: Runtime, customer_id: int, day: date, timezone: str) -> None:
    with runtime.db.scope() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        customer.birthday, customer.timezone = day, timezone


def _dates(worker: Worker) -> list[str]:
    with worker.runtime.db.scope() as session:
        MONITORS["journeys.dates"].fn(MonitorContext(worker.runtime, session, clock.now()))
    return run_jobs(worker)


def test_a_date_attribute_n_days_before_in_the_customers_time_zone(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, worker: Worker
) -> None:
    moscow, vladivostok, other, leap = (make_customer() for _ in range(4))
    _birthday(runtime, moscow, date(1990, 6, 3), "Europe/Moscow")
    _birthday(runtime, vladivostok, date(1985, 6, 3), "Asia/Vladivostok")
    _birthday(runtime, other, date(1985, 6, 4), "Asia/Vladivostok")
    _birthday(runtime, leap, date(1992, 2, 29), "Europe/Moscow")
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "date", "attribute": "birthday", "days_before": 2, "at": "10:00"},
            "steps": [send("gift", brand)],
            "reentry": {"mode": "always"},
        },
    )
    # 00:30 UTC on 1 June: 10:30 in Vladivostok (UTC+10), 03:30 in Moscow (UTC+3)
    with clock.frozen(datetime(2026, 6, 1, 0, 30, tzinfo=UTC)):
        assert "journeys.scan_dates" in _dates(worker)
        assert [i.customer_id for i in instances(runtime, journey_id)] == [vladivostok]
    with clock.frozen(datetime(2026, 6, 1, 7, 5, tzinfo=UTC)):  # 10:05 in Moscow
        _dates(worker)
        _dates(worker)  # a second scan lets nobody in twice
    found = sorted((i.customer_id, i.entry_key) for i in instances(runtime, journey_id))
    assert found == sorted(
        [(vladivostok, "date:birthday:2026-06-03"), (moscow, "date:birthday:2026-06-03")]
    )
    assert sorted(d.customer_id for d in deliveries(runtime)) == sorted([moscow, vladivostok])
    # 29 February is celebrated on the 28th in a year without one (2027: 26 Feb is 2 before)
    with clock.frozen(datetime(2027, 2, 26, 7, 5, tzinfo=UTC)):
        _dates(worker)
    assert [i.entry_key for i in instances(runtime, journey_id) if i.customer_id == leap] == [
        "date:birthday:2027-02-28"
    ]
    # next year, the same customers enter again (one entry per date)
    with clock.frozen(datetime(2027, 6, 1, 7, 5, tzinfo=UTC)):
        _dates(worker)
    assert len([i for i in instances(runtime, journey_id) if i.customer_id == moscow]) == 2


def _tier(
    runtime: Runtime, tenant: Any, customer_id: int, tier: str, previous: str, direction: str
) -> None:
    at = clock.now().isoformat()
    with runtime.db.scope() as session:
        domain_events.publish(
            session,
            "loyalty.tier_changed",
            {
                "workspace_id": tenant.workspace_id,
                "customer_id": customer_id,
                "at": at,
                "program_id": 1,
                "account_id": customer_id,
                "tier": tier,
                "tier_name": tier.title(),
                "previous_tier": previous,
                "direction": direction,
                "reason": "upgrade",
                "rolling_spend": 100_000,
            },
            key=f"tier:{customer_id}:{previous}>{tier}:{at}",
        )


def test_a_loyalty_tier_change(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, worker: Worker, frozen: None
) -> None:
    tenant = brand.tenant
    a, b = make_customer(), make_customer()
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "tier_changed", "to": ["gold"], "direction": "up"},
            "steps": [send("congrats", brand)],
        },
    )
    _tier(runtime, tenant, a, "gold", "silver", "up")
    _tier(runtime, tenant, b, "silver", "base", "up")
    run_jobs(worker)
    [instance] = instances(runtime, journey_id)
    assert instance.customer_id == a
    assert instance.context["event"]["properties"]["tier"] == "gold"
    assert history(runtime, instance.id) == [("congrats", "scheduled")]


def test_api_entries_are_idempotent_and_keep_the_valid_ones(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    a, b = make_customer(), make_customer()
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "api"},
            "steps": [send("hello", brand)],
            "reentry": {"mode": "always"},
        },
    )
    first = enter(
        client, tenant, journey_id, a, b, 999_999, key="order-77", data={"order_id": "77"}
    )
    assert (first["entered"], first["refused"]) == (2, 1)
    assert [(r["customer_id"], r["reason"]) for r in first["results"]] == [
        (a, "entered"),
        (b, "entered"),
        (999_999, "unknown_customer"),
    ]
    again = enter(client, tenant, journey_id, a, key="order-77")
    assert again["results"][0]["reason"] == "duplicate"
    assert len(instances(runtime, journey_id)) == 2
    [delivery, _] = deliveries(runtime)
    assert delivery.context["order_id"] == "77"
    bad = client.post(
        f"/v1/journeys/{journey_id}/entries", headers=tenant.headers, json={"entries": []}
    )
    assert bad.status_code == 422
    missing = client.post(
        "/v1/journeys/424242/entries",
        headers=tenant.headers,
        json={"entries": [{"customer_id": a}]},
    )
    assert missing.status_code == 404
    assert len(instances(runtime)) == 2
