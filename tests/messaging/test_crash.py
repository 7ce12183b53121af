"""Kill a real dispatcher process mid-batch: no message reaches the SMTP server twice, and
every planned delivery ends with a recorded state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from tests.messaging.conftest import Brand, MakeCustomer, SmtpSink, deliveries, request, run_jobs

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
from tactful.messaging.service.dispatch import group_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COUNT = 200


def _delivery_id(raw: bytes) -> int:
    found = re.search(rb"^Message-ID: <tactful-(\d+)-\d+@", raw, re.MULTILINE)
    assert found is not None, "a message without our Message-ID"
    return int(found.group(1))


def test_killed_dispatcher_never_sends_twice_and_loses_nothing(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    db_url: str,
    tmp_path: Path,
) -> None:
    sink, _port = smtp
    sink.delay = 0.02  # a slow server: the batch takes a while, so the kill lands mid-batch
    with runtime.db.scope() as session:
        ids = [make_customer(session=session) for _ in range(COUNT)]
    with runtime.db.scope() as session:
        outcomes = service.send(
            session,
            [request(brand, cid, message_class="transactional", topic=None) for cid in ids],
        )
    assert {o.outcome for o in outcomes} == {"scheduled"}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    process = subprocess.Popen(
        [sys.executable, str(HERE / "run_dispatcher.py"), db_url, str(tmp_path / "worker")],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        while len(sink.messages) < 12 and time.monotonic() < deadline:
            assert process.poll() is None, "the dispatcher exited on its own"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    received_before = len(sink.messages)
    assert 12 <= received_before < COUNT

    # another worker picks the batch up once the dead one's lease has run out
    with clock.frozen(clock.now() + timedelta(minutes=10)):
        run_jobs(Worker(runtime, worker_id="after-crash"))

    received = Counter(_delivery_id(raw) for _f, _t, raw in sink.messages)
    assert max(received.values()) == 1  # nothing reached the server twice
    rows = deliveries(runtime)
    statuses = Counter(d.status for d in rows)
    assert set(statuses) <= {"sent", "unknown"}
    assert sum(statuses.values()) == COUNT
    sent = {d.id for d in rows if d.status == "sent"}
    unknown = {d.id for d in rows if d.status == "unknown"}
    # every sent delivery arrived once; everything that arrived is sent or marked unknown
    assert sent <= set(received)
    assert set(received) <= sent | unknown
    # only the groups in flight when the process died (at most three) are unknown, never resent
    assert 1 <= len(unknown) <= 3 * group_size(4)
    assert all(d.attempts == 1 for d in rows)
