"""The jobs table: keyed enqueue, leases, retries with backoff, dead jobs, monitors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.jobs import queue
from tactful.core.jobs import registry as queue_registry
from tactful.core.jobs.context import MonitorContext
from tactful.core.jobs.models import Job, MonitorSchedule
from tactful.core.jobs.registry import MONITORS, monitor
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tests.conftest import Tenant
from tests.core import job_fixtures
from tests.core.job_fixtures import create_effects_table, effect_count, effect_rows

HERE = Path(__file__).resolve().parent
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _job(runtime: Runtime, job_id: int) -> Job:
    with runtime.db.scope(readonly=True) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _enqueue(runtime: Runtime, name: str, **kwargs: object) -> int:
    with runtime.db.scope() as session:
        queue.enqueue(session, name, kwargs.pop("payload", {}), **kwargs)  # type: ignore[arg-type]
        return int(session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0)


@pytest.fixture
def effects(runtime: Runtime) -> None:
    with runtime.db.scope() as session:
        create_effects_table(session)


def test_keyed_enqueue_writes_one_job(runtime: Runtime) -> None:
    with runtime.db.scope() as session:
        assert queue.enqueue(session, "testing.record", {"n": 1}, key="once") is True
        assert queue.enqueue(session, "testing.record", {"n": 2}, key="once") is False
    with runtime.db.scope() as session:
        assert queue.enqueue(session, "testing.record", {"n": 3}, key="once") is False
        jobs = list(session.scalars(select(Job)))
    assert [(j.key, j.payload) for j in jobs] == [("once", {"n": 1})]


def test_enqueue_rolls_back_with_the_change(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError), runtime.db.scope() as session:
        queue.enqueue(session, "testing.record", {"n": 1}, key="k")
        raise RuntimeError("the domain change failed")
    with runtime.db.scope(readonly=True) as session:
        assert session.scalar(select(Job.id)) is None


def test_job_runs_once_and_is_done(runtime: Runtime, effects: None, worker: Worker) -> None:
    job_id = _enqueue(runtime, "testing.record", payload={"n": 7})
    assert worker.drain() == 1
    assert worker.drain() == 0
    with runtime.db.scope(readonly=True) as session:
        assert [(r.job_id, r.n) for r in effect_rows(session)] == [(job_id, 7)]
    job = _job(runtime, job_id)
    assert (job.status, job.attempts, job.lease_until, job.last_error) == ("done", 1, None, None)


def test_job_scheduled_later_waits(runtime: Runtime, effects: None, worker: Worker) -> None:
    with clock.frozen(T0):
        _enqueue(runtime, "testing.record", payload={"n": 1}, run_at=T0 + timedelta(minutes=5))
        assert worker.drain() == 0
        clock.advance(timedelta(minutes=5))
        assert worker.drain() == 1


def test_failing_job_backs_off_then_dies_with_its_error(
    runtime: Runtime, effects: None, worker: Worker, client: TestClient, tenant: Tenant
) -> None:
    settings = runtime.settings.jobs
    with clock.frozen(T0):
        job_id = _enqueue(runtime, "testing.always_fails")
        delays = []
        for attempt in (1, 2):
            assert worker.run_pending() == 1
            job = _job(runtime, job_id)
            assert job.status == "queued"
            assert job.attempts == attempt
            assert f"boom on attempt {attempt}" in (job.last_error or "")
            delay = (job.run_at - clock.now()).total_seconds()
            expected = settings.backoff_seconds * 2 ** (attempt - 1)
            assert expected * 0.8 <= delay <= expected * 1.2
            delays.append(delay)
            assert worker.run_pending() == 0  # not due yet
            clock.advance(timedelta(seconds=delay))
        assert worker.run_pending() == 1
        job = _job(runtime, job_id)
        assert job.status == "dead"
        assert job.attempts == 3
        assert "ValueError: boom on attempt 3" in (job.last_error or "")
        clock.advance(timedelta(days=1))
        assert worker.run_pending() == 0
    with runtime.db.scope(readonly=True) as session:
        assert effect_count(session) == 0  # every attempt's writes were rolled back

    listed = client.get("/v1/admin/jobs", params={"status": "dead"}, headers=tenant.headers)
    assert listed.status_code == 200
    [dead] = listed.json()
    assert dead["id"] == job_id
    assert "boom on attempt 3" in dead["last_error"]

    retried = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=tenant.headers)
    assert retried.json() == {"requeued": 1}
    job = _job(runtime, job_id)
    assert (job.status, job.attempts) == ("queued", 0)


def test_permanent_failure_goes_dead_at_once(runtime: Runtime, worker: Worker) -> None:
    job_id = _enqueue(runtime, "testing.permanent")
    worker.drain()
    job = _job(runtime, job_id)
    assert (job.status, job.attempts) == ("dead", 1)
    assert "the customer no longer exists" in (job.last_error or "")


def test_retry_later_does_not_use_up_an_attempt(runtime: Runtime, worker: Worker) -> None:
    with clock.frozen(T0):
        job_id = _enqueue(runtime, "testing.later")
        for n in range(1, 11):  # more rounds than max_attempts (8)
            assert worker.run_pending() == 1
            job = _job(runtime, job_id)
            assert (job.status, job.attempts) == ("queued", 0)
            assert job.run_at == T0 + timedelta(seconds=30 * n)
            assert job.last_error == "provider asked us to slow down"
            clock.advance(timedelta(seconds=30))


def test_unknown_job_goes_dead_with_a_reason(runtime: Runtime, worker: Worker) -> None:
    job_id = _enqueue(runtime, "nobody.handles_this")
    worker.drain()
    job = _job(runtime, job_id)
    assert job.status == "dead"
    assert job.last_error == "no handler is registered for job 'nobody.handles_this'"


def test_lease_lost_undoes_the_work(runtime: Runtime, effects: None) -> None:
    """A slow worker whose lease was taken over must not commit its effect."""
    slow = Worker(runtime, worker_id="slow")
    fast = Worker(runtime, worker_id="fast")
    with clock.frozen(T0):
        _enqueue(runtime, "testing.record", payload={"n": 1})
        [claimed] = slow.claim(1)
        clock.advance(slow.lease + timedelta(seconds=1))
        assert fast.drain() == 1
        assert slow.run_job(claimed) == "lost"
    with runtime.db.scope(readonly=True) as session:
        assert effect_count(session) == 1


def _run_worker(settings_args: list[str], mode: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "run_worker.py"), *settings_args, mode],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_job_of_a_dead_worker_reruns_after_its_lease_and_happens_once(
    runtime: Runtime, effects: None, worker: Worker
) -> None:
    job_id = _enqueue(runtime, "testing.die_once", payload={"n": 5})
    args = [runtime.settings.database_url, str(runtime.settings.data_dir)]
    proc = _run_worker(args, "once", TEST_DIE="1", TEST_WORKER_NAME="doomed")
    proc.wait(timeout=60)
    assert proc.returncode == 17, proc.stderr.read() if proc.stderr else ""

    job = _job(runtime, job_id)
    assert (job.status, job.attempts) == ("running", 1)
    assert job.locked_by is not None
    with runtime.db.scope(readonly=True) as session:
        assert effect_count(session) == 0
    assert worker.drain() == 0  # the lease still holds

    clock.advance(worker.lease + timedelta(seconds=1))
    try:
        assert worker.drain() == 1
    finally:
        clock.advance(-(worker.lease + timedelta(seconds=1)))
    job = _job(runtime, job_id)
    assert (job.status, job.attempts) == ("done", 2)
    with runtime.db.scope(readonly=True) as session:
        assert [(r.job_id, r.n, r.worker) for r in effect_rows(session)] == [(job_id, 5, "main")]


@pytest.mark.parametrize("db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_three_worker_processes_share_2000_jobs_without_repeats(
    runtime: Runtime, effects: None
) -> None:
    with runtime.db.scope() as session:
        queue.enqueue_many(session, "testing.record", ((f"n-{n}", {"n": n}) for n in range(2000)))
    args = [runtime.settings.database_url, str(runtime.settings.data_dir)]
    procs = [_run_worker(args, "forever", TEST_WORKER_NAME=f"w{i}") for i in range(3)]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with runtime.db.scope(readonly=True) as session:
                if _record_jobs(session).get("done", 0) == 2000:
                    break
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    with runtime.db.scope(readonly=True) as session:
        rows = effect_rows(session)
        counts = _record_jobs(session)
    assert counts == {"done": 2000}
    assert sorted(r.n for r in rows) == list(range(2000))  # none twice, none lost
    assert {r.worker for r in rows} == {"w0", "w1", "w2"}
    assert all(proc.returncode == 0 for proc in procs)


def _record_jobs(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.name == "testing.record").group_by(Job.status)
    ).all()
    return {status: int(count) for status, count in rows}


def test_monitor_runs_once_per_interval_across_workers(runtime: Runtime) -> None:
    calls: list[datetime] = []

    @monitor("testing.tick", every=timedelta(minutes=10))
    def tick(ctx: MonitorContext) -> None:
        calls.append(ctx.now)
        queue.enqueue(
            ctx.session, "testing.record", {"n": len(calls)}, key=f"tick:{ctx.now.isoformat()}"
        )

    try:
        a, b = Worker(runtime, worker_id="a"), Worker(runtime, worker_id="b")
        with clock.frozen(T0):
            a.run_due_monitors()
            b.run_due_monitors()
            clock.advance(timedelta(minutes=9))
            a.run_due_monitors()
            clock.advance(timedelta(minutes=1))
            b.run_due_monitors()
            a.run_due_monitors()
        assert calls == [T0, T0 + timedelta(minutes=10)]
        with runtime.db.scope(readonly=True) as session:
            schedule = session.get(MonitorSchedule, "testing.tick")
            assert schedule is not None
            assert schedule.next_run_at == T0 + timedelta(minutes=20)
            assert len(list(session.scalars(select(Job).where(Job.name == "testing.record")))) == 2
    finally:
        MONITORS.pop("testing.tick")


def test_domain_event_enqueues_routed_jobs_once(runtime: Runtime) -> None:
    domain_events.route("testing.happened", "testing.record")
    try:
        with runtime.db.scope() as session:
            assert domain_events.publish(session, "testing.happened", {"n": 1}, key="x1") == 1
            assert domain_events.publish(session, "testing.happened", {"n": 1}, key="x1") == 0
            assert domain_events.publish(session, "testing.unrouted", {}, key="x1") == 0
        with runtime.db.scope(readonly=True) as session:
            jobs = list(session.scalars(select(Job)))
        assert [(j.name, j.key, j.payload) for j in jobs] == [
            ("testing.record", "testing.record:x1", {"event": "testing.happened", "n": 1})
        ]
    finally:
        domain_events._ROUTES.pop("testing.happened")


def test_worker_loop_runs_jobs_enqueued_while_running(runtime: Runtime, effects: None) -> None:
    loop = Worker(runtime, worker_id="loop", concurrency=2)
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for n in range(5):
            _enqueue(runtime, "testing.record", payload={"n": n})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with runtime.db.scope(readonly=True) as session:
                if effect_count(session) == 5:
                    break
            time.sleep(0.05)
    finally:
        loop.stop()
        thread.join(timeout=10)
    with runtime.db.scope(readonly=True) as session:
        assert sorted(r.n for r in effect_rows(session)) == [0, 1, 2, 3, 4]


assert job_fixtures.record is not None


def test_coalesced_job_runs_again_only_when_asked(
    runtime: Runtime, effects: None, worker: Worker
) -> None:
    def ask() -> None:
        with runtime.db.scope() as session:
            queue.enqueue_coalesced(session, "testing.record", {"n": 1}, key="loader")

    ask()
    ask()  # already queued: nothing more
    with runtime.db.scope(readonly=True) as session:
        assert len(list(session.scalars(select(Job)))) == 1
    assert worker.drain() == 1
    assert worker.drain() == 0
    ask()  # done: queued again
    [claimed] = worker.claim(1)
    ask()  # running: once more afterwards
    ask()
    assert worker.run_job(claimed) == "done"
    with runtime.db.scope(readonly=True) as session:
        job = session.scalars(select(Job)).one()
        assert (job.status, job.rerun, job.attempts) == ("queued", False, 0)
    assert worker.drain() == 1
    with runtime.db.scope(readonly=True) as session:
        assert effect_count(session) == 3
        assert session.scalars(select(Job)).one().status == "done"


def test_a_gathering_coalesced_job_runs_its_delay_after_the_first_ask(
    runtime: Runtime, effects: None, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coalesced job registered with a delay (the warehouse loader) is due its delay after
    the first ask since its last run began, also when asked while it runs: asked for
    continually, it runs about once per delay. An explicit time (a backlog left) wins."""
    spec = queue_registry.JOBS["testing.record"]
    monkeypatch.setitem(queue_registry.JOBS, spec.name, replace(spec, delay=timedelta(seconds=2)))

    def ask(run_at: datetime | None = None) -> None:
        with runtime.db.scope() as session:
            queue.enqueue_coalesced(session, "testing.record", key="gather", run_at=run_at)

    def due() -> tuple[str, datetime]:
        with runtime.db.scope(readonly=True) as session:
            job = session.scalars(select(Job)).one()
            return job.status, clock.ensure_utc(job.run_at)

    with clock.frozen(T0):
        ask()
        clock.advance(timedelta(seconds=1))
        ask()  # queued already: the due time stays
        assert due() == ("queued", T0 + timedelta(seconds=2))
        assert worker.drain() == 0
        clock.advance(timedelta(seconds=1))
        [claimed] = worker.claim(1)
        clock.advance(timedelta(milliseconds=100))
        ask()  # while it runs: due two seconds after this ask
        clock.advance(timedelta(milliseconds=100))
        ask()
        assert worker.run_job(claimed) == "done"
        assert due() == ("queued", T0 + timedelta(seconds=4, milliseconds=100))
        clock.advance(timedelta(seconds=1))
        assert worker.drain() == 0
        clock.advance(timedelta(seconds=1, milliseconds=100))
        [claimed] = worker.claim(1)
        ask(run_at=clock.now())  # rows remain: the next run is due at once
        assert worker.run_job(claimed) == "done"
        assert due() == ("queued", T0 + timedelta(seconds=4, milliseconds=300))
        assert worker.drain() == 1
        assert due()[0] == "done"
        clock.advance(timedelta(minutes=1))
        ask()  # done: due its delay from now
        assert due() == ("queued", T0 + timedelta(minutes=1, seconds=6, milliseconds=300))
    with runtime.db.scope(readonly=True) as session:
        assert effect_count(session) == 3


def test_workers_take_only_their_jobs_and_keep_a_thread_for_deciding_work(
    runtime: Runtime,
) -> None:
    """A worker told to skip some jobs never claims them, one told to run only them claims
    nothing else; a worker of several threads does not fill its last one with routine
    jobs while deciding jobs may come (resolving events, triggers, journey steps)."""
    with runtime.db.scope() as session:
        for n in range(3):
            queue.enqueue(session, "testing.record", {"n": n}, priority=0)
        queue.enqueue(session, "testing.other", {"n": 9}, priority=0)
    sender = Worker(runtime, worker_id="sender", only=frozenset({"testing.other"}))
    main = Worker(runtime, worker_id="main", concurrency=3, skip=frozenset({"testing.other"}))
    assert main._claimable(3) == (2, None)
    routine = main.claim(2)
    assert [(j.name, j.payload["n"]) for j in routine] == [
        ("testing.record", 0),
        ("testing.record", 1),
    ]
    main._running.update((j.id, j) for j in routine)
    # two routine jobs run: the third thread waits for deciding work only
    assert main._claimable(1) == (1, queue_registry.DECIDING)
    assert main.claim(1, min_priority=queue_registry.DECIDING) == []
    with runtime.db.scope() as session:
        queue.enqueue(session, "testing.record", {"n": 5}, priority=queue_registry.DECIDING)
    [deciding] = main.claim(1, min_priority=queue_registry.DECIDING)
    assert (deciding.payload["n"], deciding.priority) == (5, queue_registry.DECIDING)
    assert [(j.name, j.payload["n"]) for j in sender.claim(10)] == [("testing.other", 9)]
    assert [j.payload["n"] for j in main.claim(10)] == [2]


def test_deciding_jobs_write_in_the_foreground_routine_ones_in_the_background(
    runtime: Runtime,
) -> None:
    """On SQLite, waiting API requests take the write lock before background writers; the
    deciding jobs (resolving events, triggers, journey steps) do not give way to them."""
    job_fixtures.ROLES.clear()
    with runtime.db.scope() as session:
        queue.enqueue(session, "testing.role", {"n": 1}, priority=queue_registry.DECIDING)
        queue.enqueue(session, "testing.role", {"n": 2}, priority=0)
        queue.enqueue(session, "testing.role", {"n": 3}, priority=queue_registry.SENDING)
    worker = Worker(runtime, worker_id="w")
    for claimed in worker.claim(3):
        worker._running[claimed.id] = claimed
        worker._run_tracked(claimed)
    assert sorted(job_fixtures.ROLES) == [(1, False), (2, True), (3, True)]
    assert not worker._running


def test_a_coalesced_job_asked_for_while_running_wakes_the_workers_when_done(
    runtime: Runtime,
) -> None:
    with runtime.db.scope() as session:
        queue.enqueue_coalesced(session, "testing.record", key="single")
    worker = Worker(runtime, worker_id="w")
    [job] = worker.claim(1)
    with runtime.db.scope() as session:
        queue.enqueue_coalesced(session, "testing.record", key="single")  # while it runs
    queue.work_available.clear()
    with runtime.db.scope() as session:
        assert queue.complete(session, job, worker="w") is True
        assert not queue.work_available.is_set()  # not before the commit
    assert queue.work_available.is_set()
    assert _job(runtime, job.id).status == "queued"
    [again] = worker.claim(1)
    queue.work_available.clear()
    with runtime.db.scope() as session:
        assert queue.complete(session, again, worker="w") is True
    assert not queue.work_available.is_set()  # done: nothing to wake for
    assert _job(runtime, job.id).status == "done"


def test_monitor_slots_are_read_once_per_slot(runtime: Runtime) -> None:
    """A worker that lost a monitor's slot to another does not ask the database about it
    again before the next slot begins."""
    calls: list[str] = []

    @monitor("testing.slot", every=timedelta(minutes=10))
    def slot(ctx: MonitorContext) -> None:
        calls.append("ran")

    asked: list[str] = []

    def note(*args: object) -> None:
        if "testing.slot" in str(args[3]):
            asked.append(str(args[2]))

    try:
        a, b = Worker(runtime, worker_id="a"), Worker(runtime, worker_id="b")
        with clock.frozen(T0):
            a.run_due_monitors()
            b.run_due_monitors()
            assert b._monitor_next["testing.slot"] == T0 + timedelta(minutes=10)
            sa_event.listen(runtime.db.engine, "before_cursor_execute", note)
            try:
                b.run_due_monitors()
                clock.advance(timedelta(minutes=9))
                a.run_due_monitors()
                b.run_due_monitors()
                assert asked == []
                clock.advance(timedelta(minutes=1))
                b.run_due_monitors()
                a.run_due_monitors()
            finally:
                sa_event.remove(runtime.db.engine, "before_cursor_execute", note)
            assert asked  # the next slot is claimed from the database again
        assert calls == ["ran", "ran"]
    finally:
        MONITORS.pop("testing.slot")
