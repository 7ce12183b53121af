"""Telegram bot messages over the Bot API.

``POST {endpoint}/bot{token}/sendMessage`` with ``{"chat_id", "text"}`` (``sendPhoto`` with a
``photo`` and ``caption`` when the message has an image); the answer is ``{"ok": true,
"result": {"message_id"}}``. A 403 means the customer blocked the bot. Updates sent to the
webhook carry ``X-Telegram-Bot-Api-Secret-Token``; a ``my_chat_member`` update whose new
status is ``kicked`` marks the chat unusable. The Bot API reports no deliveries or reads.
"""

from __future__ import annotations

from typing import Any

import orjson

from tactful.messaging.channels.base import (
    BLOCKED,
    Callback,
    CallbackRejected,
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    StatusUpdate,
    http_failure,
    same,
)

DEFAULT_ENDPOINT = "https://api.telegram.org"


class TelegramChannel(HttpChannel):
    """A Telegram bot."""

    channel = "telegram"
    kind = "telegram"
    capabilities = Capabilities(reports_delivery=False, reports_reads=False, idempotency_keys=False)

    async def send(self, message: OutboundMessage) -> SendResult:
        base = f"{self.endpoint(DEFAULT_ENDPOINT)}/bot{self.config['bot_token']}"
        body: dict[str, Any] = {"chat_id": message.address}
        if message.data.get("image"):
            url = f"{base}/sendPhoto"
            body.update(photo=str(message.data["image"]), caption=message.text)
        else:
            url = f"{base}/sendMessage"
            body["text"] = message.text
        response = await self.post(url, json=body)
        if isinstance(response, SendResult):
            return response
        try:
            answer = response.json()
        except ValueError:
            return http_failure(response)
        if response.status_code == 200 and answer.get("ok"):
            return SendResult.sent(str(answer["result"]["message_id"]))
        text = f"Telegram {answer.get('error_code')}: {answer.get('description')}"
        if response.status_code == 429:
            retry = (answer.get("parameters") or {}).get("retry_after")
            return SendResult.transient(text, retry_after=float(retry) if retry else None)
        if response.status_code == 403 or "chat not found" in text:
            return SendResult.permanent(text, contact_status="invalid")
        return http_failure(response, text)

    def verify_callback(self, callback: Callback) -> bool:
        secret = self.config.get("webhook_secret")
        if not secret:
            return False
        given = callback.headers.get("x-telegram-bot-api-secret-token")
        return same(given, str(secret))

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        try:
            update = orjson.loads(callback.body)
        except orjson.JSONDecodeError as exc:
            raise CallbackRejected(f"the body is not JSON: {exc}") from exc
        member = update.get("my_chat_member") or {}
        if (member.get("new_chat_member") or {}).get("status") != "kicked":
            return []
        chat = str((member.get("chat") or {}).get("id"))
        return [
            StatusUpdate(
                status=BLOCKED,
                address=chat,
                reason="blocked the bot",
                event_id=f"update:{update.get('update_id')}",
            )
        ]
