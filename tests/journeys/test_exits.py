"""Exit criteria checked at every step (the goal reached, the segment left), conversions after
the end, re-entry rules and entry caps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete

from tactful.core import clock, domain_events
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.journeys import service
from tactful.segments import service as segments
from tactful.segments.models import SegmentMembership
from tests.journeys.conftest import (
    Brand,
    MakeCustomer,
    buy,
    deliveries,
    email_of,
    enter,
    history,
    instances,
    later,
    publish,
    run_jobs,
    send,
)

WAIT_THEN_SEND = [
    {"key": "pause", "type": "wait", "duration": "PT1H", "next": "offer"},
    {"key": "offer", "type": "send", "channels": ["email"], "next": "linger"},
    {"key": "linger", "type": "wait", "duration": "PT1H"},
]


def _graph(brand: Brand, **extra: Any) -> dict[str, Any]:
    steps = [dict(s) for s in WAIT_THEN_SEND]
    steps[1]["template_id"] = brand.template_id
    return {"trigger": {"type": "api"}, "steps": steps, **extra}


def test_the_goal_takes_customers_out_and_converts_them(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    early, late, never, unnoticed, too_late = (make_customer() for _ in range(5))
    journey_id = publish(
        runtime,
        brand,
        _graph(brand, exit={"goal": {"events": [{"event": "$purchase"}], "within": "P3D"}}),
    )
    enter(client, tenant, journey_id, early, late, never, unnoticed, too_late)
    clock.advance(timedelta(minutes=30))
    buy(client, tenant, email_of(runtime, early), "R1", 1000)
    run_jobs(worker)
    # a purchase the journey's event job never saw: the check when the wait ends finds it
    buy(client, tenant, email_of(runtime, unnoticed), "R2", 1000)
    assert "journeys.on_events" not in run_jobs(worker, wanted=("events.resolve",))
    later(worker, timedelta(minutes=30))
    later(worker, timedelta(hours=1))
    buy(client, tenant, email_of(runtime, late), "R3", 1000)
    run_jobs(worker)
    clock.advance(timedelta(days=5))
    buy(client, tenant, email_of(runtime, too_late), "R4", 1000)
    run_jobs(worker)
    found = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (found[early].status, found[early].exit_reason) == ("exited", "goal")
    assert history(runtime, found[early].id) == [("pause", "exit:goal")]
    assert (found[unnoticed].status, found[unnoticed].exit_reason) == ("exited", "goal")
    assert history(runtime, found[unnoticed].id) == [("pause", "exit:goal")]
    for customer in (late, never, too_late):
        assert found[customer].status == "completed"
    assert found[late].converted_at is not None
    assert found[never].converted_at is None
    assert found[too_late].converted_at is None
    assert sorted(d.customer_id for d in deliveries(runtime)) == sorted([late, never, too_late])
    with runtime.db.scope(readonly=True) as session:
        stats = service.journey_stats(
            session, workspace_id=tenant.workspace_id, journey_id=journey_id
        )
    assert (stats.entered, stats.completed, stats.conversions) == (5, 3, 3)
    assert stats.exited == {"goal": 2}
    assert stats.conversion_rate == 0.6
    offer = next(s for s in stats.steps if s.key == "offer")
    assert (offer.completed, offer.outcomes) == (3, {"scheduled": 3})


def test_leaving_the_segment_takes_customers_out(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    told, silent, stays = make_customer(), make_customer(), make_customer()
    with runtime.db.scope() as session:
        segment = segments.create_segment(
            session,
            workspace_id=tenant.workspace_id,
            name="Gardeners",
            definition={
                "type": "attribute",
                "attribute": "city",
                "operator": "eq",
                "value": "Tver",
            },
            actor="test",
        ).id
        session.add_all(
            SegmentMembership(segment_id=segment, customer_id=c, entered_at=clock.now())
            for c in (told, silent, stays)
        )
    journey_id = publish(runtime, brand, _graph(brand, exit={"left_segment": segment}))
    enter(client, tenant, journey_id, told, silent, stays)
    with runtime.db.scope() as session:
        session.execute(
            delete(SegmentMembership).where(SegmentMembership.customer_id.in_([told, silent]))
        )
        # the refresh announces one exit; the other is only seen when the next step runs
        domain_events.publish(
            session,
            "segments.membership_changed",
            {
                "workspace_id": tenant.workspace_id,
                "segment_id": segment,
                "refresh": 2,
                "entered": [],
                "exited": [told],
            },
            key=f"{segment}:2:0",
        )
    run_jobs(worker)
    found = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (found[told].status, found[told].exit_reason) == ("exited", "left_segment")
    assert found[silent].status == "waiting"
    later(worker, timedelta(hours=1))
    found = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (found[silent].status, found[silent].exit_reason) == ("exited", "left_segment")
    assert history(runtime, found[silent].id) == [("pause", "exit:left_segment")]
    assert [d.customer_id for d in deliveries(runtime)] == [stays]


def _single_send(brand: Brand, **extra: Any) -> dict[str, Any]:
    return {"trigger": {"type": "api"}, "steps": [send("hello", brand)], **extra}


def _reasons(result: dict[str, Any]) -> list[str]:
    return [r["reason"] for r in result["results"]]


def test_reentry_rules(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    customer = make_customer()
    never = publish(runtime, brand, _single_send(brand), name="never")
    after = publish(
        runtime, brand, _single_send(brand, reentry={"mode": "after", "days": 7}), name="after"
    )
    always = publish(
        runtime,
        brand,
        {
            "trigger": {"type": "api"},
            "steps": [{"key": "pause", "type": "wait", "duration": "PT1H"}],
            "reentry": {"mode": "always"},
        },
        name="always",
    )
    for journey_id in (never, after, always):
        assert _reasons(enter(client, tenant, journey_id, customer)) == ["entered"]
    assert _reasons(enter(client, tenant, never, customer)) == ["reentry_never"]
    assert _reasons(enter(client, tenant, after, customer)) == ["reentry_too_soon"]
    # a customer is never inside one journey twice at once
    assert _reasons(enter(client, tenant, always, customer)) == ["inside"]
    later(worker, timedelta(days=7))
    assert _reasons(enter(client, tenant, never, customer)) == ["reentry_never"]
    assert _reasons(enter(client, tenant, after, customer)) == ["entered"]
    assert _reasons(enter(client, tenant, always, customer)) == ["entered"]
    counts = {j: len(instances(runtime, j)) for j in (never, after, always)}
    assert counts == {never: 1, after: 2, always: 2}
    assert [i.entry_no for i in instances(runtime, after)] == [1, 2]


def test_entry_caps(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    frozen: None,
) -> None:
    tenant = brand.tenant
    people = [make_customer() for _ in range(5)]
    total = publish(runtime, brand, _single_send(brand, caps={"total": 2}), name="total")
    daily = publish(runtime, brand, _single_send(brand, caps={"per_day": 2}), name="daily")
    assert _reasons(enter(client, tenant, total, *people[:3])) == [
        "entered",
        "entered",
        "cap_total",
    ]
    assert _reasons(enter(client, tenant, total, people[3])) == ["cap_total"]
    assert _reasons(enter(client, tenant, daily, *people[:3])) == ["entered", "entered", "cap_day"]
    clock.advance(timedelta(days=1))
    assert _reasons(enter(client, tenant, daily, *people[2:])) == ["entered", "entered", "cap_day"]
    assert len(instances(runtime, total)) == 2
    assert len(instances(runtime, daily)) == 4
    assert len(deliveries(runtime)) == 6
