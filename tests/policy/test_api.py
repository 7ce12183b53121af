"""The policy over HTTP: rules editing (validated, versioned, audited), what-if replays,
decisions with reasons, suppression summaries."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.policy import service as policy
from tactful.policy.schemas import ChannelStep, Intent
from tests.conftest import Tenant
from tests.policy.conftest import AT, MakeCustomer


def test_rules_are_validated_versioned_and_audited(client: TestClient, tenant: Tenant) -> None:
    current = client.get("/v1/policy/rules", headers=tenant.headers).json()
    assert current["version"] == 0
    assert [c["id"] for c in current["rules"]["caps"]] == [
        "marketing-per-day",
        "marketing-per-week",
    ]
    bad = client.put(
        "/v1/policy/rules",
        headers=tenant.headers,
        json={
            "rules": {
                "caps": [{"id": "x", "limit": 1, "period": "fortnight"}],
                "send_windows": {"default": [{"start": "22:00", "end": "08:00"}]},
            }
        },
    )
    assert bad.status_code == 422
    fields = sorted(e["field"] for e in bad.json()["errors"])
    assert fields == ["rules.caps[0].period", "rules.send_windows.default[0]"]
    ok = client.put(
        "/v1/policy/rules",
        headers=tenant.headers,
        json={
            "rules": {"caps": [{"id": "one-a-day", "limit": 1, "period": "day"}]},
            "comment": "quieter autumn",
        },
    )
    assert ok.status_code == 200
    assert ok.json()["version"] == 1
    brand = client.put(
        f"/v1/policy/rules?brand_id={tenant.brand_id}",
        headers=tenant.headers,
        json={"rules": {"spacing": [{"id": "gap", "min_hours": 48}]}},
    )
    assert brand.json()["version"] == 1
    history = client.get("/v1/policy/rules/history", headers=tenant.headers).json()
    assert [(h["version"], h["active"], h["comment"]) for h in history] == [
        (1, True, "quieter autumn")
    ]
    audit = client.get(
        "/v1/audit-log", params={"action": "policy.changed"}, headers=tenant.headers
    ).json()
    assert [(a["target_id"], a["details"]["version"]) for a in audit] == [
        (f"b{tenant.brand_id}", 1),
        ("ws", 1),
    ]


def test_what_if_replays_real_intents_and_keeps_nothing(
    runtime: Runtime, client: TestClient, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    customers = [make_customer() for _ in range(3)]
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            for n in range(3):  # three campaigns the same morning
                policy.decide(
                    session,
                    [
                        Intent(
                            workspace_id=tenant.workspace_id,
                            brand_id=tenant.brand_id,
                            customer_id=cid,
                            message_class="marketing",
                            source=f"campaign:{n}",
                            steps=(ChannelStep("email"),),
                        )
                        for cid in customers
                    ],
                    now=AT + timedelta(minutes=n),
                )
        with runtime.db.scope(readonly=True) as session:
            before = policy.why(session, workspace_id=tenant.workspace_id, customer_id=customers[0])
        clock.advance(timedelta(hours=1))
        report = client.post(
            "/v1/policy/what-if",
            headers=tenant.headers,
            json={
                "days": 1,
                "rules": {"caps": [{"id": "one", "limit": 1, "period": "day"}], "spacing": []},
            },
        ).json()
    assert report["intents"] == 9
    # defaults (2 a day, 4 h apart): 3 now, 3 four hours later, 3 the next day
    assert report["actual"]["scheduled"] == 9
    assert report["actual"]["by_reason"] == {
        "scheduled:deferred_cap": 3,
        "scheduled:deferred_spacing": 3,
        "scheduled:ok": 3,
    }
    # one a day: the first campaign goes, the others move to later days
    assert report["proposed"]["by_reason"] == {"scheduled:deferred_cap": 6, "scheduled:ok": 3}
    assert report["outcomes_changed"] == 0
    with runtime.db.scope(readonly=True) as session:
        after = policy.why(session, workspace_id=tenant.workspace_id, customer_id=customers[0])
    assert after == before  # the replay kept nothing
    bad = client.post("/v1/policy/what-if", headers=tenant.headers, json={"days": 400, "rules": {}})
    assert bad.status_code == 422


def test_decisions_and_suppressions(
    runtime: Runtime, client: TestClient, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    quiet = make_customer(consent=False)
    with clock.frozen(AT), runtime.db.scope() as session:
        policy.decide(
            session,
            [
                Intent(
                    workspace_id=tenant.workspace_id,
                    brand_id=tenant.brand_id,
                    customer_id=quiet,
                    message_class="marketing",
                    source="campaign:9",
                    steps=(ChannelStep("sms"),),
                )
            ],
            now=AT,
        )
    with clock.frozen(AT + timedelta(minutes=5)):
        rows = client.get(
            "/v1/policy/decisions", params={"customer_id": quiet}, headers=tenant.headers
        ).json()
        summary = client.get("/v1/policy/suppressions", headers=tenant.headers).json()
    assert [(r["source"], r["status"], r["reason"], r["explanation"]) for r in rows] == [
        (
            "campaign:9",
            "suppressed",
            "no_advertising_consent",
            "no advertising consent for the brand and channel",
        )
    ]
    assert summary == [
        {
            "day": "2026-06-01",
            "status": "suppressed",
            "reason": "no_advertising_consent",
            "explanation": "no advertising consent for the brand and channel",
            "count": 1,
        }
    ]
    missing = client.get(
        "/v1/policy/decisions", params={"customer_id": 99999}, headers=tenant.headers
    )
    assert missing.status_code == 404
