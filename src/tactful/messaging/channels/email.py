"""E-mail over SMTP: plain, STARTTLS or implicit TLS, reused connections, optional DKIM.

``smtplib`` runs in a thread pool (one connection per thread, kept open between messages and
between dispatch runs). The submission is split into its phases so a failure is read right:
a connection that dies before ``DATA`` is retried on a fresh one (nothing was handed over);
one that dies during ``DATA`` is *unknown* (the server may have taken the message), never
resent.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import queue
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from email.header import Header
from email.utils import formataddr, formatdate
from typing import Any

import dkim

from tactful.messaging.channels import qp
from tactful.messaging.channels.base import (
    Callback,
    Capabilities,
    Channel,
    Limiter,
    OutboundMessage,
    SendResult,
    StatusUpdate,
    log,
)
from tactful.messaging.channels.generic import parse_generic_callback, verify_generic_callback

# RCPT answers that mean the mailbox does not exist: a hard bounce.
HARD_BOUNCE_CODES = (550, 551, 553)
DKIM_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


def _header(name: str, value: str) -> str:
    """One header line; non-ASCII or long values are RFC 2047 encoded and folded."""
    clean = " ".join(value.splitlines())  # a value never starts a header of its own
    if clean.isascii() and len(name) + len(clean) < 76:
        return f"{name}: {clean}"
    encoded = Header(clean, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def prefers_base64(non_ascii: int, size: int) -> bool:
    """Whether a part of ``size`` bytes, ``non_ascii`` of them not ASCII, is smaller in
    base64 than in quoted-printable: once more than a sixth of the bytes are not ASCII
    (Cyrillic takes three bytes each in quoted-printable, so a Russian letter is a third
    smaller, and quicker to encode, in base64)."""
    return non_ascii * 6 > size


def _part(content_type: bytes, text: str, encoded: bytes | None = None) -> bytes:
    """A text part's headers and body with CRLF line ends, in the smaller of the two standard
    transfer encodings (``prefers_base64``). ``encoded``: the body already in
    quoted-printable."""
    if encoded is not None:
        encoding, body = b"quoted-printable", encoded
    else:
        data = "\r\n".join(text.splitlines()).encode()
        if prefers_base64(qp.non_ascii(data), len(data)):
            encoding, body = b"base64", binascii.b2a_base64(data, newline=False)
            body = b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
        else:
            encoding, body = b"quoted-printable", binascii.b2a_qp(data, istext=True)
    return b"".join(
        (
            b"Content-Type: ",
            content_type,
            b'; charset="utf-8"\r\nContent-Transfer-Encoding: ',
            encoding,
            b"\r\n\r\n",
            body,
        )
    )


@functools.lru_cache(maxsize=4)
def _date_at(second: int) -> str:
    """The ``Date`` header's value: it counts whole seconds, so it is formatted once a
    second, not once a message."""
    return formatdate(second, usegmt=True)


def build_email(message: OutboundMessage, *, dkim_config: Mapping[str, Any] | None) -> bytes:
    """The MIME message (text and HTML alternatives), DKIM-signed when configured.

    Written out directly instead of through ``email.message.EmailMessage``, whose header and
    content managers cost milliseconds per message (most of the dispatch time at volume);
    the encodings are still the standard library's: quoted-printable or base64 UTF-8
    bodies (``binascii``), RFC 2047 headers (``email.header``) and ``formataddr``."""
    assert message.sender is not None
    domain = message.sender.address.rpartition("@")[2]
    lines = [
        _header("From", formataddr((message.sender.name or "", message.sender.address))),
        _header("To", message.address),
        _header("Subject", message.subject or ""),
        f"Date: {_date_at(int(time.time()))}",
        f"Message-ID: <{message.idempotency_key}@{domain}>",
    ]
    if message.sender.reply_to:
        lines.append(_header("Reply-To", message.sender.reply_to))
    lines.extend(_header(name, value) for name, value in message.headers.items())
    lines.append("MIME-Version: 1.0")
    if message.html is None:
        head = "\r\n".join(lines).encode()
        raw = head + b"\r\n" + _part(b"text/plain", message.text) + b"\r\n"
    else:
        # neither encoding ever writes "=_", so the boundary cannot occur in a part
        boundary = f"=_{message.idempotency_key}".encode()
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary.decode()}"')
        raw = b"".join(
            (
                "\r\n".join(lines).encode(),
                b"\r\n\r\n--",
                boundary,
                b"\r\n",
                _part(b"text/plain", message.text),
                b"\r\n--",
                boundary,
                b"\r\n",
                _part(b"text/html", message.html, message.html_body),
                b"\r\n--",
                boundary,
                b"--\r\n",
            )
        )
    if dkim_config:
        present = {line.partition(":")[0].lower().encode() for line in lines}
        signature = dkim.sign(
            raw,
            str(dkim_config["selector"]).encode(),
            str(dkim_config.get("domain") or domain).encode(),
            str(dkim_config["private_key"]).encode(),
            include_headers=[h for h in DKIM_HEADERS if h in present],
        )
        raw = signature + raw
    return raw


class SmtpPool:
    """Open SMTP connections to one server, reused across messages and runs."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.host = str(config.get("host", "127.0.0.1"))
        self.port = int(config.get("port", 25))
        self.security = str(config.get("security", "none"))  # none | starttls | tls
        self.username = config.get("username")
        self.password = config.get("password")
        self.timeout = float(config.get("timeout", 30))
        self.helo = config.get("helo_name")
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._ssl = self._context(config)

    @staticmethod
    def _context(config: Mapping[str, Any]) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=config.get("ca_pem") or None)
        if config.get("tls_verify") is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.helo,
                timeout=self.timeout,
                context=self._ssl,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=self.helo, timeout=self.timeout
            )
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self._ssl)
                smtp.ehlo()
        if self.security == "tls":
            smtp.ehlo()
        if self.username:
            smtp.login(str(self.username), str(self.password or ""))
        return smtp

    @contextlib.contextmanager
    def connection(self) -> Iterator[smtplib.SMTP]:
        """An idle connection (or a new one); broken ones are dropped, not returned."""
        try:
            smtp = self._idle.get_nowait()
        except queue.Empty:
            smtp = self.connect()
        try:
            yield smtp
        except BaseException:
            with contextlib.suppress(Exception):
                smtp.close()
            raise
        self._idle.put(smtp)

    def close(self) -> None:
        while True:
            try:
                smtp = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                smtp.quit()


def dot_stuffed(raw: bytes) -> bytes:
    """The message as ``DATA`` carries it: a dot opening a line doubled, ended by a line
    holding a single dot. The same bytes ``smtplib.SMTP.data`` sends, without the regular
    expression it runs over every message."""
    if raw.startswith(b"."):
        raw = b"." + raw
    if b"\n." in raw:
        raw = raw.replace(b"\n.", b"\n..")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


def submit(pool: SmtpPool, sender: str, recipient: str, raw: bytes) -> SendResult:
    """One message over a pooled connection, phase by phase."""
    for attempt in (1, 2):
        try:
            with pool.connection() as smtp:
                code, reply = smtp.mail(sender)
                if code != 250:
                    smtp.rset()
                    return _refused("MAIL FROM", code, reply)
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    smtp.rset()
                    return _refused("RCPT TO", code, reply)
                try:
                    code, reply = smtp.docmd("data")
                    willing = code == 354
                    if willing:
                        smtp.send(dot_stuffed(raw))
                        code, reply = smtp.getreply()
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    raise _DataLost(str(exc)) from exc
                if not willing:
                    smtp.rset()
                    return _refused("DATA", code, reply)
                if code != 250:
                    return _refused("DATA", code, reply)
                return SendResult.sent(reply.decode(errors="replace")[:200])
        except _DataLost as exc:
            return SendResult.uncertain(f"connection lost during DATA: {exc}")
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
            # nothing was handed over yet: a stale pooled connection gets one fresh retry
            if attempt == 2:
                return SendResult.transient(f"SMTP connection failed: {exc}")
        except smtplib.SMTPException as exc:
            return SendResult.transient(f"SMTP error: {exc}")
    return SendResult.transient("SMTP connection failed")


class _DataLost(Exception):
    pass


def _refused(stage: str, code: int, reply: bytes | str) -> SendResult:
    said = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    text = f"{stage} refused: {code} {said}"
    if 400 <= code < 500:
        return SendResult.transient(text)
    if stage == "RCPT TO" and code in HARD_BOUNCE_CODES:
        return SendResult.permanent(text, contact_status="bounced")
    return SendResult.permanent(text)


_POOLS: dict[str, tuple[SmtpPool, ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for(key: str, config: Mapping[str, Any], concurrency: int) -> tuple[SmtpPool, Any]:
    # the server is part of the key: providers of two databases in one process (tests, a
    # restored copy) may share an id and version but never a pool
    key = f"{key}@{config.get('host')}:{config.get('port')}"
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = (
                SmtpPool(config),
                ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="smtp"),
            )
        return _POOLS[key]


def close_pools() -> None:
    """Close every pooled SMTP connection of this process."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool, executor in pools:
        executor.shutdown(wait=True)
        pool.close()


class SmtpChannel(Channel):
    """E-mail through an SMTP server or relay. Bounces and complaints arrive through the
    generic signed status callback (relays post them), or as hard-bounce RCPT answers."""

    channel = "email"
    kind = "smtp"
    capabilities = Capabilities(reports_delivery=False, reports_reads=True, idempotency_keys=False)

    def __init__(self, config: Mapping[str, Any], *, pool_key: str, concurrency: int) -> None:
        super().__init__(config)
        self.pool_key, self.concurrency = pool_key, concurrency

    def render(self, message: OutboundMessage) -> bytes:
        return build_email(message, dkim_config=self.config.get("dkim"))

    def encode(self, message: OutboundMessage) -> OutboundMessage:
        """The MIME message built ahead, so a connection only waits for the server."""
        try:
            return replace(message, wire=self.render(message))
        except Exception:  # the lane builds it again and reports why it cannot be built
            return message

    async def send(self, message: OutboundMessage) -> SendResult:
        [result] = await self.send_batch([message], concurrency=1, limiter=None)
        return result

    async def send_batch(
        self,
        messages: Sequence[OutboundMessage],
        *,
        concurrency: int,
        limiter: Limiter | None,
    ) -> list[SendResult]:
        """One lane per connection, each in one worker thread over its pooled connection,
        taking the next message not yet taken until none is left (a lane that meets quick
        answers sends more)."""
        pool, executor = _pool_for(self.pool_key, self.config, self.concurrency)
        loop = asyncio.get_running_loop()
        lanes = max(1, min(concurrency, self.concurrency, len(messages)))
        waiting: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(messages)):
            waiting.put(index)
        results: list[SendResult] = [SendResult.uncertain("not sent")] * len(messages)
        await asyncio.gather(
            *(
                loop.run_in_executor(
                    executor, self._send_lane, pool, messages, waiting, results, limiter
                )
                for _ in range(lanes)
            )
        )
        return results

    def _send_lane(
        self,
        pool: SmtpPool,
        messages: Sequence[OutboundMessage],
        waiting: queue.SimpleQueue[int],
        results: list[SendResult],
        limiter: Limiter | None,
    ) -> None:
        while True:
            try:
                index = waiting.get_nowait()
            except queue.Empty:
                return
            results[index] = self._send_one(pool, messages[index], limiter)

    def _send_one(
        self, pool: SmtpPool, message: OutboundMessage, limiter: Limiter | None
    ) -> SendResult:
        assert message.sender is not None
        raw = message.wire
        if raw is None:
            try:
                raw = self.render(message)
            except Exception as exc:  # nothing was handed over: retrying cannot help
                return SendResult.permanent(f"the message cannot be built: {exc}")
        if limiter is not None:
            limiter.acquire_blocking()
        try:
            return submit(pool, message.sender.address, message.address, raw)
        except Exception as exc:  # a bug here must not leave the delivery in sending
            log.exception("messaging.smtp_failed", delivery_id=message.delivery_id)
            return SendResult.uncertain(f"{type(exc).__name__}: {exc}")

    def verify_callback(self, callback: Callback) -> bool:
        return verify_generic_callback(self.config, callback)

    def parse_callback(self, callback: Callback) -> list[StatusUpdate]:
        return parse_generic_callback(callback)
