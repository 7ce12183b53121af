"""Who a run sends to: the union of target segments minus exclusions, taken when the run
starts; a control group held out by a deterministic hash and recorded; the safety rails
(confirmed size, content rules) refuse before anything is sent."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tactful.campaigns.models import CampaignRecipient, CampaignRun, CampaignWave
from tactful.campaigns.planning import control_mask
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.messaging import service as messaging
from tactful.messaging.models import Delivery, MessageTemplate
from tactful.policy.models import ContactDecision
from tests.campaigns.conftest import (
    AT,
    Brand,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    add_members,
    count,
    decisions,
    deliveries,
    recipients,
    spec,
    tick,
)


@settings(max_examples=60, deadline=None)
@given(
    campaign=st.integers(1, 2**40),
    ids=st.lists(st.integers(1, 2**40), min_size=1, max_size=300, unique=True),
    share=st.floats(0.0, 0.5),
)
def test_control_membership_is_a_function_of_campaign_and_customer_only(
    campaign: int, ids: list[int], share: float
) -> None:
    audience = np.array(ids, dtype=np.int64)
    held = control_mask(campaign, audience, share)
    # the same answer in any order and inside any other audience
    order = np.argsort(-audience)
    assert (control_mask(campaign, audience[order], share) == held[order]).all()
    for n, customer in enumerate(ids[:20]):
        alone = control_mask(campaign, np.array([customer], dtype=np.int64), share)
        assert bool(alone[0]) == bool(held[n])
    # a larger share only adds customers to the control group
    assert not (held & ~control_mask(campaign, audience, min(0.5, share + 0.1))).any()


def test_control_share_holds_out_about_that_share() -> None:
    audience = np.arange(1, 100_001, dtype=np.int64)
    assert int(control_mask(7, audience, 0.1).sum()) == 9_977
    assert int(control_mask(8, audience, 0.1).sum()) == 9_964
    assert int(control_mask(7, audience, 0.0).sum()) == 0


def test_union_minus_exclusions_and_a_recorded_control_group(
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
        people = [make_customer(session=session) for _ in range(40)]
    first = make_segment(people[:25])
    second = make_segment(people[15:40])  # overlaps the first: nobody gets it twice
    excluded = make_segment(people[30:35])
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=brand.tenant.headers,
            json=spec(
                brand,
                [first, second],
                exclusion_segment_ids=[excluded],
                control_share=0.3,
            ),
        ).json()["id"]
        audience = np.array(sorted(set(people) - set(people[30:35])), dtype=np.int64)
        held = control_mask(cid, audience, 0.3)
        control, targets = audience[held].tolist(), audience[~held].tolist()
        assert len(control) == 9  # of 35: the hash decides, reproducibly
        estimate = client.post(f"/v1/campaigns/{cid}/estimate", headers=brand.tenant.headers).json()
        assert (
            estimate["audience"],
            estimate["excluded"],
            estimate["targeted"],
            estimate["control"],
        ) == (35, 5, 26, 9)
        launched = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=brand.tenant.headers,
            json={"expected_recipients": 26},
        )
        assert launched.status_code == 200, launched.text
        tick(worker)
    [run] = client.get(f"/v1/campaigns/{cid}/runs", headers=brand.tenant.headers).json()
    assert (run["audience"], run["excluded"], run["targeted"], run["control"]) == (35, 5, 26, 9)
    rows = recipients(runtime, cid)
    assert [r.customer_id for r in rows if r.group == "control"] == control
    assert [r.customer_id for r in rows if r.group == "target"] == targets
    assert {(r.wave, r.decision_id, r.outcome) for r in rows if r.group == "control"} == {
        (None, None, None)
    }
    # control customers are never passed to the policy and get nothing
    ledger = decisions(runtime, f"campaign:{cid}")
    assert sorted(d.customer_id for d in ledger) == targets
    sent = deliveries(runtime, cid)
    assert sorted(d.customer_id for d in sent) == targets
    assert len(sink.messages) == 26
    listed = client.get(
        f"/v1/campaigns/{cid}/recipients",
        headers=brand.tenant.headers,
        params={"group": "control", "limit": 5},
    ).json()
    assert [r["customer_id"] for r in listed] == control[:5]
    assert {(r["group"], r["outcome"], r["delivery_id"]) for r in listed} == {
        ("control", None, None)
    }
    page = client.get(
        f"/v1/campaigns/{cid}/recipients",
        headers=brand.tenant.headers,
        params={"group": "target", "after_customer": targets[24]},
    ).json()
    [last] = page
    by_customer = {d.customer_id: d for d in sent}
    assert last == {
        "run": 1,
        "customer_id": targets[25],
        "group": "target",
        "wave": 0,
        "decision_id": by_customer[targets[25]].decision_id,
        "outcome": "scheduled",
        "reason": "ok",
        "delivery_id": by_customer[targets[25]].id,
        "delivery_status": "sent",
    }


def test_suppressed_recipients_are_recorded_with_the_reason(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    with runtime.db.scope() as session:
        ok = [make_customer(session=session) for _ in range(2)]
        refused = make_customer(session=session, consent=False)
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=brand.tenant.headers,
            json=spec(brand, [make_segment([*ok, refused, 987_654])]),
        ).json()["id"]
        client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=brand.tenant.headers,
            json={"expected_recipients": 4},
        )
        tick(worker)
    outcomes = {r.customer_id: (r.outcome, r.reason) for r in recipients(runtime, cid)}
    assert outcomes == {
        ok[0]: ("scheduled", "ok"),
        ok[1]: ("scheduled", "ok"),
        refused: ("suppressed", "no_advertising_consent"),
        987_654: ("suppressed", "no_contact"),
    }
    assert sorted(d.customer_id for d in deliveries(runtime, cid)) == ok


def test_a_larger_audience_than_confirmed_is_refused_at_launch_and_at_send_time(
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
        people = [make_customer(session=session) for _ in range(12)]
    segment = make_segment(people[:10])
    headers = brand.tenant.headers
    with clock.frozen(AT):
        cid = client.post("/v1/campaigns", headers=headers, json=spec(brand, [segment])).json()[
            "id"
        ]
        refused = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=headers,
            json={"expected_recipients": 9, "tolerance": 0.1},
        )
        assert refused.status_code == 409
        assert refused.json()["errors"][0]["field"] == "expected_recipients"
        stored = client.get(f"/v1/campaigns/{cid}", headers=headers).json()
        assert (stored["status"], stored["confirmed_recipients"]) == ("draft", None)

        # 10 confirmed with 10 %: the segment then grows to 12 before the run starts
        launched = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=headers,
            json={"expected_recipients": 10, "tolerance": 0.1},
        )
        assert launched.status_code == 200
        assert launched.json()["status"] == "scheduled"
        with runtime.db.scope() as session:
            add_members(session, segment, people[10:])
        tick(worker)
    stored = client.get(f"/v1/campaigns/{cid}", headers=headers).json()
    assert stored["status"] == "draft"
    assert stored["last_error"] == (
        "the audience is 12 recipients, more than the 10 confirmed (tolerance 10%); "
        "confirm the new size before sending"
    )
    [run] = client.get(f"/v1/campaigns/{cid}/runs", headers=headers).json()
    assert (run["status"], run["error"]) == ("refused", stored["last_error"])
    # nothing was decided, recorded or sent
    assert count(runtime, ContactDecision) == 0
    assert count(runtime, Delivery) == 0
    assert count(runtime, CampaignRecipient) == 0
    assert count(runtime, CampaignWave) == 0
    assert sink.messages == []


def test_content_rules_refuse_an_audience_they_do_not_fit(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    with runtime.db.scope() as session:
        woman, man = make_customer(session=session), make_customer(session=session)
        for customer_id, gender in ((woman, "f"), (man, "m")):
            customer = session.get(Customer, customer_id)
            assert customer is not None
            customer.gender = gender
        template = session.get(MessageTemplate, brand.template_id)
        assert template is not None
        template.content_rules = {"audience_gender": "f"}
    headers = brand.tenant.headers
    with clock.frozen(AT):
        both = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [make_segment([woman, man])])
        ).json()["id"]
        refused = client.post(
            f"/v1/campaigns/{both}/launch", headers=headers, json={"expected_recipients": 2}
        )
        assert refused.status_code == 409
        assert refused.json()["violations"] == {"other_gender": 1}
        assert client.get(f"/v1/campaigns/{both}", headers=headers).json()["status"] == "draft"
        women = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [make_segment([woman])])
        ).json()["id"]
        ok = client.post(
            f"/v1/campaigns/{women}/launch", headers=headers, json={"expected_recipients": 1}
        )
        assert ok.status_code == 200
        tick(worker)
    assert [d.customer_id for d in deliveries(runtime, women)] == [woman]
    assert deliveries(runtime, both) == []
    with runtime.db.scope(readonly=True) as session:
        assert session.scalars(select(CampaignRun.campaign_id)).all() == [women]


def test_a_template_that_reads_as_a_test_never_reaches_real_customers(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
) -> None:
    with runtime.db.scope() as session:
        real = make_customer(session=session)
        template, _warnings = messaging.save_template(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            kind="message",
            key="draft_test",
            name="Draft",
            parts={"email": {"subject": "TEST please ignore", "body": "<mj-text>x</mj-text>"}},
            actor="test",
        )
        assert template.is_test_content
        template_id = template.id
    headers = brand.tenant.headers
    cid = client.post(
        "/v1/campaigns",
        headers=headers,
        json=spec(brand, [make_segment([real])], template_id=template_id),
    ).json()["id"]
    refused = client.post(
        f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 1}
    )
    assert refused.status_code == 409
    assert refused.json()["violations"] == {"test_content_to_real_customers": 1}
    assert count(runtime, CampaignRun) == 0
