"""Dispatch also works when the calling thread already runs an event loop (a job run from
async code, or a test after a browser library left its loop running), and reports where
its time went."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from tests.messaging.conftest import (
    AT,
    Brand,
    MakeCustomer,
    SmtpSink,
    deliveries,
    request,
    run_jobs,
    send_transactional,
)

from tactful.core import clock
from tactful.core.jobs.models import Job
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
from tactful.messaging.service import deliveries as delivery_jobs
from tactful.messaging.service.dispatch import PHASES


def test_dispatch_inside_a_running_event_loop_sends(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, _port = smtp
    cid = make_customer()
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid)])

    async def inside_a_loop() -> int:
        with clock.frozen(AT):
            return run_jobs(worker)

    assert asyncio.run(inside_a_loop()) >= 1
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.error) == ("sent", None)
    assert [m[1] for m in sink.messages] == [["p1@example.com"]]


def test_dispatch_reports_the_seconds_of_each_phase_and_counts_them(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
) -> None:
    sink, _port = smtp
    ids = [make_customer() for _ in range(3)]
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid) for cid in ids])
    with runtime.db.scope(readonly=True) as session:
        [payload] = [
            job.payload
            for job in session.scalars(select(Job).where(Job.name == service.DISPATCH_JOB))
        ]

    def counted(phase: str) -> float:
        labels = {"kind": "smtp", "phase": phase}
        return REGISTRY.get_sample_value("tactful_dispatch_seconds_total", labels) or 0.0

    before = {phase: counted(phase) for phase in PHASES}
    with clock.frozen(AT):
        stats = service.dispatch(runtime, ids=payload["ids"], provider_id=payload["provider_id"])
    assert (stats.sent, stats.failed, stats.unknown) == (3, 0, 0)
    assert sorted(stats.seconds) == sorted(PHASES)
    assert all(seconds > 0 for seconds in stats.seconds.values()), stats.seconds
    for phase in PHASES:
        assert counted(phase) - before[phase] == pytest.approx(stats.seconds[phase])
    assert len(sink.messages) == 3


def test_deliveries_are_queued_in_jobs_of_batch_size_and_never_twice(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery_jobs, "BATCH_SIZE", 3)
    sink, _port = smtp
    people = [make_customer() for _ in range(7)]
    send_transactional(runtime, brand, people)
    found = sorted(deliveries(runtime), key=lambda d: d.id)
    ids = [d.id for d in found]
    with runtime.db.scope(readonly=True) as session:
        payloads = [
            job.payload
            for job in session.scalars(
                select(Job).where(Job.name == service.DISPATCH_JOB).order_by(Job.id)
            )
        ]
    assert [p["ids"] for p in payloads] == [ids[0:3], ids[3:6], ids[6:7]]
    assert {p["provider_id"] for p in payloads} == {found[0].provider_id}
    # the same deliveries handed over again (a monitor's second look): no job is added
    with runtime.db.scope() as session:
        again = delivery_jobs.queue_batches(
            session, [(d.id, d.provider_id, d.attempts) for d in found]
        )
    assert again == 0
    with clock.frozen(AT):
        run_jobs(worker)
    assert {(d.status, d.attempts) for d in deliveries(runtime)} == {("sent", 1)}
    assert len(sink.messages) == 7
