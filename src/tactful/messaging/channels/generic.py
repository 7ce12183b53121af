"""A generic, configurable HTTP SMS API and the generic signed status callback.

The request's shape is configuration: endpoint, JSON or form body, the provider's names for
the fields, extra headers (credentials), an optional idempotency-key header and where the
message id is in the answer. Status callbacks are JSON (one object or a list) signed with
HMAC-SHA256 of the raw body in a configurable header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tactful.messaging.channels.base import (
    BOUNCED,
    COMPLAINED,
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

DEFAULT_FIELDS = {
    "to": "to",
    "from": "from",
    "text": "text",
    "reference": "reference",
    "callback": "callback_url",
}
DEFAULT_SIGNATURE_HEADER = "x-signature"
KNOWN_STATUSES = (DELIVERED, READ, FAILED, BOUNCED, COMPLAINED)


def verify_generic_callback(config: Mapping[str, Any], callback: Callback) -> bool:
    """HMAC-SHA256 (hex) of the raw body with the provider's webhook secret."""
    secret = config.get("webhook_secret")
    if not secret:
        return False
    header = str(config.get("signature_header") or DEFAULT_SIGNATURE_HEADER).lower()
    return same(callback.headers.get(header), hmac_sha256_hex(str(secret), callback.body))


def _lookup(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, dict):
            document = document.get(part)
        else:
            return None
    return document


def parse_generic_callback(
    callback: Callback, status_map: Mapping[str, str] | None = None
) -> list[StatusUpdate]:
    """``{"id"|"message_id", "reference", "status", "permanent", "reason", "address",
    "event_id"}``, or a list of them."""
    try:
        document = orjson.loads(callback.body)
    except orjson.JSONDecodeError as exc:
        raise CallbackRejected(f"the body is not JSON: {exc}") from exc
    items = document if isinstance(document, list) else [document]
    updates: list[StatusUpdate] = []
    for item in items:
        if not isinstance(item, dict):
            raise CallbackRejected("each status must be a JSON object")
        raw = str(item.get("status", "")).strip()
        status = (status_map or {}).get(raw, raw.lower())
        if status not in KNOWN_STATUSES:
            continue
        updates.append(
            StatusUpdate(
                status=status,
                provider_message_id=_text(item.get("id") or item.get("message_id")),
                idempotency_key=_text(item.get("reference")),
                address=_text(item.get("address")),
                reason=_text(item.get("reason")),
                permanent=bool(item.get("permanent", status in (BOUNCED, COMPLAINED))),
                event_id=_text(item.get("event_id")),
            )
        )
    return updates


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class GenericSmsChannel(HttpChannel):
    """Any HTTP SMS API whose request and answer can be described by configuration."""

    channel = "sms"
    kind = "sms_generic"

    def __init__(self, config: Mapping[str, Any], client: Any) -> None:
        super().__init__(config, client)
        self.capabilities = Capabilities(
            reports_delivery=bool(config.get("reports_delivery", True)),
            reports_reads=False,
            idempotency_keys=bool(config.get("idempotency_header")),
        )

    async def send(self, message: OutboundMessage) -> SendResult:
        names = {**DEFAULT_FIELDS, **self.config.get("fields", {})}
        values = {
            "to": message.address,
            "from": message.sender.address if message.sender else None,
            "text": message.text,
            "reference": message.idempotency_key,
            "callback": message.status_callback,
        }
        body = {names[k]: v for k, v in values.items() if v is not None and names.get(k)}
        headers = {str(k): str(v) for k, v in self.config.get("headers", {}).items()}
        if self.config.get("idempotency_header"):
            headers[str(self.config["idempotency_header"])] = message.idempotency_key
        kwargs: dict[str, Any] = {"headers": headers}
        if self.config.get("format", "json") == "form":
            kwargs["data"] = body
        else:
            kwargs["json"] = body
        response = await self.post(self.endpoint(""), **kwargs)
        if isinstance(response, SendResult):
            return response
        if response.status_code >= 300:
            return http_failure(response)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        found = _lookup(answer, str(self.config.get("id_field", "id")))
        return SendResult.sent(None if found is None else str(found))

    def verify_callback(self, callback: Callback) -> bool:
        return verify_generic_callback(self.config, callback)

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        return parse_generic_callback(callback, self.config.get("status_map"))
