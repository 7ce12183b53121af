"""Job handlers used by the job-runner tests (also imported by worker subprocesses)."""

from __future__ import annotations

import os
import sys
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session

from tactful.config import DatabaseSettings, Settings
from tactful.core import db
from tactful.core.jobs.context import JobContext, PermanentFailure, RetryLater
from tactful.core.jobs.registry import job

metadata = MetaData()
effects = Table(
    "test_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("worker", String(100), nullable=False),
)


def create_effects_table(session: Session) -> None:
    metadata.create_all(session.get_bind())


def effect_rows(session: Session) -> list[Any]:
    return list(session.execute(select(effects).order_by(effects.c.n, effects.c.id)))


def effect_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(effects)) or 0)


def _record(ctx: JobContext) -> None:
    ctx.session.execute(
        insert(effects).values(
            job_id=ctx.job_id,
            n=int(ctx.payload.get("n", 0)),
            worker=os.environ.get("TEST_WORKER_NAME", "main"),
        )
    )


@job("testing.record")
def record(ctx: JobContext) -> None:
    _record(ctx)


ROLES: list[tuple[int, bool]] = []  # (n, its transactions were background writes)


@job("testing.role")
def role(ctx: JobContext) -> None:
    ROLES.append((int(ctx.payload["n"]), bool(getattr(db._thread_role, "background", False))))


@job("testing.die_once")
def die_once(ctx: JobContext) -> None:
    """Writes its effect, then (first attempt, in a subprocess) the process dies uncommitted."""
    _record(ctx)
    ctx.session.flush()
    if ctx.attempt == 1 and os.environ.get("TEST_DIE") == "1":
        os._exit(17)


@job("testing.always_fails", max_attempts=3)
def always_fails(ctx: JobContext) -> None:
    _record(ctx)
    raise ValueError(f"boom on attempt {ctx.attempt}")


@job("testing.permanent")
def permanent(ctx: JobContext) -> None:
    raise PermanentFailure("the customer no longer exists")


@job("testing.later")
def later(ctx: JobContext) -> None:
    raise RetryLater(30, "provider asked us to slow down")


def settings_from_argv() -> Settings:
    db_url, data_dir = sys.argv[1], sys.argv[2]
    return Settings(data_dir=data_dir, database=DatabaseSettings(url=db_url))
