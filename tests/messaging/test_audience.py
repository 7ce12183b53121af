"""The bulk path for campaigns: one message to a whole audience, decided by the policy's
vectorised gate, one planned delivery per scheduled decision, a few release jobs per send
time, the same answers as ``send`` one request at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.messaging.conftest import (
    AT,
    Brand,
    MakeCustomer,
    SmtpSink,
    add_provider,
    deliveries,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.errors import ValidationFailed
from tactful.core.jobs.models import Job
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
from tactful.messaging.models import Delivery
from tactful.messaging.schemas import AudienceOutcome
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.schemas import ChannelStep


def _counts(runtime: Runtime) -> tuple[int, int, int, int]:
    with runtime.db.scope(readonly=True) as session:
        return (
            int(session.scalar(select(func.count()).select_from(Delivery)) or 0),
            int(session.scalar(select(func.count()).select_from(ContactDecision)) or 0),
            int(session.scalar(select(func.count()).select_from(DecisionBatch)) or 0),
            int(session.scalar(select(func.count()).select_from(Job)) or 0),
        )


def test_an_audience_gets_planned_deliveries_released_and_sent(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
) -> None:
    sink, _port = smtp
    with runtime.db.scope() as session:
        reachable = [make_customer(session=session) for _ in range(5)]
        refused = [make_customer(session=session, consent=False) for _ in range(2)]
        night = [make_customer(session=session, timezone="America/New_York") for _ in range(2)]
    before = _counts(runtime)
    audience = [*reachable, *refused, *night, 999_999]
    with clock.frozen(AT), runtime.db.scope() as session:
        outcome = service.send_audience(session, request=request(brand, 0), customer_ids=audience)
    assert outcome.scheduled == 7
    assert outcome.suppressed == 3
    assert outcome.bundled == 0
    assert outcome.deliveries == 7
    assert outcome.estimated_cost == 70  # the brand's e-mail price, 10 each
    assert outcome.by_reason == {
        "deferred_quiet_hours": 2,
        "no_advertising_consent": 2,
        "no_contact": 1,
        "ok": 5,
    }
    rows = deliveries(runtime)
    assert len(rows) == 7
    assert {r.customer_id for r in rows} == {*reachable, *night}
    with runtime.db.scope(readonly=True) as session:
        batch = session.get(DecisionBatch, outcome.decision_batch_id)
        assert batch is not None
        assert (batch.source, batch.intents) == ("campaign:7", 10)
        decisions = {
            d.id: d
            for d in session.scalars(
                select(ContactDecision).where(ContactDecision.batch_id == batch.id)
            )
        }
        releases = list(session.scalars(select(Job).where(Job.name == service.RELEASE_JOB)))
    assert len(decisions) == 10
    nine_ny = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)  # 09:00 in New York
    for row in rows:
        decision = decisions[row.decision_id]
        assert decision.customer_id == row.customer_id
        assert (row.status, row.channel, row.cost, row.step, row.attempts) == (
            "planned",
            "email",
            10,
            0,
            0,
        )
        assert (row.provider_id, row.campaign_id, row.topic, row.source) == (
            brand.provider_id,
            7,
            "promotions",
            "campaign:7",
        )
        assert row.context == {
            "event": {"items": [{"name": "Rake", "price": 990}, {"name": "Hose", "price": 1490}]}
        }
        assert row.steps == [{"channel": "email", "timeout": None, "wait_for": "delivered"}]
        assert row.send_at == (nine_ny if row.customer_id in night else AT)
        assert row.created_at == AT
    # one release job per send time, each at its time, covering its deliveries' ids
    by_time = sorted((job.run_at, job.payload["first"], job.payload["last"]) for job in releases)
    now_ids = sorted(r.id for r in rows if r.customer_id not in night)
    ny_ids = sorted(r.id for r in rows if r.customer_id in night)
    assert by_time == [(AT, now_ids[0], now_ids[-1]), (nine_ny, ny_ids[0], ny_ids[-1])]
    # nothing else was written besides the ledger, the deliveries and the release jobs
    assert _counts(runtime) == (before[0] + 7, before[1] + 10, before[2] + 1, before[3] + 2)

    with clock.frozen(AT):
        run_jobs(worker)
    assert sorted(rcpt[0] for _f, rcpt, _r in sink.messages) == sorted(
        f"p{n}@example.com" for n in range(1, 6)
    )
    with clock.frozen(nine_ny):
        run_jobs(worker)
    assert len(sink.messages) == 7
    assert {r.status for r in deliveries(runtime)} == {"sent"}

    # a suppressed customer has no delivery row: the timeline reads the ledger
    timeline = client.get(
        f"/v1/customers/{refused[0]}/timeline", headers=brand.tenant.headers
    ).json()
    [item] = [i for i in timeline if i["kind"] == "message"]
    assert item["details"]["status"] == "suppressed"
    assert item["details"]["reason"] == "no_advertising_consent"
    assert item["details"]["delivery_id"] is None
    assert item["details"]["template_id"] == brand.template_id
    assert item["details"]["cost"] == 0


def test_bulk_and_one_by_one_give_the_same_answers(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer
) -> None:
    with runtime.db.scope() as session:
        audience = [
            make_customer(session=session),
            make_customer(session=session, consent=False),
            make_customer(session=session, channels=("sms",)),
            make_customer(session=session, timezone="Asia/Vladivostok"),
            make_customer(session=session, timezone="America/New_York"),
            make_customer(session=session, channels=()),
        ]
    add_provider(runtime, brand, "sms_generic", "sms", {"endpoint": "http://127.0.0.1:9"})
    steps = (ChannelStep("email", timeout=timedelta(hours=2)), ChannelStep("sms"))

    def answers(bulk: bool) -> list[tuple[object, ...]]:
        session = runtime.db.session()
        try:
            with clock.frozen(AT):
                if bulk:
                    service.send_audience(
                        session, request=request(brand, 0, steps=steps), customer_ids=audience
                    )
                else:
                    service.send(session, [request(brand, c, steps=steps) for c in audience])
            session.flush()
            found: list[tuple[object, ...]] = []
            for cid in audience:
                decision = session.scalar(
                    select(ContactDecision).where(ContactDecision.customer_id == cid)
                )
                assert decision is not None
                delivery = session.scalar(
                    select(Delivery).where(
                        Delivery.customer_id == cid, Delivery.status != "suppressed"
                    )
                )
                found.append(
                    (
                        decision.status,
                        decision.reason,
                        decision.channel,
                        decision.send_at,
                        None if delivery is None else delivery.channel,
                        None if delivery is None else delivery.cost,
                        None if delivery is None else delivery.send_at,
                        None if delivery is None else delivery.wait_for,
                    )
                )
            return found
        finally:
            session.rollback()
            session.close()

    one_by_one = answers(bulk=False)
    assert answers(bulk=True) == one_by_one
    assert [a[:3] for a in one_by_one] == [
        ("scheduled", "ok", "email"),
        ("suppressed", "no_advertising_consent", None),
        ("scheduled", "ok", "sms"),
        ("scheduled", "ok", "email"),
        ("scheduled", "deferred_quiet_hours", "email"),
        ("suppressed", "no_advertising_consent", None),
    ]


def test_refused_audiences_change_nothing(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer
) -> None:
    cid = make_customer()
    before = _counts(runtime)
    cases = [
        ([cid, cid], request(brand, 0), "customer_ids"),
        ([cid], request(brand, 0, steps=(ChannelStep("sms"),)), "request.steps[0].channel"),
        ([cid], request(brand, 0, steps=(ChannelStep("fax"),)), "request.steps[0].channel"),
        ([cid], request(brand, 0, template_id=brand.layout_id), "request.template_id"),
        ([cid], request(brand, 0, bundle_key="cart"), "message"),
    ]
    for audience, req, field in cases:
        with (
            pytest.raises(ValidationFailed) as raised,
            clock.frozen(AT),
            runtime.db.scope() as session,
        ):
            service.send_audience(session, request=req, customer_ids=audience)
        assert raised.value.field == field, (field, raised.value)
    assert _counts(runtime) == before


def test_an_empty_audience_writes_nothing(runtime: Runtime, brand: Brand) -> None:
    before = _counts(runtime)
    with clock.frozen(AT), runtime.db.scope() as session:
        outcome = service.send_audience(session, request=request(brand, 0), customer_ids=[])
    assert outcome == AudienceOutcome(None, 0, 0, 0, {}, 0, 0)
    assert _counts(runtime) == before


def test_release_waits_for_the_send_time_and_queues_each_delivery_once(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, worker: Worker
) -> None:
    with runtime.db.scope() as session:
        ids = [make_customer(session=session) for _ in range(3)]
    later = AT + timedelta(hours=2)
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send_audience(
            session, request=replace(request(brand, 0), not_before=later), customer_ids=ids
        )
    with clock.frozen(AT + timedelta(hours=1)), runtime.db.scope() as session:
        assert service.queue_due(session) == 0
    assert {r.status for r in deliveries(runtime)} == {"planned"}
    with clock.frozen(later), runtime.db.scope() as session:
        [job] = session.scalars(select(Job).where(Job.name == service.RELEASE_JOB))
        payload = job.payload
        assert (
            service.release(session, id_range=(payload["first"], payload["last"]), limit=100) == 1
        )
        # the monitor finds nothing left to queue, and a second release neither
        assert service.queue_due(session) == 0
        assert (
            service.release(session, id_range=(payload["first"], payload["last"]), limit=100) == 0
        )
    assert {r.status for r in deliveries(runtime)} == {"queued"}
    with runtime.db.scope(readonly=True) as session:
        [dispatch] = session.scalars(select(Job).where(Job.name == service.DISPATCH_JOB))
    assert sorted(dispatch.payload["ids"]) == sorted(r.id for r in deliveries(runtime))
