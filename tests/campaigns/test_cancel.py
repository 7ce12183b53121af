"""Cancel stops everything not yet sent: waves not handed over, deliveries the policy
deferred, checkpoints, the next recurring run; the ledger frees the cancelled messages so
they no longer hold a customer's caps and spacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tactful.campaigns.models import CampaignCheckpoint, CampaignWave
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service as messaging
from tactful.messaging.schemas import SendRequest
from tactful.policy.schemas import ChannelStep
from tests.campaigns.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    count,
    decisions,
    deliveries,
    sms_setup,
    spec,
    tick,
)

NINE_IN_NEW_YORK = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_cancel_stops_waves_deferred_deliveries_and_checkpoints(
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
        # waves take customers by id: the New York customer is in the first wave
        night = make_customer(session=session, timezone="America/New_York")
        moscow = [make_customer(session=session) for _ in range(3)]
    headers = brand.tenant.headers
    body = spec(
        brand,
        [make_segment([*moscow, night])],
        throttle_per_minute=2,
        goal={"kind": "purchases"},
        checkpoints=[{"after_hours": 24, "min_value": 5, "steps": [{"channel": "sms"}]}],
    )
    with clock.frozen(AT):
        cid = client.post("/v1/campaigns", headers=headers, json=body).json()["id"]
        launched = client.post(
            f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 4}
        )
        assert launched.status_code == 200, launched.text
        tick(worker)
    # the first wave went: a Moscow customer now; it is night in New York, so the policy
    # deferred that one to 09:00 there; the second wave waits for the next minute
    first = {d.customer_id: (d.status, d.send_at) for d in deliveries(runtime, cid)}
    assert first == {night: ("planned", NINE_IN_NEW_YORK), moscow[0]: ("sent", AT)}
    assert len(sink.messages) == 1

    with clock.frozen(AT + timedelta(seconds=30)):
        cancelled = client.post(f"/v1/campaigns/{cid}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["campaign"]["status"] == "cancelled"
    assert cancelled.json()["stopped"] == {
        "runs": 1,
        "waves": 1,
        "checkpoints": 1,
        "deliveries": 1,
    }
    # time passes, every monitor and job runs: nothing more is sent or planned
    for later in (AT + timedelta(minutes=2), NINE_IN_NEW_YORK, AT + timedelta(days=2)):
        with clock.frozen(later):
            tick(worker)
    after = {d.customer_id: d.status for d in deliveries(runtime, cid)}
    assert after == {night: "cancelled", moscow[0]: "sent"}
    assert len(sink.messages) == 1
    assert count(runtime, CampaignWave, CampaignWave.status == "cancelled") == 1
    assert count(runtime, CampaignCheckpoint, CampaignCheckpoint.status == "cancelled") == 1
    ledger = {d.customer_id: d.status for d in decisions(runtime, f"campaign:{cid}")}
    assert ledger == {night: "cancelled", moscow[0]: "sent"}
    again = client.post(f"/v1/campaigns/{cid}/cancel", headers=headers)
    assert (again.status_code, again.json()["errors"][0]["field"]) == (409, "status")


def test_a_cancelled_message_no_longer_holds_the_customers_spacing(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    night = make_customer(timezone="America/New_York")
    headers = brand.tenant.headers

    def another_offer() -> tuple[str, datetime | None]:
        with runtime.db.scope() as session:
            [outcome] = messaging.send(
                session,
                [
                    SendRequest(
                        workspace_id=brand.tenant.workspace_id,
                        brand_id=brand.tenant.brand_id,
                        customer_id=night,
                        template_id=brand.template_id,
                        message_class="marketing",
                        source="campaign:other",
                        steps=(ChannelStep("email"),),
                        topic="promotions",
                    )
                ],
            )
            nested_reason = outcome.reason
            session.rollback()  # only asking: nothing is kept
        return nested_reason, outcome.send_at

    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [make_segment([night])])
        ).json()["id"]
        client.post(f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 1})
        tick(worker)
        [planned] = deliveries(runtime, cid)
        assert (planned.status, planned.send_at) == ("planned", NINE_IN_NEW_YORK)
        # while the campaign's message is planned, another offer keeps 4 hours' spacing
        # after it (the policy names the first reason it was deferred: the night)
        assert another_offer() == (
            "deferred_quiet_hours",
            NINE_IN_NEW_YORK + timedelta(hours=4),
        )
        client.post(f"/v1/campaigns/{cid}/cancel", headers=headers)
        assert another_offer() == ("deferred_quiet_hours", NINE_IN_NEW_YORK)
