"""A campaign's states over HTTP: draft → awaiting approval → scheduled → sending → done,
approval by a second person (recorded in the audit log), rejection, edits only of drafts,
and bad input refused with the field and nothing stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.campaigns.models import Campaign, CampaignRun, CampaignWave
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.tenancy.models import AuditEntry
from tests.campaigns.conftest import (
    AT,
    Brand,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    count,
    deliveries,
    recipients,
    spec,
    tick,
)


def _audit(runtime: Runtime, campaign_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == "campaign", AuditEntry.target_id == str(campaign_id))
            .order_by(AuditEntry.id)
        )
        return [(r.action, r.actor, r.details) for r in rows]


def test_draft_to_done_with_four_eyes_approval(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    second_key: dict[str, str],
    worker: Worker,
) -> None:
    sink, _port = smtp
    headers = brand.tenant.headers
    with runtime.db.scope() as session:
        people = [make_customer(session=session) for _ in range(4)]
    segment = make_segment(people)
    with clock.frozen(AT):
        created = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [segment], requires_approval=True)
        )
        assert created.status_code == 201, created.text
        campaign = created.json()
        cid = campaign["id"]
        assert (campaign["status"], campaign["next_run_at"], campaign["runs_started"]) == (
            "draft",
            None,
            0,
        )
        renamed = client.patch(f"/v1/campaigns/{cid}", headers=headers, json={"name": "Spring"})
        assert (renamed.status_code, renamed.json()["name"]) == (200, "Spring")

        estimate = client.post(f"/v1/campaigns/{cid}/estimate", headers=headers)
        assert estimate.status_code == 200, estimate.text
        assert {k: estimate.json()[k] for k in ("audience", "excluded", "targeted", "control")} == {
            "audience": 4,
            "excluded": 0,
            "targeted": 4,
            "control": 0,
        }

        launched = client.post(
            f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 4}
        )
        assert launched.status_code == 200, launched.text
        assert launched.json()["status"] == "awaiting_approval"
        assert launched.json()["confirmed_recipients"] == 4
        # a launched campaign is no longer edited
        edit = client.patch(f"/v1/campaigns/{cid}", headers=headers, json={"name": "Other"})
        assert (edit.status_code, edit.json()["errors"][0]["field"]) == (409, "status")

        # whoever launched it cannot approve it: nothing changes
        self_approval = client.post(f"/v1/campaigns/{cid}/approve", headers=headers, json={})
        assert self_approval.status_code == 403
        assert client.get(f"/v1/campaigns/{cid}", headers=headers).json()["status"] == (
            "awaiting_approval"
        )
        assert count(runtime, CampaignRun) == 0

        approved = client.post(
            f"/v1/campaigns/{cid}/approve", headers=second_key, json={"comment": "looks good"}
        )
        assert approved.status_code == 200, approved.text
        body = approved.json()
        assert (body["status"], body["approved_by"], body["next_run_at"]) == (
            "scheduled",
            "api_key:2",
            AT.isoformat().replace("+00:00", "Z"),
        )
        assert body["launched_by"] == "api_key:1"

        tick(worker)
    assert client.get(f"/v1/campaigns/{cid}", headers=headers).json()["status"] == "done"
    [run] = client.get(f"/v1/campaigns/{cid}/runs", headers=headers).json()
    assert {
        k: run[k] for k in ("number", "status", "audience", "targeted", "control", "waves")
    } == {
        "number": 1,
        "status": "done",
        "audience": 4,
        "targeted": 4,
        "control": 0,
        "waves": 1,
    }
    rows = deliveries(runtime, cid)
    assert sorted(d.customer_id for d in rows) == sorted(people)
    assert {(d.status, d.error) for d in rows} == {("sent", None)}
    assert len(sink.messages) == 4
    assert sorted(rcpt for _f, [rcpt], _r in sink.messages) == sorted(d.address for d in rows)
    assert [(r.customer_id, r.group, r.outcome, r.reason) for r in recipients(runtime, cid)] == [
        (c, "target", "scheduled", "ok") for c in sorted(people)
    ]
    assert {r.decision_id for r in recipients(runtime, cid)} == {d.decision_id for d in rows}
    assert [(a, actor) for a, actor, _d in _audit(runtime, cid)] == [
        ("campaign.created", "api_key:1"),
        ("campaign.updated", "api_key:1"),
        ("campaign.launched", "api_key:1"),
        ("campaign.approved", "api_key:2"),
    ]
    assert _audit(runtime, cid)[3][2] == {"comment": "looks good", "launched_by": "api_key:1"}


def test_rejection_returns_to_draft_and_a_draft_can_change(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    second_key: dict[str, str],
) -> None:
    headers = brand.tenant.headers
    segment = make_segment([make_customer()])
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [segment], requires_approval=True)
        ).json()["id"]
        client.post(f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 1})
        rejected = client.post(
            f"/v1/campaigns/{cid}/reject", headers=second_key, json={"comment": "wrong subject"}
        )
    assert rejected.status_code == 200
    assert (rejected.json()["status"], rejected.json()["last_error"]) == (
        "draft",
        "rejected by api_key:2: wrong subject",
    )
    again = client.post(f"/v1/campaigns/{cid}/reject", headers=second_key, json={})
    assert (again.status_code, again.json()["errors"][0]["field"]) == (409, "status")
    assert (
        client.patch(f"/v1/campaigns/{cid}", headers=headers, json={"priority": 5}).json()[
            "priority"
        ]
        == 5
    )
    assert count(runtime, CampaignRun) == 0


def test_bad_definitions_are_refused_with_the_field_and_nothing_is_stored(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
) -> None:
    headers = brand.tenant.headers
    segment = make_segment([make_customer()])
    cases: list[tuple[dict[str, Any], int, str]] = [
        (spec(brand, [segment], template_id=9999), 422, "template_id"),
        (spec(brand, [segment], template_id=brand.layout_id), 422, "template_id"),
        (spec(brand, [segment], steps=[{"channel": "webhook"}]), 422, "steps[0].channel"),
        (
            spec(brand, [segment], steps=[{"channel": "email"}, {"channel": "email"}]),
            422,
            "steps[1].channel",
        ),
        (spec(brand, [9999]), 422, "target_segment_ids[0]"),
        (spec(brand, [segment], exclusion_segment_ids=[segment]), 422, "exclusion_segment_ids"),
        (spec(brand, [segment], control_share=0.9), 422, "control_share"),
        (spec(brand, []), 422, "target_segment_ids"),
        (
            spec(brand, [segment], checkpoints=[{"after_hours": 1, "min_value": 1, "steps": []}]),
            422,
            "checkpoints",
        ),
        (
            spec(
                brand,
                [segment],
                schedule={"kind": "recurring", "frequency": "weekly", "time": "10:00"},
            ),
            422,
            "schedule.recurring",
        ),
        (
            spec(
                brand,
                [segment],
                schedule={"kind": "local_time", "date": "2026-06-02", "time": "25:00"},
            ),
            422,
            "schedule.local_time.time",
        ),
        (spec(brand, [segment], brand_id=999), 422, "brand_id"),
    ]
    for body, status, field in cases:
        response = client.post("/v1/campaigns", headers=headers, json=body)
        assert response.status_code == status, (field, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    assert count(runtime, Campaign) == 0

    # a schedule in the past is refused at launch; the draft stays as it was
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=headers,
            json=spec(brand, [segment], schedule={"kind": "at", "at": "2026-05-31T10:00:00Z"}),
        ).json()["id"]
        refused = client.post(
            f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 1}
        )
    assert (refused.status_code, refused.json()["errors"][0]["field"]) == (422, "schedule.at")
    stored = client.get(f"/v1/campaigns/{cid}", headers=headers).json()
    assert (stored["status"], stored["launched_by"], stored["confirmed_recipients"]) == (
        "draft",
        None,
        None,
    )
    assert count(runtime, CampaignRun) == 0
    assert count(runtime, CampaignWave) == 0
    missing = client.post(
        "/v1/campaigns/999/launch", headers=headers, json={"expected_recipients": 1}
    )
    assert missing.status_code == 404


def test_scheduled_at_a_time_starts_then(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    headers = brand.tenant.headers
    people = [make_customer(), make_customer()]
    at = AT + timedelta(hours=3)
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=headers,
            json=spec(brand, [make_segment(people)], schedule={"kind": "at", "at": at.isoformat()}),
        ).json()["id"]
        launched = client.post(
            f"/v1/campaigns/{cid}/launch", headers=headers, json={"expected_recipients": 2}
        ).json()
        assert (launched["status"], launched["next_run_at"]) == (
            "scheduled",
            at.isoformat().replace("+00:00", "Z"),
        )
        tick(worker)
        assert deliveries(runtime, cid) == []
        clock.advance(timedelta(hours=3))
        tick(worker)
    rows = deliveries(runtime, cid)
    assert [(d.customer_id, d.status, d.send_at) for d in rows] == [
        (c, "sent", at) for c in sorted(people)
    ]
