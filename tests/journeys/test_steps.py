"""Every step: waits (a duration, a time of day or date in the customer's time zone, an event
with a matching key or a time-out), a branch on a segment condition (retried while the
warehouse fails), an A/B/n split with a holdout, a send (suppressions recorded), an attribute
update, a call task, a signed webhook with retries, and an exit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.config import Settings, WarehouseSettings
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime, build_runtime
from tactful.customers.models import Customer
from tactful.journeys import service
from tactful.journeys.service.steps import bucket
from tactful.messaging.models import CallTask
from tactful.metrics import service as metrics
from tactful.tenancy.models import Workspace
from tests.journeys.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    add_provider,
    deliveries,
    email_of,
    enter,
    history,
    instances,
    later,
    publish,
    run_jobs,
    send,
    tick,
    track,
)


def _customer(runtime: Runtime, customer_id: int, **values: Any) -> None:
    with runtime.db.scope() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        for name, value in values.items():
            setattr(customer, name, value)


def test_waits_for_a_duration_and_until_a_local_time_or_date(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    far_east = make_customer(timezone="Asia/Vladivostok")
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "api"},
            "steps": [
                {"key": "pause", "type": "wait", "duration": "PT30M", "next": "wednesday"},
                {
                    "key": "wednesday",
                    "type": "wait_until",
                    "time": "10:00",
                    "weekdays": [3],
                    "next": "past",
                },
                {"key": "past", "type": "wait_until", "date": "2020-01-01", "next": "hello"},
                send("hello", brand),
            ],
        },
    )
    enter(client, tenant, journey_id, far_east)  # Monday 1 June, 16:00 in Vladivostok
    [instance] = instances(runtime, journey_id)
    assert (instance.status, instance.step_key, instance.next_at) == (
        "waiting",
        "pause",
        AT + timedelta(minutes=30),
    )
    later(worker, timedelta(minutes=29))
    assert instances(runtime, journey_id)[0].step_key == "pause"
    later(worker, timedelta(minutes=1))
    [instance] = instances(runtime, journey_id)
    # Wednesday 3 June, 10:00 in Vladivostok (UTC+10)
    assert (instance.step_key, instance.next_at) == (
        "wednesday",
        datetime(2026, 6, 3, 0, 0, tzinfo=UTC),
    )
    clock.advance(datetime(2026, 6, 3, 0, 0, tzinfo=UTC) - clock.now())
    tick(worker)
    [instance] = instances(runtime, journey_id)
    assert instance.status == "completed"
    assert history(runtime, instance.id) == [
        ("pause", "waited"),
        ("wednesday", "waited"),
        ("past", "passed"),
        ("hello", "scheduled"),
    ]
    assert [d.customer_id for d in deliveries(runtime)] == [far_east]


def test_waiting_for_the_same_carts_order_or_a_time_out(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    orders, other_cart, nothing = make_customer(), make_customer(), make_customer()
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "event", "event": "Checkout Started"},
            "steps": [
                {
                    "key": "wait_order",
                    "type": "wait_for_event",
                    "event": {"event": "Order Completed", "same_as_trigger": ["cart_id"]},
                    "timeout": "PT1H",
                    "on_event": "ordered",
                    "on_timeout": "remind",
                },
                {"key": "ordered", "type": "exit", "reason": "ordered"},
                send("remind", brand),
            ],
        },
    )
    for n, customer in enumerate((orders, other_cart, nothing)):
        track(client, tenant, email_of(runtime, customer), "Checkout Started", cart_id=f"K{n}")
    run_jobs(worker)
    assert {i.status for i in instances(runtime, journey_id)} == {"waiting"}
    clock.advance(timedelta(minutes=20))
    track(client, tenant, email_of(runtime, orders), "Order Completed", cart_id="K0")
    track(client, tenant, email_of(runtime, other_cart), "Order Completed", cart_id="K9")
    run_jobs(worker)
    later(worker, timedelta(minutes=40))
    by_customer = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (by_customer[orders].status, by_customer[orders].exit_reason) == ("exited", "ordered")
    assert history(runtime, by_customer[orders].id) == [
        ("wait_order", "event"),
        ("ordered", "exit:ordered"),
    ]
    for customer in (other_cart, nothing):
        assert history(runtime, by_customer[customer].id) == [
            ("wait_order", "timeout"),
            ("remind", "scheduled"),
        ]
    assert sorted(d.customer_id for d in deliveries(runtime)) == sorted([other_cart, nothing])


def test_a_branch_on_a_segment_condition_retries_while_the_warehouse_fails(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    tmp_path: Path,
    frozen: None,
) -> None:
    tenant = brand.tenant
    kazan, moscow = make_customer(), make_customer()
    _customer(runtime, kazan, city="Kazan")
    _customer(runtime, moscow, city="Moscow")
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "api"},
            "steps": [
                {"key": "pause", "type": "wait", "duration": "PT1H", "next": "city"},
                {
                    "key": "city",
                    "type": "branch",
                    "branches": [
                        {
                            "label": "kazan",
                            "condition": {
                                "type": "attribute",
                                "attribute": "city",
                                "operator": "eq",
                                "value": "Kazan",
                            },
                            "next": "by_sms",
                        }
                    ],
                    "otherwise": "by_email",
                },
                send("by_sms", brand, channels=["sms"]),
                send("by_email", brand),
            ],
        },
    )
    enter(client, tenant, journey_id, kazan, moscow)
    # a worker whose warehouse cannot open: the branch waits and tries again
    (tmp_path / "blocked").write_text("a file where the warehouse folder should be")
    broken = build_runtime(
        Settings(
            data_dir=runtime.settings.data_dir,
            database=runtime.settings.database,
            warehouse=WarehouseSettings(url=f"duckdb://{tmp_path}/blocked/warehouse.duckdb"),
        )
    )
    try:
        later(Worker(broken, worker_id="broken"), timedelta(hours=1))
    finally:
        broken.close()
    for instance in instances(runtime, journey_id):
        assert (instance.status, instance.step_key, instance.failures) == ("waiting", "city", 1)
        assert instance.next_at == clock.now() + timedelta(minutes=2)
        assert "branch 'city'" in (instance.last_error or "")
        assert history(runtime, instance.id) == [("pause", "waited")]
    assert deliveries(runtime) == []
    metrics.sync_profiles(runtime, workspace_id=tenant.workspace_id)
    later(worker, timedelta(minutes=2))
    by_customer = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert history(runtime, by_customer[kazan].id)[1:] == [
        ("city", "branch:kazan"),
        ("by_sms", "scheduled"),
    ]
    assert history(runtime, by_customer[moscow].id)[1:] == [
        ("city", "otherwise"),
        ("by_email", "scheduled"),
    ]
    assert sorted((d.customer_id, d.channel) for d in deliveries(runtime)) == sorted(
        [(kazan, "sms"), (moscow, "email")]
    )


def test_a_split_is_deterministic_and_records_variants_and_the_holdout(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    frozen: None,
) -> None:
    tenant = brand.tenant
    with runtime.db.scope() as session:
        people = [make_customer(session=session) for _ in range(30)]
    split = {
        "key": "ab",
        "type": "split",
        "variants": [
            {"key": "a", "weight": 40, "next": "send_a"},
            {"key": "b", "weight": 40, "next": "send_b"},
        ],
        "holdout": 20,
    }
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "api"},
            "steps": [split, send("send_a", brand), send("send_b", brand, channels=["sms"])],
        },
    )
    enter(client, tenant, journey_id, *people)
    expected = {}
    for customer in people:
        position = bucket(journey_id, "ab", customer)
        expected[customer] = "holdout" if position < 20 else ("a" if position < 60 else "b")
    found = {i.customer_id: i for i in instances(runtime, journey_id)}
    for customer, variant in expected.items():
        instance = found[customer]
        assert instance.context["variants"] == {"ab": variant}
        if variant == "holdout":
            assert (instance.status, instance.exit_reason) == ("exited", "holdout")
        else:
            assert history(runtime, instance.id)[0] == ("ab", f"variant:{variant}")
    channels = {d.customer_id: d.channel for d in deliveries(runtime)}
    assert channels == {
        c: ("email" if v == "a" else "sms") for c, v in expected.items() if v != "holdout"
    }
    with runtime.db.scope(readonly=True) as session:
        stats = service.journey_stats(
            session, workspace_id=tenant.workspace_id, journey_id=journey_id
        )
    ab = next(s for s in stats.steps if s.key == "ab")
    assert ab.variants == {
        v: sum(1 for x in expected.values() if x == v) for v in set(expected.values())
    }
    assert stats.exited == {"holdout": ab.variants.get("holdout", 0)}


def test_a_send_without_consent_is_a_recorded_suppression(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    frozen: None,
) -> None:
    tenant = brand.tenant
    willing, unwilling = make_customer(), make_customer(consent=False)
    journey_id = publish(runtime, brand, {"trigger": {"type": "api"}, "steps": [send("s", brand)]})
    enter(client, tenant, journey_id, willing, unwilling)
    by_customer = {d.customer_id: d for d in deliveries(runtime)}
    assert by_customer[willing].status == "queued"
    assert (by_customer[unwilling].status, by_customer[unwilling].reason) == (
        "suppressed",
        "no_advertising_consent",
    )
    instance = next(i for i in instances(runtime, journey_id) if i.customer_id == unwilling)
    assert history(runtime, instance.id) == [("s", "suppressed")]
    with runtime.db.scope(readonly=True) as session:
        stats = service.journey_stats(
            session, workspace_id=tenant.workspace_id, journey_id=journey_id
        )
    assert stats.messages == {"queued": 1, "suppressed": 1}
    assert stats.steps[0].messages == {"queued": 1, "suppressed": 1}


def test_attribute_update_call_task_webhook_and_exit(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
    frozen: None,
) -> None:
    tenant = brand.tenant
    add_provider(runtime, brand, "call", "call", {})
    customer = make_customer()
    _customer(runtime, customer, first_name="Anna")
    answers = iter([(500, {"error": "busy"}), (200, {"ok": True})])
    http_peer.respond = lambda _request: next(answers)
    journey_id = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "event", "event": "Checkout Started"},
            "steps": [
                {
                    "key": "remember",
                    "type": "update_attribute",
                    "attribute": "last_cart",
                    "value_from": "cart_id",
                    "next": "flag",
                },
                {
                    "key": "flag",
                    "type": "update_attribute",
                    "attribute": "cart_reminded",
                    "value": True,
                    "next": "call",
                },
                {
                    "key": "call",
                    "type": "call_task",
                    "template_id": brand.template_id,
                    "next": "notify",
                },
                {
                    "key": "notify",
                    "type": "webhook",
                    "url": f"{http_peer.url}/hooks/cart",
                    "data": {"team": "crm"},
                    "next": "stop",
                },
                {"key": "stop", "type": "exit", "reason": "done"},
            ],
        },
    )
    track(client, tenant, email_of(runtime, customer), "Checkout Started", cart_id="K5")
    ran = run_jobs(worker)
    assert "journeys.webhook" in ran
    [instance] = instances(runtime, journey_id)
    assert (instance.status, instance.exit_reason) == ("exited", "done")
    assert history(runtime, instance.id) == [
        ("remember", "updated"),
        ("flag", "updated"),
        ("call", "scheduled"),
        ("notify", "queued"),
        ("stop", "exit:done"),
    ]
    with runtime.db.scope(readonly=True) as session:
        row = session.get(Customer, customer)
        assert row is not None
        assert (row.attributes["last_cart"], row.attributes["cart_reminded"]) == ("K5", True)
        [task] = session.scalars(select(CallTask))
    assert (task.customer_id, task.script) == (customer, "Call Anna about the cart")
    # the receiver failed once: the job retries with backoff and the same key and signature
    assert len(http_peer.requests) == 1
    clock.advance(timedelta(seconds=5))
    run_jobs(worker)
    first, second = http_peer.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    expected = "sha256=" + runtime.signer.hmac_hex(second.body, purpose="journeys.webhook")
    assert second.headers["x-tactful-signature"] == expected
    body = json.loads(second.body)
    assert (body["customer_id"], body["step"], body["data"]) == (
        customer,
        "notify",
        {"team": "crm"},
    )
    assert body["event"]["properties"]["cart_id"] == "K5"
    assert second.path == "/hooks/cart"
    # nothing more is sent once the receiver answered
    clock.advance(timedelta(minutes=10))
    run_jobs(worker)
    assert len(http_peer.requests) == 2


def test_a_customer_whose_workspace_has_no_such_customer_cannot_enter(
    runtime: Runtime, brand: Brand, client: TestClient, frozen: None
) -> None:
    tenant = brand.tenant
    with runtime.db.scope() as session:
        other = Workspace(
            slug="other", name="Other", phone_region="RU", timezone="UTC", created_at=clock.now()
        )
        session.add(other)
        session.flush()
        stranger = Customer(workspace_id=other.id, created_at=AT, updated_at=AT)
        session.add(stranger)
        session.flush()
        stranger_id = stranger.id
    journey_id = publish(runtime, brand, {"trigger": {"type": "api"}, "steps": [send("s", brand)]})
    result = enter(client, tenant, journey_id, stranger_id)
    assert result["results"] == [
        {
            "customer_id": stranger_id,
            "entered": False,
            "reason": "unknown_customer",
            "instance_id": None,
        }
    ]
    assert instances(runtime) == []
