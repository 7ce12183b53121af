"""HTTP ingestion: ``POST /v1/batch`` with 500 Segment-spec events per call from several client
processes against ``tactful serve`` on the embedded default (SQLite + DuckDB), against the
same rows inserted straight into the inbox table (SQLAlchemy executemany, one process) as
the ceiling.

An event counts once its call is acknowledged, which happens only after the inbox rows are
committed. The drain time (resolver and loader until the warehouse has every event) is
reported beside it.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tactful import wiring
from tactful.bench import BenchResult, free_port, serve, stop, stopwatch
from tactful.config import Settings
from tactful.core.dialect import bulk_insert_chunk_size
from tactful.core.migrate import upgrade
from tactful.core.runtime import build_runtime
from tactful.events.ingest import IngestContext, segment_identities
from tactful.events.models import InboxEvent
from tactful.events.schemas import CALL_ADAPTER
from tactful.tenancy import service as tenancy

NAME = "ingest"
TITLE = "HTTP /v1/batch (500 events per call, concurrent clients) vs straight inbox inserts"
BASELINE = "the same rows inserted into the inbox table (SQLAlchemy executemany, one process)"
PER_CALL = 500
SIZES = {"small": (40_000, 4), "full": (400_000, 4)}  # events, client processes
EVENTS = ("Product Viewed", "Product Added", "Cart Viewed", "Checkout Started", "Order Completed")


def _event(rng: random.Random, index: int, client: int) -> dict[str, Any]:
    """A typical analytics.js call: ids, a timestamp, a few properties and the context."""
    person = rng.randrange(50_000)
    at = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400 * 30))
    common: dict[str, Any] = {
        "messageId": f"bench-{client}-{index}-{uuid.uuid4().hex[:8]}",
        "anonymousId": f"anon-{person}",
        "timestamp": at.isoformat(),
        "context": {
            "ip": f"203.0.113.{person % 250}",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0",
            "page": {"path": f"/catalog/{person % 40}", "url": "https://shop.example.com/"},
            "library": {"name": "analytics.js", "version": "2.11.1"},
        },
    }
    kind = rng.random()
    if kind < 0.1:
        return {
            **common,
            "type": "identify",
            "userId": f"user-{person}",
            "traits": {"email": f"user{person}@example.com", "first_name": "Anna"},
        }
    if kind < 0.3:
        return {**common, "type": "page", "name": "Catalog", "properties": {"title": "Garden"}}
    return {
        **common,
        "type": "track",
        "userId": f"user-{person}" if rng.random() < 0.5 else None,
        "event": rng.choice(EVENTS),
        "properties": {
            "product_id": f"P{rng.randrange(4000):06d}",
            "price": rng.randrange(100, 99_900),
            "currency": "RUB",
            "category": "Garden / Tools",
        },
    }


def _batches(client: int, events: int) -> list[bytes]:
    rng = random.Random(client)
    import orjson  # noqa: PLC0415 - in the client process

    calls = [_event(rng, i, client) for i in range(events)]
    return [
        orjson.dumps({"batch": calls[start : start + PER_CALL]})
        for start in range(0, len(calls), PER_CALL)
    ]


def _client(url: str, key: str, client: int, events: int) -> None:
    """One client process: build its calls, say so, wait for the go, send them in order and
    print how many were acknowledged and when the last answer came."""
    bodies = _batches(client, events)
    accepted = 0
    with httpx.Client(base_url=url, auth=(key, ""), timeout=300) as http:
        print("ready", flush=True)
        sys.stdin.readline()
        for body in bodies:
            response = http.post(
                "/v1/batch", content=body, headers={"content-type": "application/json"}
            )
            response.raise_for_status()
            accepted += response.json()["accepted"]
    print(accepted, time.time(), flush=True)


def _clients(url: str, key: str, clients: int, share: int) -> tuple[int, float]:
    """Run the client processes together; returns the events acknowledged and the seconds
    from the go to the last answer."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, url, key, str(c), str(share)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for c in range(clients)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    started = time.time()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    finished: list[tuple[int, float]] = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"a client failed with exit code {proc.returncode}")
        accepted, at = out.split()
        finished.append((int(accepted), float(at)))
    return sum(a for a, _ in finished), max(at for _, at in finished) - started


def _prepare(data: Path) -> tuple[str, str]:
    """A migrated data folder with a workspace; returns an ingest key and an admin key."""
    runtime = build_runtime(Settings(data_dir=data))
    try:
        upgrade(runtime.db.engine)
        with runtime.db.scope() as session:
            result = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
            _, key = tenancy.issue_api_key(
                session, workspace_id=result.workspace.id, name="bench", scopes=["ingest"]
            )
        assert result.admin_key is not None
        return key, result.admin_key
    finally:
        runtime.close()


def _wait(url: str, path: str, ready: Any, *, timeout: float, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        while time.perf_counter() - started < timeout:
            try:
                response = http.get(path)
                if response.status_code == 200 and ready(response.json()):
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{path} did not get ready within {timeout:.0f} s")


def _ours(events: int, clients: int, data: Path) -> tuple[float, float, int]:
    key, admin_key = _prepare(data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data, port)
    try:
        _wait(url, "/healthz", lambda body: body["status"] == "ok", timeout=120, headers={})
        sent, ingest_seconds = _clients(url, key, clients, events // clients)
        admin = {"Authorization": f"Bearer {admin_key}"}
        drain = _wait(
            url,
            "/v1/events/loader",
            lambda body: body["waiting_rows"] == 0,
            timeout=3600,
            headers=admin,
        )
        return ingest_seconds, drain, sent
    finally:
        stop(server)


def _baseline(events: int, clients: int, data: Path) -> float:
    """The same calls, validated and normalised beforehand, inserted straight into the inbox."""
    runtime = build_runtime(Settings(data_dir=data))
    try:
        upgrade(runtime.db.engine)
        with runtime.db.scope() as session:
            workspace = tenancy.initialize(
                session, phone_region="RU", timezone="Europe/Moscow"
            ).workspace
            ctx = IngestContext(workspace=workspace, source="api")
        now = datetime.now(UTC)
        rows = []
        for client in range(clients):
            rng = random.Random(client)
            for index in range(events // clients):
                call = CALL_ADAPTER.validate_python(_event(rng, index, client))
                rows.append(
                    {
                        "workspace_id": workspace.id,
                        "brand_id": None,
                        "message_id": call.messageId,
                        "type": call.type,
                        "name": getattr(call, "event", None) or getattr(call, "name", None),
                        "user_id": call.userId,
                        "anonymous_id": call.anonymousId,
                        "identities": [
                            i.as_list()
                            for i in segment_identities(call, ctx.workspace.phone_region)
                        ],
                        "traits": getattr(call, "traits", {}),
                        "properties": getattr(call, "properties", {}),
                        "context": call.context,
                        "occurred_at": call.timestamp,
                        "received_at": now,
                        "source": "api",
                        "historical": False,
                    }
                )
        with stopwatch() as elapsed, runtime.db.scope() as session:
            size = bulk_insert_chunk_size(session, len(rows[0]))
            for start in range(0, len(rows), size):
                session.execute(InboxEvent.__table__.insert(), rows[start : start + size])
        return elapsed()
    finally:
        runtime.close()


def run(scale: str) -> list[BenchResult]:
    """Send the events over HTTP, then insert the same rows straight into the inbox."""
    wiring.install()
    events, clients = SIZES.get(scale, SIZES["small"])
    with tempfile.TemporaryDirectory(prefix="tactful-ingest-") as tmp:
        ingest, drain, sent = _ours(events, clients, Path(tmp) / "served")
        baseline = _baseline(events, clients, Path(tmp) / "baseline")
    return [
        BenchResult(
            benchmark=NAME,
            case=f"{sent:,} events, {clients} clients, {PER_CALL} per call",
            ours_seconds=ingest,
            baseline=BASELINE,
            baseline_seconds=baseline,
            items=sent,
            unit="events",
            target="≥ 10,000 events/s acknowledged",
            extra={
                "acknowledged events/s": f"{sent / ingest:,.0f}",
                "resolver + loader drain after the last call": f"{drain:.1f} s",
            },
        )
    ]


if __name__ == "__main__":  # a client process of the benchmark
    _client(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
