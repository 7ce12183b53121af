"""The job runner: claims due jobs with leases, runs them, retries with backoff, runs monitors.

Any number of runners may share a PostgreSQL database (claims use ``SKIP LOCKED``); on SQLite
the runner lives inside ``tactful serve``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, update

from tactful.core import clock
from tactful.core.db import background_writes
from tactful.core.dialect import insert_ignore
from tactful.core.jobs import queue
from tactful.core.jobs.context import JobContext, MonitorContext, PermanentFailure, RetryLater
from tactful.core.jobs.models import DONE, MonitorSchedule
from tactful.core.jobs.registry import DECIDING, JOBS, MONITORS, MonitorSpec
from tactful.core.metrics import JOB_DURATION, JOBS_FINISHED

if TYPE_CHECKING:
    from tactful.core.runtime import Runtime

log = structlog.get_logger("tactful.jobs")


def new_worker_id() -> str:
    """A worker identity that names the host and process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs jobs and monitors until stopped."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        run_monitors: bool = True,
        only: frozenset[str] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        """``only``: run just the jobs so named; ``skip``: never those (another process
        runs them)."""
        settings = runtime.settings.jobs
        self.runtime = runtime
        self.concurrency = concurrency or settings.concurrency
        self.worker_id = worker_id or new_worker_id()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.poll_seconds = settings.poll_seconds
        self.run_monitors = run_monitors
        self.only, self.skip = only, skip
        self._stop = threading.Event()
        self._running: dict[int, queue.ClaimedJob] = {}
        self._running_lock = threading.Lock()
        # when each monitor's next slot begins, as last read from the schedule
        self._monitor_next: dict[str, datetime] = {}

    # -- one job -------------------------------------------------------------------------

    def run_job(self, job: queue.ClaimedJob) -> str:
        """Run one claimed job to its next status (done, queued for retry, dead)."""
        db = self.runtime.db
        settings = self.runtime.settings.jobs
        spec = JOBS.get(job.name)
        started = clock.now()
        log_ = log.bind(job_id=job.id, job=job.name, attempt=job.attempts)
        if spec is None or job.attempts > job.max_attempts:
            reason = (
                f"no handler is registered for job {job.name!r}"
                if spec is None
                else f"the lease expired {job.attempts - 1} times (the worker running it died)"
            )
            with db.scope() as session:
                status = queue.fail(
                    session, job, worker=self.worker_id, error=reason, retry_in=None
                )
            log_.error("job.dead", reason=reason)
            JOBS_FINISHED.labels(job=job.name, status=status).inc()
            return status
        try:
            if spec.transactional:
                with db.scope() as session:
                    spec.handler(
                        JobContext(
                            self.runtime, job.id, job.name, job.payload, job.attempts, session
                        )
                    )
                    if not queue.complete(session, job, worker=self.worker_id):
                        # Another worker took over after our lease ran out: undo our work.
                        raise _LeaseLost
            else:
                spec.handler(JobContext(self.runtime, job.id, job.name, job.payload, job.attempts))
                with db.scope() as session:
                    if not queue.complete(session, job, worker=self.worker_id):
                        raise _LeaseLost
            status = DONE
        except _LeaseLost:
            log_.warning("job.lease_lost")
            return "lost"
        except RetryLater as exc:
            with db.scope() as session:
                status = queue.fail(
                    session,
                    job,
                    worker=self.worker_id,
                    error=str(exc),
                    retry_in=timedelta(seconds=exc.seconds),
                    count_attempt=False,
                )
        except PermanentFailure as exc:
            with db.scope() as session:
                status = queue.fail(
                    session,
                    job,
                    worker=self.worker_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=None,
                )
            log_.error("job.dead", error=str(exc))
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))
            retry_in = queue.backoff(
                job.attempts, base=settings.backoff_seconds, cap=settings.backoff_max_seconds
            )
            with db.scope() as session:
                status = queue.fail(
                    session, job, worker=self.worker_id, error=error, retry_in=retry_in
                )
            log_.warning("job.failed", error=str(exc), next_status=status)
        JOBS_FINISHED.labels(job=job.name, status=status).inc()
        JOB_DURATION.labels(job=job.name).observe((clock.now() - started).total_seconds())
        return status

    # -- loops ---------------------------------------------------------------------------

    def claim(self, limit: int, *, min_priority: int | None = None) -> list[queue.ClaimedJob]:
        with self.runtime.db.scope() as session:
            return queue.claim(
                session,
                worker=self.worker_id,
                limit=limit,
                lease=self.lease,
                min_priority=min_priority,
                only=self.only,
                skip=self.skip,
            )

    def _claimable(self, free: int) -> tuple[int, int | None]:
        """How many jobs to claim now, and the lowest priority allowed.

        One thread is kept for deciding work (resolving events, triggers, journey steps):
        sending and upkeep jobs can take a second or more each, and with every thread
        busy with them an event's trigger would wait behind mail already decided."""
        if self.concurrency < 2 or self.only is not None:
            return free, None
        with self._running_lock:
            routine = sum(1 for j in self._running.values() if j.priority < DECIDING)
        open_ = self.concurrency - 1 - routine
        return (min(free, open_), None) if open_ > 0 else (free, DECIDING)

    def run_pending(self, *, limit: int = 100) -> int:
        """Claim and run due jobs in this thread, once (tests and ``--once``)."""
        jobs = self.claim(limit)
        for job in jobs:
            self.run_job(job)
        return len(jobs)

    def drain(self, *, max_rounds: int = 1000) -> int:
        """Run due jobs until none is left (jobs may enqueue more). Returns how many ran."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_pending()
            total += ran
            if not ran:
                break
        return total

    def run_due_monitors(self) -> int:
        """Run each monitor whose time has come (one process wins each slot)."""
        now = clock.now()
        candidates = [
            spec
            for spec in list(MONITORS.values())
            if spec.name not in self._monitor_next or self._monitor_next[spec.name] <= now
        ]
        if not candidates:
            return 0
        claimed = self._claim_monitors(candidates, now)
        for spec in claimed:
            self._run_monitor(spec)
        return len(claimed)

    def _claim_monitors(self, specs: list[MonitorSpec], now: datetime) -> list[MonitorSpec]:
        """Claim the slots that are due in one transaction. A monitor another process
        claimed is not asked for again before its next slot: the loop runs after every
        job, and a write per monitor each time would queue on SQLite's write lock."""
        claimed: list[MonitorSpec] = []
        next_at: dict[str, datetime] = {}
        with self.runtime.db.scope() as session:
            session.execute(
                insert_ignore(
                    session,
                    MonitorSchedule,
                    [{"name": spec.name, "next_run_at": now} for spec in specs],
                    conflict=["name"],
                )
            )
            for spec in specs:
                won = session.execute(
                    update(MonitorSchedule)
                    .where(MonitorSchedule.name == spec.name, MonitorSchedule.next_run_at <= now)
                    .values(next_run_at=now + spec.every, last_run_at=now)
                    .returning(MonitorSchedule.name)
                    .execution_options(synchronize_session=False)
                ).scalar()
                if won is not None:
                    claimed.append(spec)
                    next_at[spec.name] = now + spec.every
            lost = [spec.name for spec in specs if spec.name not in next_at]
            if lost:
                rows = session.execute(
                    select(MonitorSchedule.name, MonitorSchedule.next_run_at).where(
                        MonitorSchedule.name.in_(lost)
                    )
                )
                next_at.update((name, clock.ensure_utc(at)) for name, at in rows)
        self._monitor_next.update(next_at)  # only once committed
        return claimed

    def _run_monitor(self, spec: MonitorSpec) -> None:
        error: str | None = None
        try:
            with self.runtime.db.scope() as session:
                spec.fn(MonitorContext(self.runtime, session, clock.now()))
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))
            log.exception("monitor.failed", monitor=spec.name)
        with self.runtime.db.scope() as session:
            session.execute(
                update(MonitorSchedule)
                .where(MonitorSchedule.name == spec.name)
                .values(last_error=error)
                .execution_options(synchronize_session=False)
            )

    def stop(self) -> None:
        self._stop.set()
        queue.work_available.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _heartbeat_loop(self) -> None:
        interval = max(0.5, self.lease.total_seconds() / 3)
        while not self._stop.wait(interval):
            with self._running_lock:
                ids = list(self._running)
            if not ids:
                continue
            try:
                with self.runtime.db.scope() as session:
                    queue.extend_leases(session, ids, worker=self.worker_id, lease=self.lease)
            except Exception:
                log.exception("jobs.heartbeat_failed")

    def _run_tracked(self, job: queue.ClaimedJob) -> None:
        try:
            with _writes_of(job.priority):
                self.run_job(job)
        except Exception:
            log.exception("job.crashed", job_id=job.id, job=job.name)
        finally:
            with self._running_lock:
                self._running.pop(job.id, None)
            queue.work_available.set()  # a thread is free: the loop may claim again

    def run_forever(self) -> None:
        """Claim and run jobs with ``concurrency`` threads until ``stop()``."""
        log.info("worker.started", worker=self.worker_id, concurrency=self.concurrency)
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="jobs-heartbeat", daemon=True
        )
        heartbeat.start()
        futures: set[Future[None]] = set()
        # the loop's claims are foreground writes: each is short, and a deciding job must
        # not wait behind requests before it even starts (see ``_writes_of``)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="job") as pool:
            while not self._stop.is_set():
                try:
                    if self.run_monitors:
                        with background_writes():
                            self.run_due_monitors()
                    futures = {f for f in futures if not f.done()}
                    free = self.concurrency - len(futures)
                    claimed: list[queue.ClaimedJob] = []
                    if free > 0:
                        limit, min_priority = self._claimable(free)
                        queue.work_available.clear()
                        claimed = self.claim(limit, min_priority=min_priority)
                        for job in claimed:
                            with self._running_lock:
                                self._running[job.id] = job
                            futures.add(pool.submit(self._run_tracked, job))
                        if len(claimed) < limit or min_priority is not None:
                            # nothing more to take now: wait for new work or a free thread
                            queue.work_available.wait(self.poll_seconds)
                    else:
                        self._stop.wait(0.02)
                except Exception:
                    log.exception("worker.loop_error")
                    self._stop.wait(self.poll_seconds)
        log.info("worker.stopped", worker=self.worker_id)


def _writes_of(priority: int) -> contextlib.AbstractContextManager[None]:
    """How a job's transactions meet API requests at SQLite's write lock. Routine jobs
    (loads, metrics, recording sends) are background writes: waiting requests go first.
    Deciding jobs (resolving events, triggers, journey steps) are not: they are the next
    steps of the events those requests acknowledge, and a deferral (up to
    ``BACKGROUND_YIELD_SECONDS``) at each step added up in the time from an event to its
    message."""
    return contextlib.nullcontext() if priority >= DECIDING else background_writes()


class _LeaseLost(Exception):
    pass
