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
)

from tactful.core import clock
from tactful.core.jobs.models import Job
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
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
