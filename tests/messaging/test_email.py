"""E-mail end to end against a real SMTP server: what arrives (headers, HTML and text parts),
the unsubscribe link that works when followed, opens, clicks and the timeline."""

from __future__ import annotations

import importlib
import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.messaging.conftest import (
    AT,
    Brand,
    MakeCustomer,
    SmtpSink,
    deliveries,
    request,
    run_jobs,
    send_transactional,
)

from tactful.core import clock
from tactful.core.jobs.models import Job
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Consent, Customer
from tactful.events.models import InboxEvent
from tactful.messaging import service

# the module (``service.dispatch`` is its function)
DISPATCH = importlib.import_module("tactful.messaging.service.dispatch")


def _name(runtime: Runtime, cid: int, first_name: str) -> None:
    with runtime.db.scope() as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        customer.first_name = first_name


def _events(runtime: Runtime, cid: int) -> list[tuple[str, dict[str, object]]]:
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(
            select(InboxEvent).where(InboxEvent.customer_id == cid).order_by(InboxEvent.seq)
        )
        return [(str(r.name), dict(r.properties)) for r in rows]


def test_email_arrives_with_headers_parts_and_a_working_unsubscribe(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
) -> None:
    sink, _port = smtp
    cid = make_customer()
    _name(runtime, cid, "Anna")
    with clock.frozen(AT), runtime.db.scope() as session:
        [outcome] = service.send(session, [request(brand, cid)])
    assert (outcome.outcome, outcome.channel, outcome.cost) == ("scheduled", "email", 10)
    with clock.frozen(AT):
        run_jobs(worker)
    [delivery] = deliveries(runtime)
    assert delivery.error is None
    assert (delivery.status, delivery.subject, delivery.attempts) == (
        "sent",
        "Anna, your cart",
        1,
    )
    [(mail_from, rcpt, _raw)] = sink.messages
    assert (mail_from, rcpt) == ("news@shop.example", ["p1@example.com"])
    [mail] = sink.parsed()
    assert mail["From"] == "Garden Shop <news@shop.example>"
    assert mail["To"] == "p1@example.com"
    assert mail["Subject"] == "Anna, your cart"
    assert mail["Message-ID"] == f"<tactful-{delivery.id}-{delivery.decision_id}@shop.example>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(
        r"<(http://127\.0\.0\.1:8000/u/[^>]+)>", mail["List-Unsubscribe"].strip()
    )
    assert unsubscribe is not None, mail["List-Unsubscribe"]
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    text_body, html_body = text.get_content(), html.get_content()
    assert "Hello Anna, your cart is waiting." in text_body
    assert "Rake: 990 ₽" in text_body
    assert "Hose: 1490 ₽" in text_body
    assert "Main brand" in text_body  # the master layout's header
    assert "Hello Anna, your cart is waiting." in html_body
    # web links go through the signed click redirect; the open pixel is there
    assert "https://shop.example/cart" not in html_body
    clicks = re.findall(r'href="(http://127\.0\.0\.1:8000/t/c/[^"]+)"', html_body)
    assert len(clicks) == 1
    pixel = re.search(r'src="(http://127\.0\.0\.1:8000/t/o/[^"]+)"', html_body)
    assert pixel is not None
    # the footer block's unsubscribe link is the same signed link as the header's
    assert f'href="{unsubscribe.group(1)}"' in html_body

    opened = client.get(urlsplit(pixel.group(1)).path)
    assert (opened.status_code, opened.headers["content-type"]) == (200, "image/gif")
    followed = client.get(urlsplit(clicks[0]).path, follow_redirects=False)
    assert (followed.status_code, followed.headers["location"]) == (
        302,
        f"https://shop.example/cart?c={cid}",
    )

    # a person follows the unsubscribe link: a page with one button, which unsubscribes
    path = urlsplit(unsubscribe.group(1)).path
    page = client.get(path)
    assert page.status_code == 200
    assert "Stop receiving “promotions” messages from Main brand?" in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    with runtime.db.scope(readonly=True) as session:
        assert session.scalar(select(Consent).where(Consent.kind == "topic")) is None
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert "You are unsubscribed" in done.text
    with runtime.db.scope(readonly=True) as session:
        consent = session.scalar(select(Consent).where(Consent.kind == "topic"))
        assert consent is not None
        assert (consent.topic, consent.status, consent.source, consent.brand_scope) == (
            "promotions",
            "revoked",
            "unsubscribe_link",
            f"b{brand.tenant.brand_id}",
        )
    run_jobs(worker)
    names = [name for name, _ in _events(runtime, cid)]
    assert names.count("Unsubscribed") == 1
    sent = dict(_events(runtime, cid))["Message Sent"]
    assert sent == {
        "delivery_id": delivery.id,
        "campaign_id": 7,
        "journey_id": None,
        "channel": "email",
        "topic": "promotions",
        "template_id": brand.template_id,
        "brand_id": brand.tenant.brand_id,
        "source": "campaign:7",
    }
    assert {"Message Sent", "Message Opened", "Message Clicked"} <= set(names)
    [after] = deliveries(runtime)
    assert after.status == "clicked"

    # the next promotion is refused by the policy: nothing more reaches the server
    with clock.frozen(AT), runtime.db.scope() as session:
        [again] = service.send(session, [request(brand, cid, source="campaign:8")])
    assert (again.outcome, again.reason) == ("suppressed", "unsubscribed_topic")
    run_jobs(worker)
    assert len(sink.messages) == 1

    timeline = client.get(f"/v1/customers/{cid}/timeline", headers=brand.tenant.headers).json()
    messages = [item for item in timeline if item["kind"] == "message"]
    assert [(m["details"]["status"], m["details"]["cost"]) for m in messages] == [
        ("suppressed", 0),
        ("clicked", 10),
    ]
    assert messages[0]["details"]["reason"] == "unsubscribed_topic"


def test_transient_failure_retries_and_permanent_bounce_marks_the_contact(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, _port = smtp
    cid = make_customer()

    async def refuse(
        server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        return "550 5.1.1 no such user"

    sink.handle_RCPT = refuse  # type: ignore[attr-defined]
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid, message_class="transactional", topic=None)])
    with clock.frozen(AT):
        run_jobs(worker)
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.reason) == ("bounced", "bounced")
    assert delivery.error is not None
    assert "550" in delivery.error
    assert sink.messages == []
    with runtime.db.scope(readonly=True) as session:
        from tactful.customers.models import Identity

        email = session.scalar(select(Identity).where(Identity.value == "p1@example.com"))
        assert email is not None
        assert email.status == "bounced"


def test_a_message_that_cannot_render_fails_alone_and_reaches_no_server(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    """A message whose template fails for its recipient is failed with the reason before
    anything is submitted; the others of the batch go out."""
    sink, _port = smtp
    with runtime.db.scope() as session:
        template, _ = service.save_template(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            kind="message",
            key="share",
            name="Share",
            layout_id=brand.layout_id,
            parts={
                "email": {
                    "subject": "{{ customer.first_name }}, your share",
                    "body": "<mj-section><mj-column><mj-text>"
                    "{{ 100 | divided_by: event.count }} each"
                    "</mj-text></mj-column></mj-section>",
                }
            },
            actor="test",
        )
    people = [make_customer() for _ in range(3)]
    for cid, name in zip(people, ("Anna", "Boris", "Vera"), strict=True):
        _name(runtime, cid, name)
    counts = {people[0]: 4, people[1]: 0, people[2]: 5}
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(
            session,
            [
                request(
                    brand,
                    cid,
                    template_id=template.id,
                    message_class="transactional",
                    topic=None,
                    context={"event": {"count": counts[cid]}},
                )
                for cid in people
            ],
        )
    with clock.frozen(AT):
        run_jobs(worker)
    found = {d.customer_id: d for d in deliveries(runtime)}
    assert [(found[cid].status, found[cid].subject, found[cid].attempts) for cid in people] == [
        ("sent", "Anna, your share", 1),
        ("failed", None, 0),
        ("sent", "Vera, your share", 1),
    ]
    assert found[people[1]].reason == "provider_error"
    assert (found[people[1]].error or "").startswith(
        "rendering failed: divided_by: can't divide by 0"
    )
    texts = {
        rcpt[0]: str(mail.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
        for (_from, rcpt, _raw), mail in zip(sink.messages, sink.parsed(), strict=True)
    }
    assert sorted(texts) == ["p1@example.com", "p3@example.com"]
    assert ("25 each" in texts["p1@example.com"], "20 each" in texts["p3@example.com"]) == (
        True,
        True,
    )
    names = {cid: [name for name, _ in _events(runtime, cid)] for cid in people}
    assert [names[cid].count("Message Sent") for cid in people] == [1, 0, 1]


def test_a_job_of_several_groups_sends_each_message_once(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job larger than a group: each group is prepared while the one before is on the
    wire and recorded after; every message arrives once and is recorded as sent."""
    monkeypatch.setattr(DISPATCH, "GROUP_PER_CONNECTION", 1)  # groups of MIN_GROUP = 16
    sink, _port = smtp
    people = [make_customer() for _ in range(40)]
    send_transactional(runtime, brand, people)
    with clock.frozen(AT):
        assert run_jobs(worker) >= 1
    with runtime.db.scope(readonly=True) as session:
        jobs = session.scalars(select(Job).where(Job.name == service.DISPATCH_JOB)).all()
    assert [len(job.payload["ids"]) for job in jobs] == [40]  # one job: three groups
    found = deliveries(runtime)
    assert sorted(d.customer_id for d in found) == sorted(people)
    assert {(d.status, d.attempts) for d in found} == {("sent", 1)}
    received = sorted(rcpt[0] for _from, rcpt, _raw in sink.messages)
    assert received == sorted(str(d.address) for d in found)
    assert len(set(received)) == 40
    with runtime.db.scope(readonly=True) as session:
        sent_events = session.scalars(
            select(InboxEvent.customer_id).where(InboxEvent.name == "Message Sent")
        ).all()
    assert sorted(sent_events) == sorted(people)
