"""The jobs table (a transactional outbox) and the monitor schedule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigIntPK

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
DEAD = "dead"
STATUSES = (QUEUED, RUNNING, DONE, DEAD)


class Job(Base):
    """One unit of deferred work, written in the transaction of the change that asked for it."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_due", "status", "run_at"),
        Index("ix_jobs_name_status", "name", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(300), unique=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(10), default=QUEUED)
    priority: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    run_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    # A coalescing job asked for again while running runs once more when it finishes.
    rerun: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class MonitorSchedule(Base):
    """When each periodic monitor runs next; claimed atomically so one process runs it."""

    __tablename__ = "monitor_schedule"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
