"""Enqueue, claim, complete and fail jobs. Stores only: nothing here commits."""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tactful.core import clock, direct
from tactful.core.db import after_commit
from tactful.core.dialect import bulk_insert_chunk_size, insert_ignore
from tactful.core.errors import NotFound
from tactful.core.jobs.models import DEAD, DONE, QUEUED, RUNNING, Job
from tactful.core.jobs.registry import JOBS

DEFAULT_MAX_ATTEMPTS = 8

# Set after a commit that enqueued work, so worker loops in this process wake at once.
work_available = threading.Event()


def _signal_work() -> None:
    work_available.set()


def _row(
    name: str,
    payload: dict[str, Any] | None,
    key: str | None,
    run_at: datetime | None,
    priority: int | None,
    max_attempts: int | None,
    now: datetime,
) -> dict[str, Any]:
    spec = JOBS.get(name)
    return {
        "name": name,
        "key": key,
        "payload": payload or {},
        "status": QUEUED,
        "priority": priority if priority is not None else (spec.priority if spec else 0),
        "attempts": 0,
        "rerun": False,
        "max_attempts": max_attempts
        or (spec.max_attempts if spec and spec.max_attempts else DEFAULT_MAX_ATTEMPTS),
        "run_at": run_at or (now + spec.delay if spec and spec.delay else now),
        "created_at": now,
        "updated_at": now,
    }


def enqueue(
    session: Session,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
) -> bool:
    """Add a job in the caller's transaction; a job with the same key is kept, not repeated.

    Returns True when a new job row was written.
    """
    now = clock.now()
    row = _row(name, payload, key, run_at, priority, max_attempts, now)
    if key is None:
        session.execute(insert(Job).values(row))
        inserted = True
    else:
        stmt = insert_ignore(session, Job, row, conflict=["key"]).returning(Job.id)
        inserted = session.execute(stmt).first() is not None
    after_commit(session, _signal_work)
    return inserted


_PENDING = select(Job.status, Job.rerun).where(Job.key == bindparam("key"))


def enqueue_coalesced(
    session: Session,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    key: str,
    run_at: datetime | None = None,
) -> None:
    """Ask for one more run of a singleton job (a resolver, a loader).

    At most one job per key is ever pending: a request while it is queued does nothing; while
    it runs, it runs once more afterwards; once done (or dead), it is queued again. The run
    asked for is due at ``run_at``, by default now plus the job's registered ``delay``,
    also when it follows a run still going: a job that gathers its work (the warehouse
    loader) then runs at most about once per delay however often it is asked for.
    """
    # read straight on the driver: this check runs on hot paths (every event a POS confirm
    # records), where SQLAlchemy's per-statement work cost more than the read
    pending = direct.execute(session, _PENDING, {"key": key}).first()
    if pending is not None and (pending[0] == QUEUED or (pending[0] == RUNNING and pending[1])):
        return  # a run is already due: nothing to write (keeps the row off hot paths)
    now = clock.now()
    row = _row(name, payload, key, run_at, None, None, now)
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(Job).values(row)
    else:
        stmt = sqlite.insert(Job).values(row)
    finished = Job.status.in_((DONE, DEAD))
    # the first request since the last run began sets when the next run is due
    first = or_(finished, and_(Job.status == RUNNING, Job.rerun.is_(False)))
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "status": case((finished, QUEUED), else_=Job.status),
            "attempts": case((finished, 0), else_=Job.attempts),
            "run_at": case((first, stmt.excluded.run_at), else_=Job.run_at),
            "rerun": case((Job.status == RUNNING, True), else_=Job.rerun),
            "finished_at": case((finished, None), else_=Job.finished_at),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    session.execute(stmt)
    after_commit(session, _signal_work)


def enqueue_many(
    session: Session,
    name: str,
    items: Iterable[tuple[str | None, dict[str, Any]]],
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
) -> int:
    """Enqueue many ``(key, payload)`` jobs of one kind; returns how many were new."""
    now = clock.now()
    rows = [_row(name, payload, key, run_at, priority, None, now) for key, payload in items]
    size = bulk_insert_chunk_size(session, len(rows[0]) if rows else 1)
    inserted = 0
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        stmt = insert_ignore(session, Job, chunk, conflict=["key"]).returning(Job.id)
        inserted += len(session.execute(stmt).all())
    if rows:
        after_commit(session, _signal_work)
    return inserted


def queued(
    session: Session, name: str, *, exclude: int | None = None, limit: int = 1000
) -> list[tuple[int, dict[str, Any]]]:
    """``(id, payload)`` of queued jobs of one kind, due or not, oldest first: what a
    handler may fold into its own run and then ``finish_queued``."""
    stmt = select(Job.id, Job.payload).where(Job.name == name, Job.status == QUEUED)
    if exclude is not None:
        stmt = stmt.where(Job.id != exclude)
    rows = session.execute(stmt.order_by(Job.id).limit(limit))
    return [(int(i), dict(payload)) for i, payload in rows]


def finish_queued(session: Session, ids: Sequence[int]) -> int:
    """Mark done the jobs among ``ids`` that are still queued (their work was folded into
    another job's, in the caller's transaction); returns how many."""
    if not ids:
        return 0
    now = clock.now()
    result = session.execute(
        update(Job)
        .where(Job.id.in_(list(ids)), Job.status == QUEUED)
        .values(status=DONE, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    name: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    priority: int = 0


def claim(
    session: Session,
    *,
    worker: str,
    limit: int,
    lease: timedelta,
    min_priority: int | None = None,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
) -> list[ClaimedJob]:
    """Lease up to ``limit`` due jobs (and jobs whose worker's lease ran out) to ``worker``:
    only those of ``min_priority`` or higher if given, only the jobs named in ``only`` if
    given, none of those named in ``skip``."""
    now = clock.now()
    due = (
        select(Job.id)
        .where(
            or_(
                and_(Job.status == QUEUED, Job.run_at <= now),
                and_(Job.status == RUNNING, Job.lease_until < now),
            )
        )
        .order_by(Job.priority.desc(), Job.run_at, Job.id)
        .limit(limit)
    )
    if min_priority is not None:
        due = due.where(Job.priority >= min_priority)
    if only is not None:
        due = due.where(Job.name.in_(sorted(only)))
    if skip:
        due = due.where(Job.name.not_in(sorted(skip)))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(Job)
        .where(Job.id.in_(due.scalar_subquery()))
        .values(
            status=RUNNING,
            attempts=Job.attempts + 1,
            lease_until=now + lease,
            locked_by=worker,
            updated_at=now,
        )
        .returning(Job.id, Job.name, Job.payload, Job.attempts, Job.max_attempts, Job.priority)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    return sorted(
        (
            ClaimedJob(r.id, r.name, dict(r.payload), r.attempts, r.max_attempts, r.priority)
            for r in rows
        ),
        key=lambda j: j.id,
    )


def _owned(job: ClaimedJob, worker: str) -> Any:
    return and_(
        Job.id == job.id,
        Job.locked_by == worker,
        Job.attempts == job.attempts,
        Job.status == RUNNING,
    )


def complete(session: Session, job: ClaimedJob, *, worker: str) -> bool:
    """Mark a job done if this worker still holds its lease; False means the lease was lost.

    A coalescing job asked for again while it ran goes back to the queue instead, due when
    that request asked for (``enqueue_coalesced``) or now, whichever is later.
    """
    now = clock.now()
    status = session.execute(
        update(Job)
        .where(_owned(job, worker))
        .values(
            status=case((Job.rerun, QUEUED), else_=DONE),
            attempts=case((Job.rerun, 0), else_=Job.attempts),
            run_at=case((and_(Job.rerun, Job.run_at < now), now), else_=Job.run_at),
            finished_at=case((Job.rerun, None), else_=now),
            rerun=False,
            updated_at=now,
            lease_until=None,
            last_error=None,
        )
        .returning(Job.status)
        .execution_options(synchronize_session=False)
    ).scalar()
    if status == QUEUED:  # asked for again while it ran: the run is due (soon)
        after_commit(session, _signal_work)
    return status is not None


def backoff(attempts: int, *, base: float, cap: float) -> timedelta:
    """Exponential backoff with ±20 % jitter: base, 2·base, 4·base … up to cap."""
    seconds = min(cap, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 - jitter only


def fail(
    session: Session,
    job: ClaimedJob,
    *,
    worker: str,
    error: str,
    retry_in: timedelta | None,
    count_attempt: bool = True,
) -> str:
    """Record a failure: reschedule after ``retry_in``, or end dead. Returns the new status."""
    now = clock.now()
    exhausted = count_attempt and job.attempts >= job.max_attempts
    if retry_in is None or exhausted:
        values: dict[str, Any] = {"status": DEAD, "finished_at": now}
    else:
        values = {"status": QUEUED, "run_at": now + retry_in}
        if not count_attempt:
            values["attempts"] = Job.attempts - 1
    values.update(updated_at=now, lease_until=None, last_error=error[-8000:])
    session.execute(
        update(Job)
        .where(_owned(job, worker))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return str(values["status"])


def extend_leases(session: Session, ids: Sequence[int], *, worker: str, lease: timedelta) -> None:
    """Keep this worker's leases on long-running jobs."""
    if not ids:
        return
    now = clock.now()
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.locked_by == worker, Job.status == RUNNING)
        .values(lease_until=now + lease, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def list_jobs(
    session: Session, *, status: str | None = None, name: str | None = None, limit: int = 100
) -> list[Job]:
    """Jobs, newest first, optionally filtered by status and name."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Job.status == status)
    if name:
        stmt = stmt.where(Job.name == name)
    return list(session.scalars(stmt))


def counts_by_status(session: Session) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: int(count) for status, count in rows}


def retry_dead(session: Session, job_id: int | None = None) -> int:
    """Put a dead job (or every dead job) back in the queue with fresh attempts."""
    now = clock.now()
    stmt = update(Job).where(Job.status == DEAD)
    if job_id is not None:
        if session.get(Job, job_id) is None:
            raise NotFound(f"job {job_id} does not exist", field="job_id")
        stmt = stmt.where(Job.id == job_id)
    result = session.execute(
        stmt.values(
            status=QUEUED, attempts=0, run_at=now, updated_at=now, finished_at=None
        ).execution_options(synchronize_session=False)
    )
    count = int(getattr(result, "rowcount", 0))
    if count:
        after_commit(session, _signal_work)
    return count


def prune_done(session: Session, *, older_than: timedelta) -> int:
    """Delete finished jobs older than ``older_than``."""
    cutoff = clock.now() - older_than
    result = session.execute(delete(Job).where(Job.status == DONE, Job.finished_at < cutoff))
    return int(getattr(result, "rowcount", 0))
