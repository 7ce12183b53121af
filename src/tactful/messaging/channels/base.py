"""The one typed interface every channel adapter implements, and the shapes it speaks.

An adapter turns an :class:`OutboundMessage` into one provider submission and says what
happened (:class:`SendResult`); it verifies and parses the provider's status callbacks into
:class:`StatusUpdate` items. Adapters never touch the database: the dispatcher records what
they report.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import httpx
import structlog

log = structlog.get_logger("tactful.messaging")

# What became of one submission.
ACCEPTED: Final = "sent"
TRANSIENT: Final = "transient"  # try again later (5xx, 429, a dropped connection before sending)
PERMANENT: Final = "permanent"  # retrying cannot help (bad address, rejected content)
# The provider may or may not have taken it (the connection died mid-submission); never resent
# unless the provider honours idempotency keys.
UNCERTAIN: Final = "unknown"
Outcome = Literal["sent", "transient", "permanent", "unknown"]


@dataclass(frozen=True)
class Capabilities:
    """What a provider can tell us and what it promises."""

    reports_delivery: bool
    reports_reads: bool
    idempotency_keys: bool  # resending with the same key never makes a second message


@dataclass(frozen=True)
class Sender:
    """Who the message comes from (a from-address, SMS sender id, bot or app)."""

    address: str
    name: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one address."""

    delivery_id: int
    channel: str
    address: str
    idempotency_key: str
    sender: Sender | None
    text: str
    subject: str | None = None
    html: str | None = None
    # the HTML part's quoted-printable body (CRLF lines), when the renderer encoded it while
    # putting ``html`` together from pieces; it decodes to ``html``
    html_body: bytes | None = None
    title: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    status_callback: str | None = None
    # the submission as the adapter sends it, when built ahead (``Channel.encode``)
    wire: bytes | None = None


@dataclass(frozen=True)
class SendResult:
    """The provider's answer to one submission."""

    outcome: Outcome
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    # the provider says the address itself is unusable ("invalid")
    contact_status: str | None = None

    @classmethod
    def sent(cls, provider_message_id: str | None) -> SendResult:
        return cls(ACCEPTED, provider_message_id)

    @classmethod
    def transient(cls, error: str, retry_after: float | None = None) -> SendResult:
        return cls(TRANSIENT, error=error, retry_after=retry_after)

    @classmethod
    def permanent(cls, error: str, contact_status: str | None = None) -> SendResult:
        return cls(PERMANENT, error=error, contact_status=contact_status)

    @classmethod
    def uncertain(cls, error: str) -> SendResult:
        return cls(UNCERTAIN, error=error)


# Status kinds a callback can report.
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"
BOUNCED = "bounced"
COMPLAINED = "complained"
BLOCKED = "blocked"  # the customer blocked the bot or app: the contact is unusable


@dataclass(frozen=True)
class StatusUpdate:
    """One status a provider reported about a message (or about an address)."""

    status: str
    provider_message_id: str | None = None
    idempotency_key: str | None = None
    address: str | None = None
    reason: str | None = None
    permanent: bool = True
    at: datetime | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Callback:
    """A provider's request to our status webhook, as received."""

    url: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class CallbackRejected(Exception):
    """The callback's body cannot be read (after its signature was checked)."""


class Channel(ABC):
    """A provider adapter for one channel."""

    channel: str
    kind: str
    capabilities: Capabilities

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    @abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Submit one message; never raises for a provider error (the result says it)."""

    def encode(self, message: OutboundMessage) -> OutboundMessage:
        """The message with what can be built before submission built (the dispatcher
        calls it while the previous group is on the wire); as it is by default."""
        return message

    def verify_callback(self, callback: Callback) -> bool:
        """True when a status callback really comes from the provider."""
        return False

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        """The statuses a verified callback reports."""
        return []

    async def send_batch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        concurrency: int,
        limiter: Limiter | None,
    ) -> list[SendResult]:
        """Submit many messages, at most ``concurrency`` at once, each after a token from
        ``limiter``; results in the order given. An adapter that fails unexpectedly gets an
        uncertain result (it may have reached the provider), never an exception."""
        gate = asyncio.Semaphore(concurrency)

        async def one(message: OutboundMessage) -> SendResult:
            async with gate:
                if limiter is not None:
                    await limiter.acquire()
                try:
                    return await self.send(message)
                except Exception as exc:
                    log.exception("messaging.adapter_failed", delivery_id=message.delivery_id)
                    return SendResult.uncertain(f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def aclose(self) -> None:
        """Release connections (called when a dispatch run ends)."""
        return


class HttpChannel(Channel):
    """An adapter that talks to an HTTP API through a shared ``httpx.AsyncClient``."""

    def __init__(self, config: Mapping[str, Any], client: httpx.AsyncClient | None) -> None:
        super().__init__(config)
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("this adapter was built without an HTTP client (callbacks only)")
        return self._client

    def endpoint(self, default: str) -> str:
        return str(self.config.get("endpoint") or default).rstrip("/")

    async def post(self, url: str, **kwargs: Any) -> httpx.Response | SendResult:
        """POST, turning network failures into a transient result."""
        try:
            return await self.client.post(url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SendResult.transient(f"connection failed: {exc}")
        except httpx.TransportError as exc:
            # The request may have reached the provider: only a key makes a retry safe.
            if self.capabilities.idempotency_keys:
                return SendResult.transient(f"no answer: {exc}")
            return SendResult.uncertain(f"no answer: {exc}")
        except httpx.HTTPError as exc:
            return SendResult.transient(f"connection failed: {exc}")


def http_failure(response: httpx.Response, detail: str | None = None) -> SendResult:
    """The usual reading of an HTTP error: 429 and 5xx are transient, other 4xx permanent."""
    text = detail or response.text[:300]
    if response.status_code == 429 or response.status_code >= 500:
        retry = response.headers.get("retry-after")
        return SendResult.transient(
            f"HTTP {response.status_code}: {text}",
            retry_after=float(retry) if retry and retry.isdigit() else None,
        )
    return SendResult.permanent(f"HTTP {response.status_code}: {text}")


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.strip().lower(), b.lower())


class Limiter(Protocol):
    """Hands out one token per message, waiting when the provider's rate is used up."""

    async def acquire(self) -> None:
        """Wait for a token (in the event loop)."""

    def acquire_blocking(self) -> None:
        """Wait for a token (in a worker thread)."""


class RateLimiter:
    """A token bucket of one provider in this process (``clock`` and ``sleep`` are
    injectable so tests need no real time)."""

    def __init__(
        self,
        per_second: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = per_second
        self.capacity = max(1.0, burst if burst is not None else per_second)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def try_take(self) -> float:
        """Take a token: 0 when one was taken, else the seconds to wait for one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            # a token refilled up to float rounding counts as whole: waiting for the last
            # 1e-16 of one would never end (the clock cannot advance by so little)
            if self._tokens >= 1 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1)
                return 0.0
            return (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        wait = self.try_take()
        while wait > 0:
            await asyncio.sleep(wait)  # a token bucket refills with time, not on an event
            wait = self.try_take()

    def acquire_blocking(self) -> None:
        wait = self.try_take()
        while wait > 0:
            self._sleep(wait)
            wait = self.try_take()
