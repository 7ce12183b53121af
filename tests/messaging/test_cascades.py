"""Cascades against real local providers: push not delivered → e-mail not read in time →
Viber → SMS, each step falling through after its time-out through the monitor and its jobs,
the policy deciding each next channel; and a cascade that stops once the e-mail is opened."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from tests.messaging.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    SmtpSink,
    add_provider,
    deliveries,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.context import MonitorContext
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.service import ConsentInput
from tactful.messaging import jobs, service
from tactful.messaging.models import Delivery
from tactful.policy.models import ContactDecision
from tactful.policy.schemas import ChannelStep

HOUR = timedelta(hours=1)


def _providers(runtime: Runtime, brand: Brand, peer: HttpPeer) -> None:
    """Push, Viber and SMS providers, all played by one local HTTP server."""

    def answer(req: Any) -> tuple[int, Any]:
        if req.path.endswith("messages:send"):
            return 200, {"name": f"projects/garden/messages/{len(peer.requests)}"}
        if req.path == "/pa/send_message":
            return 200, {"status": 0, "status_message": "ok", "message_token": 77}
        return 200, {"id": "sms-1"}

    peer.respond = answer
    config = {"endpoint": peer.url}
    add_provider(
        runtime, brand, "fcm", "push", {**config, "project_id": "garden", "access_token": "t"}
    )
    add_provider(runtime, brand, "viber", "viber", {**config, "auth_token": "viber-secret"})
    add_provider(runtime, brand, "sms_generic", "sms", {"endpoint": f"{peer.url}/sms"})


def _tick(runtime: Runtime, worker: Worker) -> None:
    """What the worker does at this moment: the cascade monitor, then the jobs it wrote."""
    with runtime.db.scope() as session:
        jobs.cascades(MonitorContext(runtime, session, clock.now()))
    run_jobs(worker)


def _chain(runtime: Runtime) -> list[tuple[str | None, str, int]]:
    return [(d.channel, d.status, d.cost) for d in deliveries(runtime)]


def _paths(peer: HttpPeer) -> list[str]:
    return [r.path for r in peer.requests]


def test_push_email_viber_sms_each_falls_through_after_its_time_out(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
) -> None:
    sink, _port = smtp
    _providers(runtime, brand, http_peer)
    cid = make_customer()
    steps = (
        ChannelStep("push", timeout=HOUR),
        ChannelStep("email", timeout=HOUR, wait_for="read"),
        ChannelStep("viber", timeout=HOUR),
        ChannelStep("sms"),
    )
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            [outcome] = service.send(session, [request(brand, cid, steps=steps)])
        assert (outcome.outcome, outcome.channel, outcome.cost) == ("scheduled", "push", 0)
        run_jobs(worker)
        _tick(runtime, worker)  # nothing is due yet
    assert _chain(runtime) == [("push", "sent", 0)]
    assert _paths(http_peer) == ["/v1/projects/garden/messages:send"]

    # push reports no delivery: after its hour the e-mail goes
    with clock.frozen(AT + HOUR + timedelta(seconds=1)):
        _tick(runtime, worker)
    assert _chain(runtime) == [("push", "sent", 0), ("email", "sent", 10)]
    assert [rcpt for _f, rcpt, _r in sink.messages] == [["p1@example.com"]]

    # the e-mail is not opened within its hour: Viber
    with clock.frozen(AT + 2 * HOUR + timedelta(seconds=2)):
        _tick(runtime, worker)
    assert _chain(runtime)[-1] == ("viber", "sent", 150)

    # Viber reports no delivery in time: the SMS, the last step
    with clock.frozen(AT + 3 * HOUR + timedelta(seconds=3)):
        _tick(runtime, worker)
    with clock.frozen(AT + 9 * HOUR):
        _tick(runtime, worker)  # nothing after the last step
    assert _chain(runtime) == [
        ("push", "sent", 0),
        ("email", "sent", 10),
        ("viber", "sent", 150),
        ("sms", "sent", 350),
    ]
    assert _paths(http_peer) == [
        "/v1/projects/garden/messages:send",
        "/pa/send_message",
        "/sms",
    ]
    assert len(sink.messages) == 1
    rows = deliveries(runtime)
    # the cost is the sum of what was actually sent
    assert sum(d.cost for d in rows) == 510
    # every step was the policy's decision, each pointing at the one before
    with runtime.db.scope(readonly=True) as session:
        ledger = [session.get(ContactDecision, d.decision_id) for d in rows]
    assert [(d.step, d.channel, d.status) for d in ledger if d is not None] == [
        (0, "push", "sent"),
        (1, "email", "sent"),
        (2, "viber", "sent"),
        (3, "sms", "sent"),
    ]
    assert [d.previous_id for d in ledger if d is not None] == [
        None,
        rows[0].decision_id,
        rows[1].decision_id,
        rows[2].decision_id,
    ]


def test_the_policy_rechecks_each_step_a_revoked_channel_is_skipped(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
) -> None:
    _providers(runtime, brand, http_peer)
    cid = make_customer()
    steps = (
        ChannelStep("email", timeout=HOUR, wait_for="read"),
        ChannelStep("viber", timeout=HOUR),
        ChannelStep("sms"),
    )
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            service.send(session, [request(brand, cid, steps=steps)])
        run_jobs(worker)
    # the customer leaves Viber advertising while the e-mail waits to be read
    with clock.frozen(AT + timedelta(minutes=10)), runtime.db.scope() as session:
        customers.set_consents(
            session,
            workspace_id=brand.tenant.workspace_id,
            customer_id=cid,
            changes=[
                ConsentInput(
                    kind="advertising",
                    channel="viber",
                    status="revoked",
                    brand_id=brand.tenant.brand_id,
                )
            ],
            source="test",
            evidence={},
            actor="test",
        )
    with clock.frozen(AT + HOUR + timedelta(seconds=1)):
        _tick(runtime, worker)
    assert _chain(runtime) == [("email", "sent", 10), ("sms", "sent", 350)]
    assert _paths(http_peer) == ["/sms"]


def test_a_cascade_stops_once_the_email_is_opened(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
    client: TestClient,
) -> None:
    sink, _port = smtp
    _providers(runtime, brand, http_peer)
    cid = make_customer()
    steps = (ChannelStep("email", timeout=HOUR, wait_for="read"), ChannelStep("sms"))
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            service.send(session, [request(brand, cid, steps=steps)])
        run_jobs(worker)
    [mail] = sink.parsed()
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    pixel = re.search(r'src="(http://127\.0\.0\.1:8000/t/o/[^"]+)"', html.get_content())
    assert pixel is not None
    with clock.frozen(AT + timedelta(minutes=20)):
        opened = client.get(urlsplit(pixel.group(1)).path)
    assert opened.status_code == 200
    with clock.frozen(AT + 5 * HOUR):
        _tick(runtime, worker)
    assert _chain(runtime) == [("email", "read", 10)]
    assert http_peer.requests == []
    [email] = deliveries(runtime)
    assert email.cascade_at is None
    with runtime.db.scope(readonly=True) as session:
        decision = session.get(ContactDecision, email.decision_id)
        assert decision is not None
        assert decision.status == "read"
        assert session.query(Delivery).count() == 1
