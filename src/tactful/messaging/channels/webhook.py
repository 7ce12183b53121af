"""Outgoing webhook: the message as signed JSON to a configured URL.

The body is ``{"delivery_id", "idempotency_key", "address", "subject", "text", "data"}``;
``Idempotency-Key`` lets the receiver drop a repeat, and ``X-Tactful-Signature`` is
HMAC-SHA256 (hex) of the raw body keyed by the configured secret.
"""

from __future__ import annotations

import orjson

from tactful.messaging.channels.base import (
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    hmac_sha256_hex,
    http_failure,
)


class WebhookChannel(HttpChannel):
    """A POST to the receiver's URL; safe to repeat thanks to the idempotency key."""

    channel = "webhook"
    kind = "webhook"
    capabilities = Capabilities(reports_delivery=False, reports_reads=False, idempotency_keys=True)

    async def send(self, message: OutboundMessage) -> SendResult:
        body = orjson.dumps(
            {
                "delivery_id": message.delivery_id,
                "idempotency_key": message.idempotency_key,
                "address": message.address,
                "subject": message.subject,
                "text": message.text,
                "data": dict(message.data),
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
        }
        if self.config.get("secret"):
            headers["X-Tactful-Signature"] = hmac_sha256_hex(str(self.config["secret"]), body)
        url = str(self.config.get("url") or message.address)
        response = await self.post(url, content=body, headers=headers)
        if isinstance(response, SendResult):
            return response
        if 200 <= response.status_code < 300:
            return SendResult.sent(response.headers.get("x-request-id"))
        return http_failure(response)
