"""HTTP providers against real local HTTP servers that answer like the providers:
requests in each provider's shape, transient errors retried, permanent ones stopped, dead
tokens and numbers marked unusable, signed callbacks read."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from tests.messaging.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    add_provider,
    deliveries,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Identity
from tactful.messaging import service
from tactful.messaging.channels import build_channel
from tactful.messaging.channels.base import Callback, OutboundMessage, Sender, hmac_sha256_hex
from tactful.policy.schemas import ChannelStep


def _message(**kw: Any) -> OutboundMessage:
    base: dict[str, Any] = {
        "delivery_id": 5,
        "channel": "telegram",
        "address": "4242",
        "idempotency_key": "tactful-5-9",
        "sender": Sender("Shop", "Garden Shop"),
        "text": "Your cart is waiting",
    }
    base.update(kw)
    return OutboundMessage(**base)


def _send(kind: str, config: dict[str, Any], message: OutboundMessage) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            adapter = build_channel(
                provider_id=1, kind=kind, config=config, concurrency=1, version="v1", client=client
            )
            return await adapter.send(message)

    return asyncio.run(go())


def test_generic_sms_retries_a_transient_error_with_the_same_idempotency_key(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
) -> None:
    add_provider(
        runtime,
        brand,
        "sms_generic",
        "sms",
        {
            "endpoint": f"{http_peer.url}/send",
            "headers": {"Authorization": "Bearer k"},
            "idempotency_header": "Idempotency-Key",
            "id_field": "data.id",
        },
    )
    http_peer.answers += [(503, {"error": "busy"}), (200, {"data": {"id": "m-1"}})]
    cid = make_customer()
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(session, [request(brand, cid, steps=(ChannelStep("sms"),))])
    with clock.frozen(AT):
        run_jobs(worker)
    [waiting] = deliveries(runtime)
    assert (waiting.status, waiting.attempts, waiting.send_at) == (
        "planned",
        1,
        AT + timedelta(seconds=30),
    )
    assert waiting.error == 'HTTP 503: {"error": "busy"}'
    with clock.frozen(AT + timedelta(seconds=31)), runtime.db.scope() as session:
        assert service.queue_due(session) == 1
    with clock.frozen(AT + timedelta(seconds=31)):
        run_jobs(worker)
    [done] = deliveries(runtime)
    assert (done.status, done.attempts, done.provider_message_id) == ("sent", 2, "m-1")
    first, second = http_peer.requests
    assert (
        first.json()
        == second.json()
        == {
            "to": "+79120000001",
            "from": "Shop",
            "text": ", your cart is waiting",
            "reference": f"tactful-{done.id}-{done.decision_id}",
            "callback_url": f"http://127.0.0.1:8000/v1/messaging/webhooks/{done.provider_id}",
        }
    )
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.headers["authorization"] == "Bearer k"


def test_fcm_push_and_a_dead_token(
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    worker: Worker,
    http_peer: HttpPeer,
) -> None:
    add_provider(
        runtime,
        brand,
        "fcm",
        "push",
        {"endpoint": http_peer.url, "project_id": "garden", "access_token": "ya29"},
        address="garden-app",
    )
    unregistered = {
        "error": {
            "code": 404,
            "status": "NOT_FOUND",
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED",
                }
            ],
        }
    }

    def fcm(req: Any) -> tuple[int, Any]:
        if req.json()["message"]["token"] == "token-2":
            return 404, unregistered
        return 200, {"name": "projects/garden/messages/0:1"}

    http_peer.respond = fcm
    ok, dead = make_customer(), make_customer()
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(
            session,
            [
                request(
                    brand,
                    cid,
                    steps=(ChannelStep("push"),),
                    message_class="transactional",
                    topic=None,
                )
                for cid in (ok, dead)
            ],
        )
    with clock.frozen(AT):
        run_jobs(worker)
    first, second = deliveries(runtime)
    assert (first.status, first.provider_message_id) == ("sent", "projects/garden/messages/0:1")
    assert (second.status, second.error) == ("failed", "FCM UNREGISTERED")
    [sent] = [r for r in http_peer.requests if r.json()["message"]["token"] == "token-1"]
    assert sent.path == "/v1/projects/garden/messages:send"
    assert sent.headers["authorization"] == "Bearer ya29"
    assert sent.json() == {
        "message": {
            "token": "token-1",
            "notification": {"title": "Your cart", "body": "2 items wait"},
            "data": {"delivery_id": str(first.id)},
        }
    }
    with runtime.db.scope(readonly=True) as session:
        token = session.scalar(select(Identity).where(Identity.value == "token-2"))
        assert token is not None
        assert token.status == "invalid"


def test_viber_send_and_signed_seen_callback() -> None:
    config = {"auth_token": "viber-secret", "endpoint": "http://127.0.0.1:9"}
    with HttpPeer() as peer:
        peer.answers.append((200, {"status": 0, "status_message": "ok", "message_token": 77}))
        result = _send(
            "viber",
            {**config, "endpoint": peer.url},
            _message(channel="viber", address="+79120000001"),
        )
        assert (result.outcome, result.provider_message_id) == ("sent", "77")
        [sent] = peer.requests
        assert sent.path == "/pa/send_message"
        assert sent.headers["x-viber-auth-token"] == "viber-secret"
        assert sent.json() == {
            "receiver": "+79120000001",
            "min_api_version": 1,
            "sender": {"name": "Garden Shop"},
            "tracking_data": "tactful-5-9",
            "type": "text",
            "text": "Your cart is waiting",
        }
        peer.answers.append((200, {"status": 6, "status_message": "notSubscribed"}))
        refused = _send("viber", {**config, "endpoint": peer.url}, _message(channel="viber"))
        assert (refused.outcome, refused.contact_status) == ("permanent", "invalid")
    adapter = build_channel(
        provider_id=1, kind="viber", config=config, concurrency=1, version="v1", client=None
    )
    body = json.dumps({"event": "seen", "timestamp": 1, "message_token": 77}).encode()
    good = Callback(
        "http://x", {"x-viber-content-signature": hmac_sha256_hex("viber-secret", body)}, body
    )
    assert adapter.verify_callback(good)
    assert not adapter.verify_callback(
        Callback("http://x", {"x-viber-content-signature": "0"}, body)
    )
    [update] = adapter.parse_callback(good)
    assert (update.status, update.provider_message_id) == ("read", "77")


def test_telegram_and_outgoing_webhook_shapes() -> None:
    with HttpPeer() as peer:
        peer.answers += [
            (200, {"ok": True, "result": {"message_id": 901}}),
            (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}),
            (
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests",
                    "parameters": {"retry_after": 7},
                },
            ),
            (202, {}),
        ]
        config = {"endpoint": peer.url, "bot_token": "123:abc"}
        sent = _send("telegram", config, _message())
        blocked = _send("telegram", config, _message())
        slow = _send("telegram", config, _message())
        assert (sent.outcome, sent.provider_message_id) == ("sent", "901")
        assert (blocked.outcome, blocked.contact_status) == ("permanent", "invalid")
        assert (slow.outcome, slow.retry_after) == ("transient", 7.0)
        assert peer.requests[0].path == "/bot123:abc/sendMessage"
        assert peer.requests[0].json() == {"chat_id": "4242", "text": "Your cart is waiting"}
        hook = _send(
            "webhook",
            {"url": f"{peer.url}/hook", "secret": "s3"},
            _message(channel="webhook", data={"order": "A-1"}),
        )
        assert hook.outcome == "sent"
        call = peer.requests[-1]
        assert call.path == "/hook"
        assert call.headers["idempotency-key"] == "tactful-5-9"
        assert call.headers["x-tactful-signature"] == hmac_sha256_hex("s3", call.body)
        assert call.json()["data"] == {"order": "A-1"}
