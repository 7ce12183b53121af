"""Dispatch also works when the calling thread already runs an event loop (a job run from
async code, or a test after a browser library left its loop running)."""

from __future__ import annotations

import asyncio

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
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service


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
