"""Plan checkpoints: the goal is measured from the warehouse's purchases of the target
group; a missed checkpoint switches the dearer channel on for those who have not bought."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tests.campaigns.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    add_receipts,
    deliveries,
    sms_setup,
    spec,
    tick,
)


def test_a_missed_checkpoint_sends_sms_to_non_converters_only(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
    http_peer: HttpPeer,
) -> None:
    sink, _port = smtp
    sms_setup(runtime, brand, http_peer)
    with runtime.db.scope() as session:
        buyer, before, late, never = (make_customer(session=session) for _ in range(4))
    body = spec(
        brand,
        [make_segment([buyer, before, late, never])],
        goal={"kind": "purchases", "attribution_days": 7},
        checkpoints=[
            {"after_hours": 48, "min_value": 2, "steps": [{"channel": "sms"}]},
            {"after_hours": 72, "min_value": 3, "steps": [{"channel": "sms"}]},
        ],
    )
    headers = brand.tenant.headers
    with clock.frozen(AT):
        cid = client.post("/v1/campaigns", headers=headers, json=body).json()["id"]
        launched = client.post(
            f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 4}
        )
        assert launched.status_code == 200, launched.text
        tick(worker)
    assert len(sink.messages) == 4
    add_receipts(
        runtime,
        brand.tenant.workspace_id,
        [
            (buyer, AT + timedelta(hours=1), 1500),
            (buyer, AT + timedelta(hours=30), 900),
            (before, AT - timedelta(hours=1), 700),  # before the campaign: not a conversion
            (late, AT + timedelta(hours=80), 400),  # after the second checkpoint
        ],
    )
    with clock.frozen(AT + timedelta(hours=47)):
        tick(worker)
    pending = client.get(f"/v1/campaigns/{cid}/checkpoints", headers=headers).json()
    assert [(c["number"], c["status"]) for c in pending] == [(0, "pending"), (1, "pending")]

    with clock.frozen(AT + timedelta(hours=48)):
        tick(worker)
    with clock.frozen(AT + timedelta(hours=72)):
        tick(worker)
    checkpoints = client.get(f"/v1/campaigns/{cid}/checkpoints", headers=headers).json()
    assert [
        (
            c["number"],
            c["status"],
            c["value"],
            c["min_value"],
            c["followup_audience"],
            c["followup_scheduled"],
        )
        for c in checkpoints
    ] == [(0, "met", 2, 2, 0, 0), (1, "missed", 2, 3, 3, 3)]
    sms = [d for d in deliveries(runtime, cid) if d.channel == "sms"]
    assert sorted(d.customer_id for d in sms) == sorted([before, late, never])
    assert {(d.status, d.send_at) for d in sms} == {("sent", AT + timedelta(hours=72))}
    assert len(http_peer.requests) == 3
    assert sorted(r.json()["to"] for r in http_peer.requests) == sorted(d.address for d in sms)
    assert len(sink.messages) == 4  # the e-mails were not sent again

    # a checkpoint is checked once: later monitor runs change nothing
    with clock.frozen(AT + timedelta(hours=100)):
        tick(worker)
    assert len(http_peer.requests) == 3
    assert len([d for d in deliveries(runtime, cid) if d.channel == "sms"]) == 3
