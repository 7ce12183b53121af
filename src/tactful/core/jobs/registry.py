"""The registry of job handlers (``@job("feature.verb")``) and periodic monitors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tactful.core.jobs.context import JobContext, MonitorContext

JobHandler = Callable[["JobContext"], Any]
MonitorFn = Callable[["MonitorContext"], Any]


@dataclass(frozen=True)
class JobSpec:
    """A registered job kind."""

    name: str
    handler: JobHandler
    max_attempts: int | None
    transactional: bool
    priority: int
    own_process: bool = False
    delay: timedelta | None = None


@dataclass(frozen=True)
class MonitorSpec:
    """A periodic function that finds due rows and enqueues one keyed job per item."""

    name: str
    fn: MonitorFn
    every: timedelta


JOBS: dict[str, JobSpec] = {}
MONITORS: dict[str, MonitorSpec] = {}


# Priorities (higher is claimed first; equal ones in order of run time). Work that decides
# customers' next messages (resolving events, triggers, journey steps) goes ahead of sending:
# a crowd whose wait ends together is moved on first and its mail follows at the provider's
# pace, the last message no later than if the two took turns. Upkeep (the warehouse loader,
# metrics, segments) keeps the default.
DECIDING = 6
SENDING = 5


def job(
    name: str,
    *,
    max_attempts: int | None = None,
    transactional: bool = True,
    priority: int = 0,
    own_process: bool = False,
    delay: timedelta | None = None,
) -> Callable[[JobHandler], JobHandler]:
    """Register a job handler under ``feature.verb``.

    A transactional handler's database work commits in the same transaction that marks the
    job done, so a worker that dies mid-way leaves no trace and the retry runs it once. A
    non-transactional handler (provider calls) manages its own scopes and must be idempotent.
    ``own_process``: on the embedded default, where one process serves the API and runs the
    jobs, ``serve`` runs these in a second process (heavy CPU work off the API's and the
    triggers' interpreter lock); elsewhere any worker runs them.
    ``delay``: a job asked for without a time runs this long afterwards, for work that
    batches well: its handler folds in the jobs asked for meanwhile (``queue.queued``), or,
    coalesced (``queue.enqueue_coalesced``), one run does what all the asks meanwhile asked.
    """
    if "." not in name:
        raise ValueError(f"job names are 'feature.verb', got {name!r}")

    def register(fn: JobHandler) -> JobHandler:
        existing = JOBS.get(name)
        if existing is not None and existing.handler is not fn:
            raise ValueError(f"job {name!r} is registered twice")
        JOBS[name] = JobSpec(name, fn, max_attempts, transactional, priority, own_process, delay)
        return fn

    return register


def own_process_jobs() -> frozenset[str]:
    """The jobs registered to run in a process of their own on the embedded default."""
    return frozenset(name for name, spec in JOBS.items() if spec.own_process)


def monitor(name: str, *, every: timedelta) -> Callable[[MonitorFn], MonitorFn]:
    """Register a periodic monitor."""

    def register(fn: MonitorFn) -> MonitorFn:
        MONITORS[name] = MonitorSpec(name, fn, every)
        return fn

    return register
