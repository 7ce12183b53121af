"""Provider status webhooks: a bad signature gets 401 and changes nothing; signed reports
move deliveries on and update the contact and consent at once."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.messaging.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    deliveries,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Consent, Identity
from tactful.events.models import InboxEvent
from tactful.messaging import service
from tactful.messaging.channels.base import hmac_sha256_hex
from tactful.messaging.channels.twilio import twilio_signature
from tactful.messaging.models import DeliveryEvent
from tactful.policy.schemas import ChannelStep

SECRET = "whsec-test"


def _sent_email(runtime: Runtime, brand: Brand, cid: int, worker: Worker) -> int:
    with runtime.db.scope() as session:
        provider = session.get(
            service.list_providers.__globals__["MessageProvider"], brand.provider_id
        )
        assert provider is not None
        provider.config = {**provider.config, "webhook_secret": SECRET}
    with clock.frozen(AT), runtime.db.scope() as session:
        [outcome] = service.send(session, [request(brand, cid)])
    with clock.frozen(AT):
        run_jobs(worker)
    return outcome.delivery_id


def _snapshot(runtime: Runtime) -> tuple[object, ...]:
    with runtime.db.scope(readonly=True) as session:
        return (
            [(d.id, d.status, d.delivered_at, d.error) for d in deliveries(runtime)],
            session.scalar(select(func.count()).select_from(DeliveryEvent)),
            session.scalar(select(func.count()).select_from(InboxEvent)),
            [(i.value, i.status) for i in session.scalars(select(Identity).order_by(Identity.id))],
            session.scalar(select(func.count()).select_from(Consent)),
        )


def test_a_bad_signature_gets_401_and_changes_nothing(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
) -> None:
    cid = make_customer()
    delivery_id = _sent_email(runtime, brand, cid, worker)
    body = json.dumps(
        {"reference": f"tactful-{delivery_id}-1", "status": "bounced", "permanent": True}
    ).encode()
    before = _snapshot(runtime)
    url = f"/v1/messaging/webhooks/{brand.provider_id}"
    for headers in (
        {"X-Signature": hmac_sha256_hex("wrong-secret", body)},
        {"X-Signature": "00" * 32},
        {},
    ):
        response = client.post(url, content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["title"] == "Unauthorized"
    assert _snapshot(runtime) == before


def test_signed_bounce_and_complaint_update_contact_and_consent_at_once(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
) -> None:
    first, second = make_customer(), make_customer()
    bounced_id = _sent_email(runtime, brand, first, worker)
    complained_id = _sent_email(runtime, brand, second, worker)
    [bounced, complained] = deliveries(runtime)
    body = json.dumps(
        [
            {
                "reference": f"tactful-{bounced_id}-{bounced.decision_id}",
                "status": "bounced",
                "permanent": True,
                "reason": "550 5.1.1 user unknown",
                "event_id": "e1",
            },
            {
                "reference": f"tactful-{complained_id}-{complained.decision_id}",
                "status": "complained",
                "event_id": "e2",
            },
        ]
    ).encode()
    url = f"/v1/messaging/webhooks/{brand.provider_id}"
    headers = {"X-Signature": hmac_sha256_hex(SECRET, body)}
    assert client.post(url, content=body, headers=headers).json() == {"applied": 2}
    assert client.post(url, content=body, headers=headers).json() == {"applied": 0}
    first_row, second_row = deliveries(runtime)
    assert (first_row.status, second_row.status) == ("bounced", "sent")
    with runtime.db.scope(readonly=True) as session:
        contacts = {
            i.value: i.status
            for i in session.scalars(select(Identity).where(Identity.kind == "email"))
        }
        assert (contacts["p1@example.com"], contacts["p2@example.com"]) == ("bounced", "complained")
        revoked = session.scalar(
            select(Consent).where(
                Consent.customer_id == second,
                Consent.kind == "advertising",
                Consent.channel == "email",
            )
        )
        assert revoked is not None
        assert (revoked.status, revoked.source) == ("revoked", "complaint")
        wanted = ["Message Bounced", "Message Complained"]
        found = session.scalars(select(InboxEvent.name).where(InboxEvent.name.in_(wanted)))
        names = sorted(str(n) for n in found)
    assert names == ["Message Bounced", "Message Complained"]


def test_twilio_status_callback_with_its_signature(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    client: TestClient,
    http_peer: HttpPeer,
) -> None:
    with runtime.db.scope() as session:
        provider = service.create_provider(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            kind="twilio",
            name="twilio",
            config={"endpoint": http_peer.url, "account_sid": "AC123", "auth_token": "tok"},
            actor="test",
        )
        service.create_sender(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            channel="sms",
            provider_id=provider.id,
            address="+15005550006",
            actor="test",
        )
    http_peer.answers.append((201, {"sid": "SM42", "status": "queued"}))
    cid = make_customer()
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid, steps=(ChannelStep("sms"),))])
    with clock.frozen(AT):
        run_jobs(worker)
    [sent] = http_peer.requests
    assert sent.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert sent.headers["authorization"] == "Basic QUMxMjM6dG9r"
    form = dict(p.split("=", 1) for p in sent.body.decode().split("&"))
    assert (form["To"], form["From"], form["Body"]) == (
        "%2B79120000001",
        "%2B15005550006",
        "%2C+your+cart+is+waiting",
    )
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.provider_message_id) == ("sent", "SM42")
    params = {"MessageSid": "SM42", "MessageStatus": "delivered", "To": "+79120000001"}
    path = f"/v1/messaging/webhooks/{provider.id}"
    signature = twilio_signature("tok", f"http://127.0.0.1:8000{path}", params)
    bad = client.post(path, data=params, headers={"X-Twilio-Signature": "AAAA"})
    assert bad.status_code == 401
    good = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert good.json() == {"applied": 1}
    [after] = deliveries(runtime)
    assert after.status == "delivered"
    assert after.delivered_at is not None
