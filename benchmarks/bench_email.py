"""E-mail dispatch per worker process against a bare ``smtplib`` loop.

Both send the same number of messages to the same local SMTP server (aiosmtpd in its own
process, answering 250 and dropping the message) over the same number of reused
connections. Ours does the whole dispatch: policy re-check, Liquid + MJML rendering with a
master layout and a block, the text part, signed tracking links, MIME, the ``sending`` and
``sent`` commits and the "Message Sent" events. The baseline sends the same messages (same
template, links and headers) rendered beforehand: the ceiling of SMTP on this machine.

At full scale it makes three rounds (ours, then the baseline, then our channel alone) and
shows the round whose ratio is the median, with all three ratios: on this shared machine
the pace changes from one minute to the next, less between runs that follow each other.

Beside the figures it prints where ours spends its time: the seconds its groups were on the
wire and the seconds its database thread spent preparing and recording (from the dispatch
runs' own ``RunStats``), and our SMTP channel alone sending the baseline's messages (built
beforehand) in the dispatcher's groups over as many connections.
"""

from __future__ import annotations

import asyncio
import smtplib
import tempfile
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tactful import wiring
from tactful.bench import (
    BenchResult,
    free_port,
    serving_heap,
    smtp_sender,
    smtp_sink,
    stopwatch,
)
from tactful.config import DatabaseSettings, Settings
from tactful.core.jobs.models import Job
from tactful.core.migrate import upgrade
from tactful.core.runtime import build_runtime
from tactful.core.security import Signer
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.messaging import service
from tactful.messaging.channels.base import ACCEPTED, OutboundMessage, Sender
from tactful.messaging.channels.email import SmtpChannel, build_email
from tactful.messaging.models import Delivery
from tactful.messaging.schemas import SendRequest
from tactful.messaging.service.compiled import compile_email
from tactful.messaging.service.dispatch import PHASES, group_size
from tactful.messaging.service.rendering import renderer_for
from tactful.messaging.service.tracking import links_for, track_html
from tactful.policy.schemas import ChannelStep
from tactful.tenancy import service as tenancy
from tactful.tenancy.models import Workspace

NAME = "email"
TITLE = "e-mail dispatch (render + policy re-check + SMTP) vs a bare smtplib loop"
BASELINE = "bare smtplib loop, the same messages rendered beforehand, same connections"
SIZES = {"small": 300, "full": 3000}
# rounds of ours, the baseline and our channel alone; the one with the median ratio is shown
ROUNDS = {"small": 1, "full": 3}
CONCURRENCY = 4
LISTMONK = 830  # e-mails per second per node, as Listmonk reports

LAYOUT = """<mjml><mj-body>
<mj-section><mj-column><mj-text font-size="20px">{{ brand.name }}</mj-text></mj-column></mj-section>
{{ content }}
<mj-section><mj-column><mj-text>{% render 'footer' %}</mj-text></mj-column></mj-section>
</mj-body></mjml>"""
BODY = """<mj-section><mj-column>
<mj-text>Hello {{ customer.first_name | default: "friend" }}, your cart is waiting.</mj-text>
{% for item in event.items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
<mj-button href="https://shop.example/cart?c={{ customer.id }}">Back to the cart</mj-button>
</mj-column></mj-section>"""
FOOTER = (
    '<a href="{{ links.unsubscribe }}">Unsubscribe</a> · '
    '<a href="{{ links.preferences }}">Preferences</a>'
)
SUBJECT = "{{ customer.first_name }}, your cart"
PUBLIC_URL = "http://127.0.0.1:8000"
CART = {"event": {"items": [{"name": "Rake", "price": 990}, {"name": "Hose", "price": 1490}]}}


def _channel_alone(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Our SMTP channel sending messages built beforehand, in the dispatcher's groups."""
    channel = SmtpChannel(
        {"host": "127.0.0.1", "port": port}, pool_key="bench-alone", concurrency=CONCURRENCY
    )
    sender = Sender("news@shop.example", "Garden Shop")
    ready = [
        OutboundMessage(
            delivery_id=n + 1,
            channel="email",
            address=address,
            idempotency_key=f"alone-{n + 1}",
            sender=sender,
            text="",
            wire=raw,
        )
        for n, (address, raw) in enumerate(messages)
    ]
    size = group_size(CONCURRENCY)

    async def send_all() -> None:
        for start in range(0, len(ready), size):
            results = await channel.send_batch(
                ready[start : start + size], concurrency=CONCURRENCY, limiter=None
            )
            assert all(r.outcome == ACCEPTED for r in results), results
        await channel.aclose()

    with stopwatch() as elapsed:
        asyncio.run(send_all())
    return elapsed()


def _messages(count: int) -> list[tuple[str, bytes]]:
    """The messages ours sends, rendered beforehand from the same template, with the same
    tracking links and headers: the baseline's input."""
    blocks = {"footer": FOOTER}
    compiled = compile_email(
        renderer_for(blocks), {"subject": SUBJECT, "body": BODY}, layout=LAYOUT, blocks=blocks
    )
    assert compiled is not None
    signer = Signer("bench")
    sender = Sender("news@shop.example", "Garden Shop")
    found = []
    for n in range(count):
        links = links_for(
            signer, PUBLIC_URL, delivery_id=n + 1, workspace_id=1, brand_id=1, customer_id=n + 1
        )
        rendered = compiled.render(
            {
                **CART,
                "customer": {"id": n + 1, "first_name": f"Name{n}"},
                "brand": {"id": 1, "name": "Main brand"},
                "links": links.as_context(),
                "message": {"id": n + 1, "channel": "email"},
            }
        )
        assert rendered.html is not None
        message = OutboundMessage(
            delivery_id=n + 1,
            channel="email",
            address=f"c{n}@example.com",
            idempotency_key=f"tactful-{n + 1}-{n + 1}",
            sender=sender,
            text=rendered.text,
            subject=rendered.subject,
            html=track_html(rendered.html, links),
        )
        found.append((message.address, build_email(message, dkim_config=None)))
    return found


def _baseline(port: int, messages: list[tuple[str, bytes]]) -> float:
    count = len(messages)
    connections = [smtplib.SMTP("127.0.0.1", port) for _ in range(CONCURRENCY)]
    for smtp in connections:
        smtp.ehlo()

    def worker(index: int) -> None:
        smtp = connections[index]
        for n in range(index, count, CONCURRENCY):
            address, raw = messages[n]
            smtp.sendmail("news@shop.example", [address], raw)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    with stopwatch() as elapsed:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for smtp in connections:
        smtp.quit()
    return elapsed()


def _ours(port: int, count: int, folder: Path) -> tuple[float, dict[str, Any]]:
    settings = Settings(
        data_dir=folder, database=DatabaseSettings(url=f"sqlite:///{folder / 'bench.sqlite3'}")
    )
    runtime = build_runtime(settings)
    wiring.install()
    upgrade(runtime.db.engine)
    with runtime.db.scope() as session:
        init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
        ws, brand = init.workspace.id, init.brand.id
        smtp_sender(session, workspace_id=ws, brand_id=brand, port=port, concurrency=CONCURRENCY)
        service.save_template(
            session,
            workspace_id=ws,
            brand_id=brand,
            kind="block",
            key="footer",
            name="Footer",
            parts={"email": {"body": FOOTER}},
            actor="bench",
        )
        layout, _ = service.save_template(
            session,
            workspace_id=ws,
            brand_id=brand,
            kind="layout",
            key="master",
            name="Master",
            parts={"email": {"body": LAYOUT}},
            actor="bench",
        )
        template, _ = service.save_template(
            session,
            workspace_id=ws,
            brand_id=brand,
            kind="message",
            key="cart",
            name="Cart",
            layout_id=layout.id,
            parts={"email": {"subject": SUBJECT, "body": BODY}},
            actor="bench",
        )
        workspace = session.get(Workspace, ws)
        assert workspace is not None
        records = [
            ProfileRecord(
                idents=[normalise("email", f"c{n}@example.com", region="RU")],
                source="bench",
                at=init.workspace.created_at,
                traits={"first_name": f"Name{n}"},
            )
            for n in range(count)
        ]
        customer_ids = resolve_profiles(session, workspace=workspace, records=records).customer_ids
    with stopwatch() as planning, runtime.db.scope() as session:
        service.send(
            session,
            [
                SendRequest(
                    workspace_id=ws,
                    brand_id=brand,
                    customer_id=cid,
                    template_id=template.id,
                    message_class="transactional",
                    source="bench",
                    steps=(ChannelStep("email"),),
                    context=CART,
                )
                for cid in customer_ids
            ],
        )
    with runtime.db.scope(readonly=True) as session:
        batches = [
            job.payload
            for job in session.scalars(select(Job).where(Job.name == service.DISPATCH_JOB))
        ]
    phases = dict.fromkeys(PHASES, 0.0)
    with stopwatch() as elapsed:
        for payload in batches:
            stats = service.dispatch(
                runtime, ids=payload["ids"], provider_id=payload["provider_id"]
            )
            for phase, seconds in stats.seconds.items():
                phases[phase] += seconds
    with runtime.db.scope(readonly=True) as session:
        sent = len(list(session.scalars(select(Delivery.id).where(Delivery.status == "sent"))))
    runtime.close()
    assert sent == count, f"only {sent} of {count} were sent"
    return elapsed(), {
        "planning (policy decisions, not timed above)": f"{planning():.3f} s",
        f"ours: {len(batches)} dispatch runs, groups on the wire": f"{phases['sending']:.3f} s",
        "ours: preparing (re-check, render, MIME, commit)": f"{phases['preparing']:.3f} s",
        "ours: recording the outcomes": f"{phases['recording']:.3f} s",
    }


def _round(port: int, count: int) -> tuple[float, float, float, dict[str, Any]]:
    """Ours, the baseline and our channel alone, one after the other: (seconds ×3, extra)."""
    # the sending process's collector settings (it is a `worker` process)
    with serving_heap(), tempfile.TemporaryDirectory(prefix="tactful-bench-email-") as folder:
        ours, extra = _ours(port, count, Path(folder))
    messages = _messages(count)
    baseline = _baseline(port, messages)
    alone = _channel_alone(port, messages)
    return ours, baseline, alone, extra


def run(scale: str) -> list[BenchResult]:
    count = SIZES.get(scale, SIZES["small"])
    rounds = ROUNDS.get(scale, 1)
    port = free_port()
    server = smtp_sink(port)
    try:
        _baseline(port, _messages(50))  # warm the server up
        found = [_round(port, count) for _ in range(rounds)]
    finally:
        server.kill()
        server.wait()
    # the round with the median ratio: a round's runs follow each other, so the machine's
    # pace changes less between them than between rounds
    ours, baseline, alone, extra = sorted(found, key=lambda r: r[0] / r[1])[len(found) // 2]
    if rounds > 1:
        extra[f"all {rounds} rounds, ours / baseline"] = ", ".join(
            f"{o:.3f} / {b:.3f} s ({o / b:.2f}×)" for o, b, _a, _e in found
        )
    per_second = count / ours
    extra["our SMTP channel alone, the baseline's messages"] = f"{alone:.3f} s"
    extra["Listmonk (reported, per node)"] = f"{LISTMONK} e-mails/s"
    extra["ours vs Listmonk"] = f"{per_second / LISTMONK:.2f}×"
    return [
        BenchResult(
            benchmark=NAME,
            case=f"{count} e-mails, {CONCURRENCY} connections"
            + (f", median of {rounds} rounds" if rounds > 1 else ""),
            ours_seconds=ours,
            baseline=BASELINE,
            baseline_seconds=baseline,
            items=count,
            unit="e-mails",
            target="≤ 1.5× the baseline",
            extra=extra,
        )
    ]
