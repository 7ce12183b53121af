"""Journeys on the embedded default (SQLite + DuckDB, ``tactful serve`` with its workers).

**Trigger latency.** A load generator process creates "Cart Abandoned" events (with the
cart's items, one customer per event) at a fixed rate and sends them the way Segment's and
RudderStack's server libraries do, in ``POST /v1/batch`` calls of up to 20 events at least
every 100 ms. A live journey lets the customer in on that event and sends an abandoned-cart
e-mail through the contact policy. The latency of an event is from its creation in the
client (its wait in the client's buffer counts) to the commit of the job that queued its
delivery (``journeys.on_events``: the resolver's batch, entry, the policy gate, the delivery
row); every event must have its delivery. The baseline is the acknowledgement of the same
events (durably in the inbox): what the pipeline adds on top of ingestion. The workspace's
quiet hours are off so that no delivery is deferred by the clock of the run; caps and
spacing apply as usual. Events sent one call each top out far lower on this machine (about
60 calls/s with the workers busy in the same process), which is why the batching matters.

**A crowd through a wait.** N customers enter an API-triggered journey in one call; the
journey waits, then sends an e-mail through the policy. Measured: from the moment the wait
ends to the commit of the last ``journeys.advance`` job (every customer has passed the send
step: a policy decision and a queued delivery each). The baseline is a hand-written plain
``sqlite3`` loop doing the minimal writes of the same step (take the due instances, insert a
delivery row each, mark them done) in one transaction: the floor on this machine.

A local SMTP server (aiosmtpd, dropping messages) takes the e-mails, so dispatch runs beside
the journeys as it would in production and competes for the same two cores.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tactful import wiring
from tactful.bench import (
    BenchResult,
    free_port,
    serve,
    smtp_sender,
    smtp_sink,
    stop,
    stopwatch,
)
from tactful.config import Settings
from tactful.core import clock
from tactful.core.jobs.models import Job
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime
from tactful.customers.models import Customer
from tactful.events import service as events
from tactful.events.models import InboxEvent
from tactful.journeys import service as journeys
from tactful.journeys.models import JourneyInstance
from tactful.messaging import service as messaging
from tactful.messaging.models import Delivery
from tactful.policy import service as policy
from tactful.policy.schemas import DEFAULT_RULES
from tactful.tenancy import service as tenancy

NAME = "journeys"
TITLE = "journeys: event over HTTP → delivery queued; a crowd through a wait and a send"
# (events at RATE per second, customers entering at once)
SIZES = {"small": (5_000, 20_000), "full": (15_000, 100_000)}
RATE = 500.0
FLUSH_AT, FLUSH_EVERY = 20, 0.1  # events, seconds: a server library's batching
WAIT = {"small": 20, "full": 60}  # seconds: longer than entering the crowd takes
EVENT = "Cart Abandoned"
BODY = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ customer.first_name | default: "friend" }}, your cart is waiting.</mj-text>
{% for item in event.items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
<mj-button href="https://shop.example/cart">Back to the cart</mj-button>
</mj-column></mj-section></mj-body></mjml>"""
ITEMS = [{"product_id": "P7", "name": "Rake", "price": 990, "quantity": 1}]


@dataclass(frozen=True)
class Setup:
    workspace_id: int
    brand_id: int
    template_id: int
    ingest_key: str
    journey_id: int = 0


def _settle(runtime: Runtime, timeout: float = 600) -> None:
    """Wait until the server's workers have nothing left to do (after an import they
    rebuild metrics), so the measurement starts on a quiet system."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not finish their backlog in time")
        time.sleep(1)
        with runtime.db.scope(readonly=True) as session:
            busy = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.status.in_(("queued", "running")), Job.run_at <= clock.now())
            )
        quiet = quiet + 1 if not busy else 0


def _prepare(
    data: Path, customers: int, smtp_port: int, graph: Callable[[Setup], dict[str, Any]]
) -> Setup:
    """A data folder with a workspace, an SMTP provider, an abandoned-cart template, no quiet
    hours, ``customers`` customers (user ids u0…, e-mails, consents) imported from a CSV file
    and a live journey. Its runtime is closed before the server starts: the embedded
    warehouse is one process's at a time."""
    data.mkdir()
    runtime = build_runtime(Settings(data_dir=data))
    try:
        setup = _workspace(runtime, data, customers, smtp_port)
        return replace(setup, journey_id=_publish(runtime, setup, graph(setup)))
    finally:
        runtime.close()


def _workspace(runtime: Runtime, folder: Path, customers: int, smtp_port: int) -> Setup:
    upgrade(runtime.db.engine)
    with runtime.db.scope() as session:
        init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
        ws, brand = init.workspace.id, init.brand.id
        _, key = tenancy.issue_api_key(session, workspace_id=ws, name="bench", scopes=["ingest"])
        policy.set_rules(
            session,
            workspace_id=ws,
            brand_id=None,
            rules_=DEFAULT_RULES.model_copy(update={"send_windows": None}),
            actor="bench",
        )
        smtp_sender(session, workspace_id=ws, brand_id=brand, port=smtp_port, concurrency=4)
        template, _ = messaging.save_template(
            session,
            workspace_id=ws,
            brand_id=brand,
            kind="message",
            key="cart",
            name="Abandoned cart",
            parts={"email": {"subject": "Your cart", "body": BODY}},
            actor="bench",
        )
    path = folder / "customers.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["external_id", "email", "first_name", "consent_personal_data", "consent_email"]
        )
        writer.writerows(
            [f"u{n}", f"u{n}@example.com", f"Name{n}", "true", "true"] for n in range(customers)
        )
    run = events.import_file(
        runtime,
        workspace_id=ws,
        kind="customers",
        path=path,
        options=events.ImportOptions(mapping={}),
        actor="bench",
    )
    assert run.rows_imported == customers, f"imported {run.rows_imported} of {customers}"
    return Setup(ws, brand, template.id, key)


def _publish(runtime: Runtime, setup: Setup, graph: dict[str, Any]) -> int:
    with runtime.db.scope() as session:
        journey = journeys.create_journey(
            session,
            workspace_id=setup.workspace_id,
            brand_id=setup.brand_id,
            name="bench",
            graph=graph,
            actor="bench",
        )
        journeys.publish(
            session, workspace_id=setup.workspace_id, journey_id=journey.id, actor="bench"
        )
        return journey.id


def _send_step(setup: Setup) -> dict[str, Any]:
    return {"key": "send", "type": "send", "template_id": setup.template_id, "channels": ["email"]}


# -- trigger latency -------------------------------------------------------------------------


async def _generate(url: str, key: str, count: int, rate: float) -> list[tuple[str, float, float]]:
    """Create ``count`` events at ``rate`` per second and send them the way Segment's and
    RudderStack's server libraries do: a ``/v1/batch`` call when FLUSH_AT events are waiting
    or FLUSH_EVERY has passed. Returns (message id, created, acknowledged) per event: the
    wait in the client's buffer counts in the latency."""
    found: list[tuple[str, float, float]] = []
    # idle connections are dropped before the server's 5 s keep-alive closes them under us
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=url, auth=(key, ""), limits=limits, timeout=60) as http:

        async def flush(calls: list[tuple[dict[str, Any], float]]) -> None:
            body = {"batch": [call for call, _ in calls]}
            for attempt in range(3):  # the libraries retry; message ids make it safe
                try:
                    response = await http.post("/v1/batch", json=body)
                    response.raise_for_status()
                    break
                except httpx.TransportError as exc:
                    print(f"attempt {attempt + 1}: {exc!r}", file=sys.stderr, flush=True)
            else:
                return
            acked = time.time()
            found.extend((call["messageId"], created, acked) for call, created in calls)

        started = time.monotonic()
        flushes = []
        waiting: list[tuple[dict[str, Any], float]] = []
        last_flush = started
        for n in range(count):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call = {
                "type": "track",
                "userId": f"u{n}",
                "event": EVENT,
                "messageId": f"cart-{n}-{uuid.uuid4().hex[:8]}",
                "properties": {"cart_id": f"K{n}", "value": 990, "products": ITEMS},
            }
            waiting.append((call, time.time()))
            if len(waiting) >= FLUSH_AT or time.monotonic() - last_flush >= FLUSH_EVERY:
                flushes.append(asyncio.create_task(flush(waiting)))
                waiting, last_flush = [], time.monotonic()
        if waiting:
            flushes.append(asyncio.create_task(flush(waiting)))
        await asyncio.gather(*flushes)
    return found


def _client(url: str, key: str, count: int, rate: float) -> None:
    """The load generator process: one JSON line per acknowledged call."""
    for message_id, sent, acked in asyncio.run(_generate(url, key, count, rate)):
        print(json.dumps([message_id, sent, acked]))


def _load(url: str, key: str, count: int) -> list[tuple[str, float, float]]:
    """Run the load generator in its own process (message id, sent, acknowledged)."""
    client = subprocess.Popen(
        [sys.executable, __file__, url, key, str(count), str(RATE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = client.communicate(timeout=count / RATE * 4 + 120)
    finally:
        client.kill()
    if client.returncode:
        raise RuntimeError(f"the load generator failed with code {client.returncode}")
    return [tuple(json.loads(line)) for line in out.splitlines() if line]


def _queued_at(runtime: Runtime, message_ids: dict[str, float], timeout: float) -> dict[str, float]:
    """When the job that queued each event's delivery committed (waits until all are in)."""
    deadline = time.monotonic() + timeout
    count = len(message_ids)
    while True:
        with runtime.db.scope(readonly=True) as session:
            done = session.scalar(select(func.count()).select_from(Delivery)) or 0
        if done >= count:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {count} deliveries were queued in time")
        time.sleep(0.5)
    with runtime.db.scope(readonly=True) as session:
        seqs = dict(
            session.execute(
                select(InboxEvent.message_id, InboxEvent.seq).where(
                    InboxEvent.message_id.in_(list(message_ids))
                )
            )
            .tuples()
            .all()
        )
        jobs = [
            (int(p["seq_from"]), int(p["seq_to"]), clock.ensure_utc(at))
            for p, at in session.execute(
                select(Job.payload, Job.finished_at).where(
                    Job.name == "journeys.on_events", Job.finished_at.is_not(None)
                )
            ).tuples()
            if at is not None
        ]
    found: dict[str, float] = {}
    for message_id, seq in seqs.items():
        ends = [at for low, high, at in jobs if low <= seq <= high]
        if ends:
            found[message_id] = min(ends).timestamp()
    return found


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latency(folder: Path, count: int, smtp_port: int) -> BenchResult:
    data = folder / "latency"
    setup = _prepare(
        data,
        count,
        smtp_port,
        lambda s: {"trigger": {"type": "event", "event": EVENT}, "steps": [_send_step(s)]},
    )
    runtime = build_runtime(Settings(data_dir=data))  # reads the database only
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = serve(data, port)
        try:
            _settle(runtime)
            calls = _load(url, setup.ingest_key, count)
            sent = {m: s for m, s, _ in calls}
            queued = _queued_at(runtime, sent, timeout=300)
        finally:
            stop(server)
        with runtime.db.scope(readonly=True) as session:
            entered = session.scalar(select(func.count()).select_from(JourneyInstance)) or 0
    finally:
        runtime.close()
    assert len(queued) == count, f"{count - len(queued)} events have no queued delivery"
    latencies = [queued[m] - s for m, s in sent.items()]
    acks = [a - s for _, s, a in calls]
    span = max(a for _, _, a in calls) - min(s for _, s, _ in calls)
    return BenchResult(
        benchmark=NAME,
        case=f"trigger latency p99, {count:,} events at {RATE:.0f}/s over HTTP",
        ours_seconds=_percentile(latencies, 0.99),
        baseline="the acknowledgement of the same events (committed to the inbox), p99",
        baseline_seconds=_percentile(acks, 0.99),
        target="p99 < 1 s at 500 events/s",
        extra={
            "event → delivery queued p50 / p99 / max": (
                f"{statistics.median(latencies) * 1000:.0f} / "
                f"{_percentile(latencies, 0.99) * 1000:.0f} / {max(latencies) * 1000:.0f} ms"
            ),
            "acknowledgement p50 / p99": (
                f"{statistics.median(acks) * 1000:.0f} / {_percentile(acks, 0.99) * 1000:.0f} ms"
            ),
            "rate offered / achieved": f"{RATE:.0f} / {count / span:.0f} events/s",
            "customers who entered the journey": f"{entered:,}",
        },
    )


# -- a crowd through a wait ------------------------------------------------------------------


def _crowd(folder: Path, count: int, wait: int, smtp_port: int) -> BenchResult:
    data = folder / "crowd"
    setup = _prepare(
        data,
        count,
        smtp_port,
        lambda s: {
            "trigger": {"type": "api"},
            "steps": [
                {"key": "pause", "type": "wait", "duration": wait, "next": "send"},
                _send_step(s),
            ],
        },
    )
    runtime = build_runtime(Settings(data_dir=data))  # never opens the warehouse
    port = free_port()
    server = serve(data, port)
    try:
        _settle(runtime)
        with runtime.db.scope(readonly=True) as session:
            ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
        with stopwatch() as entering, runtime.db.scope() as session:
            outcomes = journeys.enter_from_api(
                runtime,
                session,
                workspace_id=setup.workspace_id,
                journey_id=setup.journey_id,
                entries=[journeys.ApiEntry(customer_id=c) for c in ids],
            )
        assert sum(o.entered for o in outcomes) == count
        if entering() >= wait:
            raise RuntimeError(f"entering took {entering():.0f} s, longer than the wait")
        with runtime.db.scope(readonly=True) as session:
            entered_at = session.scalar(select(func.max(JourneyInstance.entered_at)))
        assert entered_at is not None
        wait_ends = clock.ensure_utc(entered_at) + timedelta(seconds=wait)
        done_at = _advanced(runtime, count, timeout=wait + 900)
        with runtime.db.scope(readonly=True) as session:
            queued = session.scalar(select(func.count()).select_from(Delivery)) or 0
            sent = (
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.sent_at.is_not(None), Delivery.sent_at <= done_at)
                )
                or 0
            )
    finally:
        stop(server)
        runtime.close()
    assert queued == count, f"{queued} deliveries for {count} customers"
    ours = (done_at - wait_ends).total_seconds()
    return BenchResult(
        benchmark=NAME,
        case=f"{count:,} customers: wait ends → all passed the send step",
        ours_seconds=ours,
        baseline="plain sqlite3: take the due instances, insert a delivery each, mark them done",
        baseline_seconds=_floor(folder / "floor.sqlite3", count),
        items=count,
        unit="customers",
        target="all within 60 s of the wait ending",
        extra={
            "entering (one API call, not timed above)": f"{entering():.1f} s",
            "deliveries queued": f"{queued:,}",
            "e-mails already sent by then (dispatch runs alongside)": f"{sent:,}",
        },
    )


def _advanced(runtime: Runtime, count: int, timeout: float) -> datetime:
    """The commit of the last advance job, once every instance has left the send step."""
    deadline = time.monotonic() + timeout
    while True:
        with runtime.db.scope(readonly=True) as session:
            left = (
                session.scalar(
                    select(func.count())
                    .select_from(JourneyInstance)
                    .where(JourneyInstance.finished_at.is_(None))
                )
                or 0
            )
            if left == 0:
                last = session.scalar(
                    select(func.max(Job.finished_at)).where(Job.name == journeys.ADVANCE_JOB)
                )
                assert last is not None
                return clock.ensure_utc(last)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} of {count} customers still in the journey")
        time.sleep(0.5)


def _floor(path: Path, count: int) -> float:
    """The minimal writes of the same step in plain sqlite3 (one transaction)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE instances (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,
                                step TEXT, next_at REAL, finished_at REAL);
        CREATE INDEX ix_due ON instances (status, next_at);
        CREATE TABLE deliveries (id INTEGER PRIMARY KEY, customer_id INTEGER, channel TEXT,
                                 status TEXT, template_id INTEGER, created_at REAL);
        """
    )
    db.executemany(
        "INSERT INTO instances VALUES (?, ?, 'waiting', 'pause', 0, NULL)",
        ((n, n) for n in range(1, count + 1)),
    )
    db.commit()
    with stopwatch() as elapsed:
        now = time.time()
        due = db.execute(
            "SELECT id, customer_id FROM instances WHERE status = 'waiting' AND next_at <= ?",
            (now,),
        ).fetchall()
        db.executemany(
            "INSERT INTO deliveries (customer_id, channel, status, template_id, created_at) "
            "VALUES (?, 'email', 'queued', 1, ?)",
            ((c, now) for _, c in due),
        )
        db.executemany(
            "UPDATE instances SET status = 'completed', step = 'send', finished_at = ? "
            "WHERE id = ?",
            ((now, i) for i, _ in due),
        )
        db.commit()
    db.close()
    return elapsed()


def run(scale: str) -> list[BenchResult]:
    wiring.install()
    events_count, crowd = SIZES.get(scale, SIZES["small"])
    smtp_port = free_port()
    sink = smtp_sink(smtp_port)
    try:
        with tempfile.TemporaryDirectory(prefix="tactful-bench-journeys-") as tmp:
            return [
                _latency(Path(tmp), events_count, smtp_port),
                _crowd(Path(tmp), crowd, WAIT.get(scale, WAIT["small"]), smtp_port),
            ]
    finally:
        sink.kill()
        sink.wait()


if __name__ == "__main__":  # the load generator process of the latency case
    _client(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
