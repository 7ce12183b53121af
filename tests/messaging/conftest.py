"""Fixtures for messaging: a real SMTP server (aiosmtpd), real local HTTP servers that behave
like the providers, a brand with providers, senders and templates, and consenting customers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from tests.conftest import Tenant
from tests.policy.conftest import AT, MakeCustomer, make_customer

from tactful.core import clock
from tactful.core.jobs import queue
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers import topics
from tactful.messaging import service
from tactful.messaging.models import Delivery
from tactful.messaging.schemas import SendRequest
from tactful.policy.schemas import ChannelStep

__all__ = ["AT", "MakeCustomer", "make_customer"]

LAYOUT = """<mjml><mj-body>
<mj-section><mj-column><mj-text>{{ brand.name }}</mj-text></mj-column></mj-section>
{{ content }}
<mj-section><mj-column><mj-text>{% render 'footer' %}</mj-text></mj-column></mj-section>
</mj-body></mjml>"""
BODY = """<mj-section><mj-column>
<mj-text>Hello {{ customer.first_name | default: "friend" }}, your cart is waiting.</mj-text>
{% for item in event.items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
<mj-button href="https://shop.example/cart?c={{ customer.id }}">Back to the cart</mj-button>
</mj-column></mj-section>"""
FOOTER = '<a href="{{ links.unsubscribe }}">Unsubscribe</a>'


class SmtpSink:
    """Collects what a real SMTP server received."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.delay = delay
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow server, so a batch takes a while
        with self._lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK queued"

    def parsed(self) -> list[EmailMessage]:
        with self._lock:
            raw = [m[2] for m in self.messages]
        return [message_from_bytes(r, policy=policy.default) for r in raw]  # type: ignore[misc]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@dataclass
class Brand:
    """The tenant's brand, ready to send e-mail."""

    tenant: Tenant
    provider_id: int
    template_id: int
    layout_id: int
    topic: str = "promotions"
    extra: dict[str, int] = field(default_factory=dict)


def email_setup(runtime: Runtime, tenant: Tenant, port: int, **config: Any) -> Brand:
    with runtime.db.scope() as session:
        provider = service.create_provider(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            kind="smtp",
            name="local-smtp",
            config={"host": "127.0.0.1", "port": port, **config},
            concurrency=4,
            actor="test",
        )
        service.create_sender(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            channel="email",
            provider_id=provider.id,
            address="news@shop.example",
            name="Garden Shop",
            actor="test",
        )
        topics.create_topic(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            key="promotions",
            name="Promotions",
        )
        service.save_template(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            kind="block",
            key="footer",
            name="Footer",
            parts={"email": {"body": FOOTER}},
            actor="test",
        )
        layout, _ = service.save_template(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            kind="layout",
            key="master",
            name="Master",
            parts={"email": {"body": LAYOUT}},
            actor="test",
        )
        template, _ = service.save_template(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            kind="message",
            key="cart",
            name="Abandoned cart",
            layout_id=layout.id,
            parts={
                "email": {"subject": "{{ customer.first_name }}, your cart", "body": BODY},
                "sms": {"text": "{{ customer.first_name }}, your cart is waiting"},
                "push": {"title": "Your cart", "text": "{{ event.items.size }} items wait"},
                "viber": {"text": "Cart: {{ event.items.size }} items"},
                "telegram": {"text": "Cart: {{ event.items.size }} items"},
                "webhook": {"text": "cart for {{ customer.id }}"},
                "call": {"text": "Call {{ customer.first_name }} about the cart"},
            },
            actor="test",
        )
        return Brand(tenant, provider.id, template.id, layout.id)


def add_provider(
    runtime: Runtime,
    brand: Brand,
    kind: str,
    channel: str,
    config: dict[str, Any],
    address: str = "Shop",
    **options: Any,
) -> int:
    """A provider of the brand with a default sender on its channel."""
    with runtime.db.scope() as session:
        provider = service.create_provider(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            kind=kind,
            name=kind,
            config=config,
            actor="test",
            **options,
        )
        service.create_sender(
            session,
            workspace_id=brand.tenant.workspace_id,
            brand_id=brand.tenant.brand_id,
            channel=channel,
            provider_id=provider.id,
            address=address,
            name="Garden Shop",
            actor="test",
        )
        return provider.id


@pytest.fixture
def brand(runtime: Runtime, tenant: Tenant, smtp: tuple[SmtpSink, int]) -> Brand:
    return email_setup(runtime, tenant, smtp[1])


CART = {"event": {"items": [{"name": "Rake", "price": 990}, {"name": "Hose", "price": 1490}]}}


def request(brand: Brand, customer_id: int, **kw: Any) -> SendRequest:
    base: dict[str, Any] = {
        "workspace_id": brand.tenant.workspace_id,
        "brand_id": brand.tenant.brand_id,
        "customer_id": customer_id,
        "template_id": brand.template_id,
        "message_class": "marketing",
        "source": "campaign:7",
        "steps": (ChannelStep("email"),),
        "topic": "promotions",
        "context": CART,
    }
    base.update(kw)
    return SendRequest(**base)


def send_transactional(runtime: Runtime, brand: Brand, customer_ids: list[int]) -> None:
    """Queue a transactional e-mail to each customer, at ``AT``."""
    with clock.frozen(AT), runtime.db.scope() as session:
        service.send(
            session,
            [
                request(brand, cid, message_class="transactional", topic=None)
                for cid in customer_ids
            ],
        )


def deliveries(runtime: Runtime) -> list[Delivery]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


# -- local HTTP providers ------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpPeer:
    """A real local HTTP server whose answers a test scripts (status, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.answers: list[tuple[int, Any]] = []
        self.default: tuple[int, Any] = (200, {})
        # answers by request, for concurrent requests whose order is not fixed
        self.respond: Callable[[Recorded], tuple[int, Any]] | None = None
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                recorded = Recorded(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                peer.requests.append(recorded)
                if peer.respond is not None:
                    status, answer = peer.respond(recorded)
                else:
                    status, answer = peer.answers.pop(0) if peer.answers else peer.default
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_peer() -> Iterator[HttpPeer]:
    with HttpPeer() as peer:
        yield peer


Factory = Callable[..., int]


# The jobs these tests need; the warehouse loader and metrics refreshes (other features'
# reactions to the events messaging records) are left out to keep the tests fast.
WANTED_JOBS = ("messaging.", "events.record_consent_change")


def run_jobs(worker: Worker, *, rounds: int = 50) -> int:
    """Run due messaging jobs (and consent-change events) until none is left."""
    ran = 0
    for _ in range(rounds):
        claimed = worker.claim(100)
        if not claimed:
            break
        for job in claimed:
            if job.name.startswith(WANTED_JOBS):
                worker.run_job(job)
                ran += 1
            else:
                with worker.runtime.db.scope() as session:
                    queue.complete(session, job, worker=worker.worker_id)
    return ran
