"""SMS through Twilio's Programmable Messaging API (a common provider shape).

``POST {endpoint}/2010-04-01/Accounts/{account_sid}/Messages.json`` with a form body (``To``,
``From``, ``Body``, ``StatusCallback``) and HTTP Basic auth (account SID, auth token); the
answer carries the message ``sid``. Status callbacks are form posts signed in
``X-Twilio-Signature``: base64 HMAC-SHA1, keyed by the auth token, of the callback URL followed
by every form parameter's name and value in name order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from tactful.messaging.channels.base import (
    DELIVERED,
    FAILED,
    READ,
    Callback,
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    StatusUpdate,
    http_failure,
)

DEFAULT_ENDPOINT = "https://api.twilio.com"
# Error codes that mean the number itself cannot receive SMS.
INVALID_NUMBER_CODES = (21211, 21614, 21612)
STATUSES = {"delivered": DELIVERED, "read": READ, "undelivered": FAILED, "failed": FAILED}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The value Twilio puts in ``X-Twilio-Signature`` for a form post to ``url``."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioChannel(HttpChannel):
    """Twilio SMS: delivery reports through signed status callbacks; no idempotency keys."""

    channel = "sms"
    kind = "twilio"
    capabilities = Capabilities(reports_delivery=True, reports_reads=False, idempotency_keys=False)

    def _account(self) -> tuple[str, str]:
        return str(self.config["account_sid"]), str(self.config["auth_token"])

    async def send(self, message: OutboundMessage) -> SendResult:
        sid, token = self._account()
        form = {"To": message.address, "Body": message.text}
        if self.config.get("messaging_service_sid"):
            form["MessagingServiceSid"] = str(self.config["messaging_service_sid"])
        elif message.sender is not None:
            form["From"] = message.sender.address
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        url = f"{self.endpoint(DEFAULT_ENDPOINT)}/2010-04-01/Accounts/{sid}/Messages.json"
        response = await self.post(url, data=form, auth=(sid, token))
        if isinstance(response, SendResult):
            return response
        if response.status_code in (200, 201):
            return SendResult.sent(str(response.json().get("sid")))
        try:
            error = response.json()
        except ValueError:
            error = {}
        code = error.get("code")
        if response.status_code == 400 and code in INVALID_NUMBER_CODES:
            return SendResult.permanent(
                f"Twilio {code}: {error.get('message')}", contact_status="invalid"
            )
        return http_failure(response, f"Twilio {code}: {error.get('message')}")

    def verify_callback(self, callback: Callback) -> bool:
        _sid, token = self._account()
        params = dict(parse_qsl(callback.body.decode(errors="replace"), keep_blank_values=True))
        expected = twilio_signature(token, callback.url, params)
        given = callback.headers.get("x-twilio-signature")
        return given is not None and hmac.compare_digest(given, expected)

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        params: dict[str, Any] = dict(parse_qsl(callback.body.decode(), keep_blank_values=True))
        status = STATUSES.get(str(params.get("MessageStatus", "")))
        if status is None:
            return []
        return [
            StatusUpdate(
                status=status,
                provider_message_id=params.get("MessageSid"),
                address=params.get("To"),
                reason=f"Twilio error {params['ErrorCode']}" if params.get("ErrorCode") else None,
                permanent=status == FAILED,
                event_id=f"{params.get('MessageSid')}:{params.get('MessageStatus')}",
            )
        ]
