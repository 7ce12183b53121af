"""What a campaign did, from its recipients, messaging's deliveries and the warehouse's
purchases; and test sends, which go to test recipients only and count nowhere."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from fastapi.testclient import TestClient

from tactful.campaigns.models import CampaignRun
from tactful.campaigns.planning import control_mask
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.service import ConsentInput
from tactful.messaging import service as messaging
from tactful.messaging.models import Delivery
from tests.campaigns.conftest import (
    AT,
    Brand,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    add_receipts,
    count,
    deliveries,
    spec,
    tick,
)


def test_stats_count_every_stage_and_conversions_against_control(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    with runtime.db.scope() as session:
        people = [make_customer(session=session) for _ in range(10)]
        refused = make_customer(session=session, consent=False)
    headers = brand.tenant.headers
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=headers,
            json=spec(
                brand,
                [make_segment([*people, refused])],
                control_share=0.3,
                goal={"kind": "buyers", "attribution_days": 3},
            ),
        ).json()["id"]
        audience = np.array(sorted([*people, refused]), dtype=np.int64)
        held = control_mask(cid, audience, 0.3)
        control = audience[held].tolist()
        targets = audience[~held].tolist()
        # the hash's choice for this campaign: two held out, the refused one is a target
        assert len(control) == 2
        assert refused in targets
        launched = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=headers,
            json={"expected_recipients": len(targets)},
        )
        assert launched.status_code == 200, launched.text
        tick(worker)
    sent = {d.customer_id: d for d in deliveries(runtime, cid)}
    reached = sorted(sent)
    assert reached == sorted(set(targets) - {refused})
    a, b, c, *_rest = reached
    with clock.frozen(AT + timedelta(hours=1)), runtime.db.scope() as session:
        rows = {d.customer_id: session.get(Delivery, d.id) for d in sent.values()}
        for customer in (a, b, c):
            messaging.advance(session, rows[customer], "delivered")
        messaging.advance(session, rows[a], "read")
        messaging.advance(session, rows[a], "clicked", details={"url": "https://shop.example"})
        messaging.advance(session, rows[b], "complained")
        customers.set_consents(
            session,
            workspace_id=brand.tenant.workspace_id,
            customer_id=c,
            changes=[
                ConsentInput(
                    kind="topic",
                    status="revoked",
                    topic="promotions",
                    brand_id=brand.tenant.brand_id,
                )
            ],
            source="unsubscribe_link",
            evidence={"delivery_id": rows[c].id},
            actor=f"customer:{c}",
        )
    add_receipts(
        runtime,
        brand.tenant.workspace_id,
        [
            (a, AT + timedelta(hours=2), 1000),
            (a, AT + timedelta(days=1), 500),
            (b, AT + timedelta(days=4), 9999),  # outside the 3-day attribution window
            (control[0], AT + timedelta(hours=5), 700),
        ],
    )
    with clock.frozen(AT + timedelta(days=5)):
        figures = client.get(f"/v1/campaigns/{cid}/stats", headers=headers)
    assert figures.status_code == 200, figures.text
    assert figures.json() == {
        "campaign_id": cid,
        "audience": 11,
        "targeted": 9,
        "control": 2,
        "scheduled": 8,
        "suppressed": 1,
        "suppressed_by_reason": {"no_advertising_consent": 1},
        "deliveries": 8,
        "waiting": 0,
        "sent": 8,
        "delivered": 3,
        "opened": 1,
        "clicked": 1,
        "failed": 0,
        "unknown": 0,
        "cancelled": 0,
        "suppressed_at_send": 0,
        "unsubscribed": 1,
        "complained": 1,
        "by_channel": {"email": 8},
        "cost": 80,
        "converted": {
            "customers": 9,
            "buyers": 1,
            "purchases": 2,
            "revenue": 1500,
            "conversion_rate": 0.111111,
        },
        "control_converted": {
            "customers": 2,
            "buyers": 1,
            "purchases": 1,
            "revenue": 700,
            "conversion_rate": 0.5,
        },
        "attribution_days": 3,
    }


def test_test_sends_go_to_test_recipients_only_and_count_nowhere(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    sink, _port = smtp
    with runtime.db.scope() as session:
        tester = make_customer(session=session, is_test=True)
        real = make_customer(session=session)
    headers = brand.tenant.headers
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [make_segment([real])])
        ).json()["id"]
        everyone = client.post(f"/v1/campaigns/{cid}/test-send", headers=headers, json={})
        assert everyone.status_code == 200, everyone.text
        assert [(r["customer_id"], r["outcome"], r["reason"]) for r in everyone.json()] == [
            (tester, "scheduled", "ok")
        ]
        chosen = client.post(
            f"/v1/campaigns/{cid}/test-send",
            headers=headers,
            json={"customer_ids": [real, tester]},
        ).json()
        assert [(r["customer_id"], r["outcome"], r["reason"]) for r in chosen] == [
            (real, "suppressed", "not_test_recipient"),
            (tester, "scheduled", "ok"),
        ]
        tick(worker)
    assert [rcpt for _f, [rcpt], _r in sink.messages] == [
        d.address for d in deliveries(runtime, cid) if d.status == "sent"
    ]
    assert len(sink.messages) == 2
    assert {d.customer_id for d in deliveries(runtime, cid) if d.status == "sent"} == {tester}
    # the campaign itself is untouched: still a draft, no run, nothing in its figures
    assert client.get(f"/v1/campaigns/{cid}", headers=headers).json()["status"] == "draft"
    assert count(runtime, CampaignRun) == 0
    with clock.frozen(AT):
        figures = client.get(f"/v1/campaigns/{cid}/stats", headers=headers).json()
    assert (figures["audience"], figures["deliveries"], figures["sent"]) == (0, 0, 0)
