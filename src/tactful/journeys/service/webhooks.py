"""A journey's webhook call: the instance as signed JSON, POSTed from a job.

``X-Tactful-Signature`` is ``sha256=`` and the HMAC-SHA256 (hex) of the raw body, keyed by
the installation's secret for the purpose ``journeys.webhook``; ``Idempotency-Key`` names the
instance and visit, so a receiver can drop the repeat a retry after a crash may cause.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tactful.core.runtime import Runtime
from tactful.journeys.service.steps import WEBHOOK_PURPOSE

TIMEOUT_SECONDS = 10.0
RETRY_STATUSES = (408, 425, 429)


@dataclass(frozen=True)
class WebhookResult:
    """What the receiver answered: done, worth retrying, or refused for good."""

    ok: bool
    retry: bool
    status: int | None
    error: str | None = None


def signature(runtime: Runtime, body: bytes) -> str:
    """The ``X-Tactful-Signature`` value of a body."""
    return "sha256=" + runtime.signer.hmac_hex(body, purpose=WEBHOOK_PURPOSE)


def call_webhook(runtime: Runtime, *, url: str, body: str, idempotency_key: str) -> WebhookResult:
    """POST a signed body once; connection errors, time-outs, 408, 425, 429 and 5xx are
    worth retrying, other answers outside 2xx are not."""
    raw = body.encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "X-Tactful-Signature": signature(runtime, raw),
        "User-Agent": "Tactful-Journeys/1",
    }
    try:
        response = httpx.post(url, content=raw, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return WebhookResult(False, True, None, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return WebhookResult(True, False, status)
    retry = status in RETRY_STATUSES or status >= 500
    return WebhookResult(False, retry, status, f"HTTP {status}: {response.text[:300]}")
