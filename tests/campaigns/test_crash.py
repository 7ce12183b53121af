"""A worker process killed in the middle of a 20,000-recipient campaign: after a restart,
every target customer got exactly one message or has a recorded suppression — none twice,
none lost — and the control group got nothing (PostgreSQL, real worker processes, a real
local HTTP SMS provider that counts what it accepted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, or_, select

from tactful.campaigns import service as campaigns
from tactful.campaigns.models import CampaignRecipient, CampaignRun
from tactful.campaigns.schemas import CampaignIn
from tactful.core.jobs.models import DONE, Job
from tactful.core.runtime import Runtime
from tactful.messaging import service as messaging
from tactful.messaging.models import Delivery
from tactful.segments import service as segments
from tests.campaigns.conftest import EVERYONE, Brand, add_members, bulk_customers, email_setup
from tests.conftest import Tenant

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RECIPIENTS = 20_000
NO_PHONE_EVERY = 50  # these customers have no phone: a recorded suppression, no message


class SmsProvider:
    """A local SMS API that, like real ones, accepts a repeated idempotency key without
    sending again: ``accepted`` is what reached handsets, ``requests`` every POST."""

    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}  # idempotency key -> phone
        self.requests = 0
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the dispatcher's client expects

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                key = self.headers["Idempotency-Key"]
                with provider._lock:
                    provider.requests += 1
                    provider.accepted.setdefault(key, body["to"])
                answer = json.dumps({"id": key}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _worker(db_url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "run_worker.py"), db_url, str(data_dir)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _unfinished(runtime: Runtime, campaign_id: int) -> tuple[int, int]:
    """Campaign and messaging jobs not done yet, and the campaign's deliveries not sent yet.
    Other features' jobs are left out: the workers' monitors keep enqueueing them (the event
    pump, the profile sync), so their count may rise again after reaching zero."""
    with runtime.db.scope(readonly=True) as session:
        jobs = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.status != DONE,
                or_(Job.name.startswith("campaigns."), Job.name.startswith("messaging.")),
            )
        )
        waiting = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.status != "sent")
        )
        return int(jobs or 0), int(waiting or 0)


@pytest.mark.slow
@pytest.mark.parametrize("db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_killed_worker_loses_no_message_and_sends_none_twice(
    runtime: Runtime, tenant: Tenant, smtp: Any, db_url: str, tmp_path: Path
) -> None:
    provider = SmsProvider()
    brand: Brand = email_setup(runtime, tenant, smtp[1])
    try:
        with runtime.db.scope() as session:
            sms = messaging.create_provider(
                session,
                workspace_id=tenant.workspace_id,
                brand_id=tenant.brand_id,
                kind="sms_generic",
                name="local-sms",
                config={
                    "endpoint": f"{provider.url}/send",
                    "idempotency_header": "Idempotency-Key",
                },
                concurrency=16,
                actor="test",
            )
            messaging.create_sender(
                session,
                workspace_id=tenant.workspace_id,
                brand_id=tenant.brand_id,
                channel="sms",
                provider_id=sms.id,
                address="Shop",
                actor="test",
            )
            people = bulk_customers(
                session, tenant.workspace_id, RECIPIENTS, no_phone_every=NO_PHONE_EVERY
            )
        with runtime.db.scope() as session:
            segment = segments.create_segment(
                session,
                workspace_id=tenant.workspace_id,
                name="everyone",
                definition=EVERYONE,
                actor="test",
            )
            add_members(session, segment.id, people)
            campaign = campaigns.create_campaign(
                session,
                workspace_id=tenant.workspace_id,
                spec=CampaignIn(
                    brand_id=tenant.brand_id,
                    name="Order news",
                    template_id=brand.template_id,
                    message_class="service",  # service messages keep no quiet hours
                    steps=[{"channel": "sms"}],
                    target_segment_ids=[segment.id],
                    control_share=0.05,
                    requires_approval=False,
                ),
                actor="test",
            )
            estimate_targets = RECIPIENTS - round(RECIPIENTS * 0.05)
            campaigns.launch(
                session,
                workspace_id=tenant.workspace_id,
                campaign_id=campaign.id,
                expected_recipients=estimate_targets,
                tolerance=0.05,
                actor="test",
            )
            cid = campaign.id

        t0 = time.monotonic()
        first = _worker(db_url, tmp_path / "first")
        try:
            deadline = time.monotonic() + 240
            seen = False
            while len(provider.accepted) < 2_000 and time.monotonic() < deadline:
                assert first.poll() is None, "the worker exited on its own"
                if provider.accepted and not seen:
                    seen = True
                    print("first accepted", time.monotonic() - t0, flush=True)
                time.sleep(0.01)
            print("2000 accepted", time.monotonic() - t0, flush=True)
            os.kill(first.pid, signal.SIGKILL)
        finally:
            first.wait()
        accepted_before = len(provider.accepted)
        assert 2_000 <= accepted_before < RECIPIENTS

        # restarted: two processes now (any number may share the queue)
        restarted = [_worker(db_url, tmp_path / name) for name in ("second", "third")]
        try:
            deadline = time.monotonic() + 600
            last = 0.0
            while _unfinished(runtime, cid) != (0, 0) and time.monotonic() < deadline:
                assert all(p.poll() is None for p in restarted), "a worker exited on its own"
                time.sleep(0.2)
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    print(
                        "t",
                        last - t0,
                        len(provider.accepted),
                        _unfinished(runtime, cid),
                        flush=True,
                    )
            assert _unfinished(runtime, cid) == (0, 0)
        finally:
            for process in restarted:
                process.send_signal(signal.SIGTERM)
            for process in restarted:
                process.wait(timeout=60)
    finally:
        provider.close()

    with runtime.db.scope(readonly=True) as session:
        [run] = session.scalars(select(CampaignRun).where(CampaignRun.campaign_id == cid)).all()
        recipients = session.scalars(
            select(CampaignRecipient).where(CampaignRecipient.run_id == run.id)
        ).all()
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == cid)).all()
    assert run.status == "done"
    assert len(recipients) == RECIPIENTS
    targets = {r.customer_id: r for r in recipients if r.group == "target"}
    control = {r.customer_id for r in recipients if r.group == "control"}
    assert len(targets) == run.targeted
    assert len(control) == run.control == RECIPIENTS - run.targeted
    # every target customer has the policy's decision: a message, or a suppression
    outcomes = Counter((r.outcome, r.reason) for r in targets.values())
    no_phone = {c for n, c in enumerate(people) if n % NO_PHONE_EVERY == 0}
    assert outcomes == {
        ("scheduled", "ok"): len(set(targets) - no_phone),
        ("suppressed", "no_contact"): len(set(targets) & no_phone),
    }
    # one delivery per scheduled customer, sent, and none for anyone else
    per_customer = Counter(d.customer_id for d in rows)
    assert set(per_customer) == {c for c, r in targets.items() if r.outcome == "scheduled"}
    assert max(per_customer.values()) == 1
    assert Counter(d.status for d in rows) == {"sent": len(rows)}
    # the provider accepted exactly one message per delivery and per phone: none twice,
    # none lost (a request repeated after the crash carried the same idempotency key)
    assert sorted(provider.accepted) == sorted(f"tactful-{d.id}-{d.decision_id}" for d in rows)
    phones = Counter(provider.accepted.values())
    assert len(phones) == len(rows)
    assert max(phones.values()) == 1
    assert set(phones) == {d.address for d in rows}
    assert not control & {d.customer_id for d in rows}
