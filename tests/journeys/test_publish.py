"""Publishing: bad journeys refused with the step named (nothing stored), immutable versions
that keep customers on the version they entered, pause, resume and stop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.journeys.models import JourneyInstance, JourneyVersion
from tactful.messaging import service as messaging
from tests.journeys.conftest import (
    Brand,
    MakeCustomer,
    count,
    deliveries,
    enter,
    history,
    instances,
    journey_row,
    later,
    send,
)


def _wait(key: str, next_key: str | None, duration: str = "PT1H") -> dict[str, Any]:
    return {"key": key, "type": "wait", "duration": duration, "next": next_key}


def _bad_graphs(brand: Brand) -> list[tuple[str, dict[str, Any], str, str, str]]:
    """(case, graph, field, step, words the reason contains)."""
    api = {"type": "api"}
    return [
        (
            "unreachable",
            {"trigger": api, "steps": [send("hello", brand), send("orphan", brand)]},
            "graph.steps[1]",
            "orphan",
            "unreachable",
        ),
        (
            "branch without exits",
            {
                "trigger": api,
                "steps": [
                    {"key": "choose", "type": "branch", "branches": [], "otherwise": "hello"},
                    send("hello", brand),
                ],
            },
            "graph.steps[0].branches",
            "choose",
            "has no exits",
        ),
        (
            "wait for an event without a time-out",
            {
                "trigger": api,
                "steps": [
                    {
                        "key": "wait_order",
                        "type": "wait_for_event",
                        "event": {"event": "Order Completed"},
                        "on_event": "hello",
                    },
                    send("hello", brand),
                ],
            },
            "graph.steps[0].timeout",
            "wait_order",
            "without a timeout",
        ),
        (
            "send without a message",
            {"trigger": api, "steps": [{"key": "hello", "type": "send", "channels": ["email"]}]},
            "graph.steps[0].template_id",
            "hello",
            "has no message",
        ),
        (
            "cycle without a wait",
            {
                "trigger": api,
                "steps": [
                    send("one", brand, "two"),
                    {
                        "key": "two",
                        "type": "split",
                        "variants": [
                            {"key": "a", "weight": 50, "next": "one"},
                            {"key": "b", "weight": 50, "next": None},
                        ],
                    },
                ],
            },
            "graph.steps[0]",
            "one",
            "cycle without a wait",
        ),
        (
            "a step that never lets customers out",
            {
                "trigger": api,
                "steps": [send("one", brand, "pause"), _wait("pause", "one")],
            },
            "graph.steps[0]",
            "one",
            "ever leaves the journey",
        ),
        (
            "a template of no such brand part",
            {"trigger": api, "steps": [send("hello", brand, channels=["telegram", "viber"])]},
            "graph.steps[0].template_id",
            "hello",
            "has no",
        ),
    ]


def test_bad_journeys_are_refused_at_publish_naming_the_step_and_nothing_is_stored(
    runtime: Runtime, brand: Brand, client: TestClient
) -> None:
    tenant = brand.tenant
    # the brand's template has every channel: a template without a viber part for the last case
    with runtime.db.scope() as session:
        lean, _ = messaging.save_template(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            kind="message",
            key="lean",
            name="E-mail only",
            parts={"email": {"subject": "Hi", "body": "<mj-text>Hi</mj-text>"}},
            actor="test",
        )
    for n, (case, graph, field, step, words) in enumerate(_bad_graphs(brand)):
        if case.startswith("a template"):
            graph["steps"][0]["template_id"] = lean.id
        created = client.post(
            "/v1/journeys",
            headers=tenant.headers,
            json={"brand_id": tenant.brand_id, "name": f"bad {n}", "graph": graph},
        )
        assert created.status_code == 201, (case, created.text)
        journey_id = created.json()["id"]
        checked = client.post(f"/v1/journeys/{journey_id}/validate", headers=tenant.headers)
        assert checked.status_code == 200
        assert checked.json()["valid"] is False, case
        refused = client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers)
        assert refused.status_code == 422, (case, refused.text)
        body = refused.json()
        assert body["type"].endswith("/validation_failed")
        matching = [e for e in body["errors"] if e["field"] == field and e.get("step") == step]
        assert matching, (case, body["errors"])
        assert words in matching[0]["reason"], (case, matching[0]["reason"])
        assert f"{step!r}" in body["detail"], (case, body["detail"])
        after = client.get(f"/v1/journeys/{journey_id}", headers=tenant.headers).json()
        assert (after["status"], after["live_version"]) == ("draft", None), case
    assert count(runtime, JourneyVersion) == 0


def test_shape_errors_name_the_field_and_nothing_is_saved(
    runtime: Runtime, brand: Brand, client: TestClient
) -> None:
    tenant = brand.tenant
    response = client.post(
        "/v1/journeys",
        headers=tenant.headers,
        json={
            "brand_id": tenant.brand_id,
            "name": "bad shape",
            "graph": {
                "trigger": {"type": "api"},
                "steps": [{"key": "w", "type": "wait", "duration": "P-1D"}],
            },
        },
    )
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.endswith("steps[0].wait.duration") for f in fields), fields
    unknown = client.post(
        "/v1/journeys/check",
        headers=tenant.headers,
        json={
            "brand_id": tenant.brand_id,
            "graph": {"trigger": {"type": "api"}, "steps": [{"key": "x", "type": "teleport"}]},
        },
    )
    assert unknown.status_code == 200
    assert unknown.json()["valid"] is False
    assert unknown.json()["problems"][0]["field"] == "graph.steps[0]"
    assert client.get("/v1/journeys", headers=tenant.headers).json() == []


def test_versions_are_immutable_and_customers_finish_the_version_they_entered(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    first, second = make_customer(), make_customer()
    v1 = {"trigger": {"type": "api"}, "steps": [_wait("pause", "hello"), send("hello", brand)]}
    created = client.post(
        "/v1/journeys",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id, "name": "Versions", "graph": v1},
    ).json()
    journey_id = created["id"]
    published = client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers)
    assert published.status_code == 200, published.text
    assert published.json()["version"] == 1
    assert enter(client, tenant, journey_id, first)["entered"] == 1

    v2 = {
        "trigger": {"type": "api"},
        "steps": [_wait("pause", "hello", "PT3H"), send("hello", brand, channels=["sms"])],
    }
    patched = client.patch(f"/v1/journeys/{journey_id}", headers=tenant.headers, json={"graph": v2})
    assert patched.status_code == 200, patched.text
    # the draft changed; the live version did not
    v1_stored = client.get(f"/v1/journeys/{journey_id}/versions/1", headers=tenant.headers)
    assert v1_stored.json()["graph"]["steps"][0]["duration"] == "PT1H"
    assert journey_row(runtime, journey_id).live_version == 1
    assert (
        client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers).json()["version"]
        == 2
    )
    # publishing an unchanged draft adds nothing
    assert (
        client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers).json()["version"]
        == 2
    )
    assert enter(client, tenant, journey_id, second)["entered"] == 1
    rows = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (rows[first].version, rows[second].version) == (1, 2)

    later(worker, timedelta(hours=1))
    sent = deliveries(runtime)
    assert [(d.customer_id, d.channel, d.source) for d in sent] == [
        (first, "email", f"journey:{journey_id}:v1:step:hello")
    ]
    assert history(runtime, rows[first].id) == [("pause", "waited"), ("hello", "scheduled")]
    later(worker, timedelta(hours=2))
    sent = deliveries(runtime)
    assert [(d.customer_id, d.channel, d.source) for d in sent][1:] == [
        (second, "sms", f"journey:{journey_id}:v2:step:hello")
    ]
    versions = client.get(f"/v1/journeys/{journey_id}/versions", headers=tenant.headers).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["graph"] == v1_stored.json()["graph"]


def test_pause_resume_and_stop(
    runtime: Runtime,
    brand: Brand,
    client: TestClient,
    make_customer: MakeCustomer,
    worker: Worker,
    frozen: None,
) -> None:
    tenant = brand.tenant
    a, b, c = make_customer(), make_customer(), make_customer()
    graph = {"trigger": {"type": "api"}, "steps": [_wait("pause", "hello"), send("hello", brand)]}
    journey_id = client.post(
        "/v1/journeys",
        headers=tenant.headers,
        json={"brand_id": tenant.brand_id, "name": "Lifecycle", "graph": graph},
    ).json()["id"]
    not_live = client.post(
        f"/v1/journeys/{journey_id}/entries",
        headers=tenant.headers,
        json={"entries": [{"customer_id": a}]},
    )
    assert not_live.status_code == 409
    assert count(runtime, JourneyInstance) == 0
    client.post(f"/v1/journeys/{journey_id}/publish", headers=tenant.headers)
    assert enter(client, tenant, journey_id, a)["entered"] == 1
    paused = client.post(f"/v1/journeys/{journey_id}/pause", headers=tenant.headers)
    assert paused.json()["status"] == "paused"
    refused = client.post(
        f"/v1/journeys/{journey_id}/entries",
        headers=tenant.headers,
        json={"entries": [{"customer_id": b}]},
    )
    assert refused.status_code == 409
    # customers inside a paused journey go on
    later(worker, timedelta(hours=1))
    assert [d.customer_id for d in deliveries(runtime)] == [a]
    assert (
        client.post(f"/v1/journeys/{journey_id}/resume", headers=tenant.headers).json()["status"]
        == "live"
    )
    assert enter(client, tenant, journey_id, b, c)["entered"] == 2
    stopped = client.post(f"/v1/journeys/{journey_id}/stop", headers=tenant.headers)
    assert stopped.status_code == 200
    assert stopped.json()["left"] == 2
    assert stopped.json()["journey"]["status"] == "stopped"
    later(worker, timedelta(hours=2))
    assert [d.customer_id for d in deliveries(runtime)] == [a]
    rows = {i.customer_id: i for i in instances(runtime, journey_id)}
    assert (rows[b].status, rows[b].exit_reason) == ("exited", "journey_stopped")
    again = client.post(f"/v1/journeys/{journey_id}/resume", headers=tenant.headers)
    assert again.status_code == 409
