"""Domain events: a service publishes what happened; ``wiring.py`` says which jobs react.

Publishing writes the reacting jobs in the publisher's transaction (a transactional outbox),
so a reaction happens if and only if the change committed. This is how reactions flow
upwards between features without an import (a purchase earning bonuses, a segment entry
starting a journey).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core.jobs.queue import enqueue, enqueue_many

_ROUTES: dict[str, list[str]] = {}


def route(event: str, job_name: str) -> None:
    """Make ``job_name`` run for every ``event`` published from now on."""
    jobs = _ROUTES.setdefault(event, [])
    if job_name not in jobs:
        jobs.append(job_name)


def routes() -> dict[str, list[str]]:
    """The current event → jobs table."""
    return {event: list(jobs) for event, jobs in _ROUTES.items()}


def publish(
    session: Session,
    event: str,
    payload: dict[str, Any],
    *,
    key: str,
    run_at: datetime | None = None,
) -> int:
    """Enqueue every job routed to ``event``, keyed so a repeated publish does nothing."""
    count = 0
    for job_name in _ROUTES.get(event, ()):
        count += enqueue(
            session, job_name, {"event": event, **payload}, key=f"{job_name}:{key}", run_at=run_at
        )
    return count


def publish_many(session: Session, event: str, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Publish many events of one kind (``(key, payload)`` pairs) in bulk."""
    jobs = _ROUTES.get(event, ())
    if not jobs:
        return 0
    materialised = list(items)
    count = 0
    for job_name in jobs:
        count += enqueue_many(
            session,
            job_name,
            ((f"{job_name}:{key}", {"event": event, **payload}) for key, payload in materialised),
        )
    return count
