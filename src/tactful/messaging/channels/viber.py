"""Viber business messages in the shape of Viber's REST messaging API.

``POST {endpoint}/pa/send_message`` with ``X-Viber-Auth-Token`` and ``{"receiver", "sender":
{"name"}, "type": "text"|"picture", "text", "media", "tracking_data"}``; the answer has
``status`` (0 is ok) and ``message_token``. Callbacks (``delivered``, ``seen``, ``failed``,
``unsubscribed``) are signed in ``X-Viber-Content-Signature``: HMAC-SHA256 (hex) of the raw
body keyed by the auth token.
"""

from __future__ import annotations

from typing import Any

import orjson

from tactful.messaging.channels.base import (
    BLOCKED,
    DELIVERED,
    FAILED,
    READ,
    Callback,
    CallbackRejected,
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    StatusUpdate,
    hmac_sha256_hex,
    http_failure,
    same,
)

DEFAULT_ENDPOINT = "https://chatapi.viber.com"
# status codes of the answer: receiver not registered / not subscribed / rate limited
NOT_REACHABLE = (5, 6)
RATE_LIMITED = (12,)
EVENTS = {"delivered": DELIVERED, "seen": READ, "failed": FAILED, "unsubscribed": BLOCKED}


class ViberChannel(HttpChannel):
    """Viber: reports delivery and reads; no idempotency keys."""

    channel = "viber"
    kind = "viber"
    capabilities = Capabilities(reports_delivery=True, reports_reads=True, idempotency_keys=False)

    async def send(self, message: OutboundMessage) -> SendResult:
        body: dict[str, Any] = {
            "receiver": message.address,
            "min_api_version": 1,
            "sender": {"name": (message.sender.name or message.sender.address)[:28]}
            if message.sender
            else {"name": "Tactful"},
            "tracking_data": message.idempotency_key,
            "type": "text",
            "text": message.text,
        }
        if message.data.get("image"):
            body.update(type="picture", media=str(message.data["image"]))
        headers = {"X-Viber-Auth-Token": str(self.config["auth_token"])}
        url = f"{self.endpoint(DEFAULT_ENDPOINT)}/pa/send_message"
        response = await self.post(url, json=body, headers=headers)
        if isinstance(response, SendResult):
            return response
        if response.status_code != 200:
            return http_failure(response)
        answer = response.json()
        status = int(answer.get("status", -1))
        if status == 0:
            return SendResult.sent(str(answer.get("message_token")))
        text = f"Viber status {status}: {answer.get('status_message')}"
        if status in RATE_LIMITED:
            return SendResult.transient(text)
        if status in NOT_REACHABLE:
            return SendResult.permanent(text, contact_status="invalid")
        return SendResult.permanent(text)

    def verify_callback(self, callback: Callback) -> bool:
        expected = hmac_sha256_hex(str(self.config["auth_token"]), callback.body)
        return same(callback.headers.get("x-viber-content-signature"), expected)

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        try:
            event = orjson.loads(callback.body)
        except orjson.JSONDecodeError as exc:
            raise CallbackRejected(f"the body is not JSON: {exc}") from exc
        status = EVENTS.get(str(event.get("event")))
        if status is None:
            return []
        token = event.get("message_token")
        return [
            StatusUpdate(
                status=status,
                provider_message_id=None if token is None else str(token),
                address=event.get("user_id"),
                reason=event.get("desc"),
                event_id=f"{event.get('event')}:{token}:{event.get('timestamp')}",
            )
        ]
