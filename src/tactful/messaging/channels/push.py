"""Mobile push in the shape of the FCM HTTP v1 API.

``POST {endpoint}/v1/projects/{project_id}/messages:send`` with ``Authorization: Bearer`` and
``{"message": {"token", "notification": {"title", "body", "image"}, "data"}}``; the answer's
``name`` is the message id. ``UNREGISTERED`` (404) and an invalid token make the token
unusable; 429 and 5xx are transient. FCM sends no delivery reports.

The bearer token is either configured (``access_token``) or minted from a service account
(``service_account``: the JSON key Google issues, with ``client_email``, ``private_key``,
``private_key_id`` and ``token_uri``): a JWT signed with the account's key (RS256) is
exchanged at the token endpoint (``token_endpoint`` overrides the key's ``token_uri``) for an
access token, kept in the process until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson

from tactful.core import clock
from tactful.messaging.channels.base import (
    Capabilities,
    HttpChannel,
    OutboundMessage,
    SendResult,
    http_failure,
)

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - an address
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEAD_TOKEN_CODES = ("UNREGISTERED", "SENDER_ID_MISMATCH")
# a token is renewed this long before it expires
RENEW_BEFORE = timedelta(minutes=5)

_TOKENS: dict[tuple[str, str], tuple[str, datetime]] = {}
_TOKENS_LOCK = threading.Lock()


def _fcm_error_code(answer: dict[str, Any]) -> str:
    error = answer.get("error") or {}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))


def service_account(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The configured service account key (an object or its JSON text), if any."""
    raw = config.get("service_account")
    if not raw:
        return None
    account = orjson.loads(raw) if isinstance(raw, str | bytes) else dict(raw)
    if not isinstance(account, dict):
        raise ValueError("service_account must be a JSON object")
    return account


class TokenUnavailable(Exception):
    """The token endpoint did not give an access token."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


class FcmChannel(HttpChannel):
    """Firebase Cloud Messaging (HTTP v1)."""

    channel = "push"
    kind = "fcm"
    capabilities = Capabilities(reports_delivery=False, reports_reads=False, idempotency_keys=False)

    def __init__(self, config: Mapping[str, Any], client: httpx.AsyncClient | None) -> None:
        super().__init__(config, client)
        self.account = service_account(config)
        self._minting = asyncio.Lock()

    def _cache_key(self) -> tuple[str, str]:
        assert self.account is not None
        return str(self.account["client_email"]), self.token_uri()

    def token_uri(self) -> str:
        assert self.account is not None
        return str(
            self.config.get("token_endpoint") or self.account.get("token_uri") or DEFAULT_TOKEN_URI
        )

    def assertion(self, now: datetime) -> str:
        """The signed JWT a service account exchanges for an access token."""
        assert self.account is not None
        claims = {
            "iss": self.account["client_email"],
            "scope": SCOPE,
            "aud": self.token_uri(),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
        }
        headers = (
            {"kid": self.account["private_key_id"]} if "private_key_id" in self.account else {}
        )
        return jwt.encode(claims, self.account["private_key"], algorithm="RS256", headers=headers)

    async def access_token(self) -> str:
        """The bearer token: configured, or minted and cached until shortly before expiry."""
        if self.account is None:
            return str(self.config["access_token"])
        key = self._cache_key()
        async with self._minting:  # one exchange at a time per run, the rest wait for it
            with _TOKENS_LOCK:
                cached = _TOKENS.get(key)
            now = clock.now()
            if cached is not None and cached[1] - RENEW_BEFORE > now:
                return cached[0]
            response = await self.post(
                self.token_uri(),
                data={"grant_type": JWT_BEARER, "assertion": self.assertion(now)},
            )
            if isinstance(response, SendResult):
                raise TokenUnavailable(response)
            if response.status_code != 200:
                failure = http_failure(response, f"token endpoint: {response.text[:200]}")
                raise TokenUnavailable(failure)
            answer = response.json()
            token = str(answer["access_token"])
            expires = now + timedelta(seconds=int(answer.get("expires_in", 3600)))
            with _TOKENS_LOCK:
                _TOKENS[key] = (token, expires)
            return token

    def forget_token(self) -> None:
        """Drop a cached token the API refused."""
        if self.account is not None:
            with _TOKENS_LOCK:
                _TOKENS.pop(self._cache_key(), None)

    async def send(self, message: OutboundMessage) -> SendResult:
        project = self.config["project_id"]
        try:
            token = await self.access_token()
        except TokenUnavailable as exc:
            return exc.result
        notification: dict[str, Any] = {"title": message.title or "", "body": message.text}
        if message.data.get("image"):
            notification["image"] = str(message.data["image"])
        data = {str(k): str(v) for k, v in message.data.items() if k != "image"}
        data["delivery_id"] = str(message.delivery_id)
        body = {"message": {"token": message.address, "notification": notification, "data": data}}
        url = f"{self.endpoint(DEFAULT_ENDPOINT)}/v1/projects/{project}/messages:send"
        response = await self.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        if isinstance(response, SendResult):
            return response
        if response.status_code == 200:
            return SendResult.sent(str(response.json().get("name")))
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = _fcm_error_code(answer)
        if response.status_code == 401:
            self.forget_token()  # expired or revoked: the next attempt mints a new one
            return SendResult.transient(f"FCM {code or 'UNAUTHENTICATED'}")
        if code in DEAD_TOKEN_CODES or (
            response.status_code == 400 and "token" in str(answer).lower()
        ):
            return SendResult.permanent(f"FCM {code}", contact_status="invalid")
        return http_failure(response, f"FCM {code}")
