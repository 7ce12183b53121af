"""Mobile push in the shape of the FCM HTTP v1 API.

``POST {endpoint}/v1/projects/{project_id}/messages:send`` with ``Authorization: Bearer`` and
``{"message": {"token", "notification": {"title", "body", "image"}, "data"}}``; the answer's
``name`` is the message id. ``UNREGISTERED`` (404) and an invalid token make the token
unusable; 429 and 5xx are transient. FCM sends no delivery reports.
"""

from __future__ import annotations

from typing import Any

from tactful.messaging.channels.base import (
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    http_failure,
)

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
DEAD_TOKEN_CODES = ("UNREGISTERED", "SENDER_ID_MISMATCH")


def _fcm_error_code(answer: dict[str, Any]) -> str:
    error = answer.get("error") or {}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))


class FcmChannel(HttpChannel):
    """Firebase Cloud Messaging (HTTP v1). The OAuth 2 access token is configuration."""

    channel = "push"
    kind = "fcm"
    capabilities = Capabilities(reports_delivery=False, reports_reads=False, idempotency_keys=False)

    async def send(self, message: OutboundMessage) -> SendResult:
        project = self.config["project_id"]
        notification: dict[str, Any] = {"title": message.title or "", "body": message.text}
        if message.data.get("image"):
            notification["image"] = str(message.data["image"])
        data = {str(k): str(v) for k, v in message.data.items() if k != "image"}
        data["delivery_id"] = str(message.delivery_id)
        body = {"message": {"token": message.address, "notification": notification, "data": data}}
        url = f"{self.endpoint(DEFAULT_ENDPOINT)}/v1/projects/{project}/messages:send"
        headers = {"Authorization": f"Bearer {self.config['access_token']}"}
        response = await self.post(url, json=body, headers=headers)
        if isinstance(response, SendResult):
            return response
        if response.status_code == 200:
            return SendResult.sent(str(response.json().get("name")))
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = _fcm_error_code(answer)
        if code in DEAD_TOKEN_CODES or (
            response.status_code == 400 and "token" in str(answer).lower()
        ):
            return SendResult.permanent(f"FCM {code}", contact_status="invalid")
        return http_failure(response, f"FCM {code}")
