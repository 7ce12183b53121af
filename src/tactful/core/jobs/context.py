"""What a job handler or monitor receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from tactful.core.runtime import Runtime


class RetryLater(Exception):
    """Raised by a handler to run again later without it counting as a failure."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {seconds:g}s")
        self.seconds = seconds
        self.reason = reason


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help: the job goes dead at once."""


@dataclass
class JobContext:
    """A running job: its payload, its attempt number and (if transactional) its session."""

    runtime: Runtime
    job_id: int
    name: str
    payload: dict[str, Any]
    attempt: int
    _session: Session | None = field(default=None, repr=False)

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError(
                f"job {self.name!r} is not transactional; open runtime.db.scope() yourself"
            )
        return self._session


@dataclass
class MonitorContext:
    """A monitor run: a session whose enqueued jobs commit together."""

    runtime: Runtime
    session: Session
    now: datetime
