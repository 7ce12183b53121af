"""Call tasks (the list with the customer's context, outcomes as events, a cascade falling
through on no answer), the preference centre pages, test sends and the rate limiters."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
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
from tactful.customers.models import Consent, Customer
from tactful.customers.topics import create_topic
from tactful.events.models import InboxEvent
from tactful.messaging import jobs, service
from tactful.messaging.channels.base import RateLimiter
from tactful.messaging.models import CallTask, RateBucket
from tactful.messaging.service.limits import SharedRateLimiter, limiter_for
from tactful.messaging.service.tracking import links_for
from tactful.policy.schemas import ChannelStep


def _named(runtime: Runtime, cid: int, name: str) -> None:
    with runtime.db.scope() as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        customer.first_name = name


def _tasks(runtime: Runtime) -> list[tuple[int | None, str, str | None]]:
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(select(CallTask).order_by(CallTask.id))
        return [(t.delivery_id, t.status, t.outcome) for t in rows]


def test_call_tasks_list_outcomes_and_a_cascade_after_no_answer(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
    client: TestClient,
) -> None:
    add_provider(runtime, brand, "call", "call", {}, address="desk")
    add_provider(runtime, brand, "sms_generic", "sms", {"endpoint": f"{http_peer.url}/sms"})
    anna, boris = make_customer(), make_customer()
    _named(runtime, anna, "Anna")
    _named(runtime, boris, "Boris")
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            service.send(
                session,
                [
                    request(
                        brand,
                        anna,
                        steps=(ChannelStep("call", timeout=timedelta(hours=4)), ChannelStep("sms")),
                        message_class="service",
                    ),
                    request(brand, boris, steps=(ChannelStep("call"),), message_class="service"),
                ],
            )
        run_jobs(worker)
    headers = brand.tenant.headers
    listed = client.get("/v1/call-tasks", headers=headers)
    assert listed.status_code == 200
    tasks = listed.json()
    assert [(t["phone"], t["script"], t["status"]) for t in tasks] == [
        ("+79120000001", "Call Anna about the cart", "open"),
        ("+79120000002", "Call Boris about the cart", "open"),
    ]
    assert tasks[0]["context"]["customer"]["first_name"] == "Anna"
    assert tasks[0]["context"]["event"]["items"][0] == {"name": "Rake", "price": 990}
    anna_task, boris_task = tasks[0]["id"], tasks[1]["id"]

    # refused input changes nothing
    for path, body, status, field in (
        (f"/v1/call-tasks/{boris_task}/outcome", {"outcome": "maybe"}, 422, "outcome"),
        ("/v1/call-tasks/999999/outcome", {"outcome": "reached"}, 404, "task_id"),
    ):
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert field in answer.text
    assert {s for _d, s, _o in _tasks(runtime)} == {"open"}

    with clock.frozen(AT + timedelta(minutes=30)):
        done = client.post(
            f"/v1/call-tasks/{boris_task}/outcome",
            json={"outcome": "reached", "note": "will buy"},
            headers=headers,
        )
        assert done.status_code == 200, done.text
        assert (done.json()["outcome"], done.json()["status"]) == ("reached", "done")
        again = client.post(
            f"/v1/call-tasks/{boris_task}/outcome", json={"outcome": "refused"}, headers=headers
        )
        assert again.status_code == 409
        client.post(
            f"/v1/call-tasks/{anna_task}/outcome", json={"outcome": "no_answer"}, headers=headers
        )
    rows = deliveries(runtime)
    assert [(d.customer_id, d.channel, d.status) for d in rows] == [
        (anna, "call", "failed"),
        (boris, "call", "delivered"),
    ]
    assert [o for _d, _s, o in _tasks(runtime)] == ["no_answer", "reached"]
    with runtime.db.scope(readonly=True) as session:
        events = session.scalars(
            select(InboxEvent).where(InboxEvent.name == "Call Task Completed")
        ).all()
        assert sorted((e.customer_id, e.properties["outcome"]) for e in events) == [
            (anna, "no_answer"),
            (boris, "reached"),
        ]

    # no answer falls through to the cascade's next step at once
    with clock.frozen(AT + timedelta(minutes=31)):
        with runtime.db.scope() as session:
            jobs.cascades(MonitorContext(runtime, session, clock.now()))
        run_jobs(worker)
    assert [(d.channel, d.status) for d in deliveries(runtime)][2:] == [("sms", "sent")]
    [sms] = http_peer.requests
    assert sms.json()["to"] == "+79120000001"


def test_the_preference_centre_shows_and_saves_topics_and_channels(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer, client: TestClient
) -> None:
    cid = make_customer()
    with runtime.db.scope() as session:
        create_topic(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            key="news",
            name="News",
        )
    token = links_for(
        runtime.signer,
        "http://x",
        delivery_id=0,
        workspace_id=brand.tenant.workspace_id,
        brand_id=brand.tenant.brand_id,
        customer_id=cid,
    ).preferences.rsplit("/", 1)[1]
    page = client.get(f"/p/{token}")
    assert page.status_code == 200
    ticked = set(re.findall(r'name="(\w+)" value="(\w+)" checked', page.text))
    assert ticked == {
        ("topic", "promotions"),
        ("topic", "news"),
        ("channel", "email"),
        ("channel", "sms"),
        ("channel", "push"),
        ("channel", "viber"),
    }
    assert 'value="telegram">' in page.text

    def consents() -> set[tuple[str, str, str, str]]:
        with runtime.db.scope(readonly=True) as session:
            rows = session.scalars(select(Consent).where(Consent.customer_id == cid))
            return {
                (c.kind, c.channel, c.topic, c.status) for c in rows if c.kind != "personal_data"
            }

    before = consents()
    for bad, status in (
        ({"channel": ["fax"]}, 422),
        ({"topic": ["nope"]}, 422),
    ):
        assert client.post(f"/p/{token}", data=bad).status_code == status
    assert client.post(f"/p/{token[:-1]}x", data={"channel": ["email"]}).status_code == 401
    assert client.get(f"/p/{token[:-1]}x").status_code == 401
    assert consents() == before

    saved = client.post(f"/p/{token}", data={"topic": ["news"], "channel": ["email", "telegram"]})
    assert saved.status_code == 200
    assert "Saved." in saved.text
    assert set(re.findall(r'name="(\w+)" value="(\w+)" checked', saved.text)) == {
        ("topic", "news"),
        ("channel", "email"),
        ("channel", "telegram"),
    }
    assert consents() == {
        ("topic", "*", "promotions", "revoked"),
        ("advertising", "email", "", "granted"),
        ("advertising", "sms", "", "revoked"),
        ("advertising", "push", "", "revoked"),
        ("advertising", "viber", "", "revoked"),
        ("advertising", "telegram", "", "granted"),
    }
    # the policy honours it from now on
    with clock.frozen(AT), runtime.db.scope() as session:
        [promo] = service.send(session, [request(brand, cid)])
        [sms] = service.send(
            session, [request(brand, cid, steps=(ChannelStep("sms"),), topic="news")]
        )
    assert (promo.outcome, promo.reason) == ("suppressed", "unsubscribed_topic")
    assert (sms.outcome, sms.reason) == ("suppressed", "no_advertising_consent")


def test_a_test_send_goes_to_test_recipients_only(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
) -> None:
    sink, _port = smtp
    regular = make_customer()
    body = {"brand_id": brand.tenant.brand_id, "template_id": brand.template_id}
    headers = brand.tenant.headers
    none_yet = client.post("/v1/messages/test-send", json=body, headers=headers)
    assert none_yet.status_code == 422
    assert "customer_ids" in none_yet.text
    tester = make_customer(is_test=True)
    sent = client.post("/v1/messages/test-send", json=body, headers=headers)
    assert sent.status_code == 201, sent.text
    assert [(o["outcome"], o["channel"]) for o in sent.json()] == [("scheduled", "email")]
    refused = client.post(
        "/v1/messages/test-send", json={**body, "customer_ids": [regular]}, headers=headers
    )
    assert [(o["outcome"], o["reason"]) for o in refused.json()] == [
        ("suppressed", "not_test_recipient")
    ]
    run_jobs(worker)
    assert [rcpt for _f, rcpt, _r in sink.messages] == [["p2@example.com"]]
    assert [(d.customer_id, d.status, d.is_test) for d in deliveries(runtime)] == [
        (tester, "sent", True),
        (regular, "suppressed", True),
    ]


def test_the_process_token_bucket_hands_out_its_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(5, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):  # a full bucket: the burst goes at once
        limiter.acquire_blocking()
    assert slept == []
    for _ in range(10):  # then one token every fifth of a second
        limiter.acquire_blocking()
    assert len(slept) == 10
    assert abs(sum(slept) - 2.0) < 1e-9
    assert abs(now[0] - 102.0) < 1e-9


def test_the_shared_bucket_holds_across_processes(runtime: Runtime, brand: Brand) -> None:
    if runtime.db.dialect != "postgresql":
        # one process by design on SQLite: the bucket lives in the process
        assert isinstance(limiter_for(runtime, brand.provider_id, 50), RateLimiter)
        return
    assert isinstance(limiter_for(runtime, brand.provider_id, 50), SharedRateLimiter)
    # two "processes" (limiters with their own local tokens) share a 40-token bucket that
    # refills at 40 a second: however they draw, no more than 40 (plus what the time that
    # passed refills) come out
    first = SharedRateLimiter(runtime, brand.provider_id, 40)
    second = SharedRateLimiter(runtime, brand.provider_id, 40)
    started = _database_now(runtime)
    taken = 0
    waits: list[float] = []
    for limiter in (first, second, first, second) * 30:
        wait = limiter.try_take()
        if wait:
            waits.append(wait)
        else:
            taken += 1
    elapsed = (_database_now(runtime) - started).total_seconds()
    # tokens a process took but has not spent yet are not counted as taken above
    assert 40 - 2 * first.chunk <= taken <= 40 + int(40 * elapsed) + 1
    assert waits
    assert all(0 < w <= 1 / 40 + 1e-6 for w in waits)
    with runtime.db.scope(readonly=True) as session:
        bucket = session.get(RateBucket, brand.provider_id)
        assert bucket is not None
        assert 0 <= bucket.tokens < 1


def _database_now(runtime: Runtime) -> Any:
    with runtime.db.scope(readonly=True) as session:
        return session.scalar(select(func.statement_timestamp()))
