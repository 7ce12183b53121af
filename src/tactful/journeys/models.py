"""Journeys, their immutable published versions, the per-customer instances the engine moves
through a version's graph, and the log of every step an instance completed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK

# Journey statuses.
DRAFT = "draft"  # never published
LIVE = "live"  # new customers enter its latest version
PAUSED = "paused"  # nobody enters; customers inside go on
STOPPED = "stopped"  # nobody enters; customers inside were taken out
JOURNEY_STATUSES = (DRAFT, LIVE, PAUSED, STOPPED)

# Instance statuses.
ACTIVE = "active"  # runs its current step now (inside the transaction that moved it)
WAITING = "waiting"  # until ``next_at`` and/or an event named ``wait_event``
QUEUED = "queued"  # due: an advance job (keyed by instance and visit) will run it
COMPLETED = "completed"  # walked off the end of the graph
EXITED = "exited"  # left early: ``exit_reason`` says why
LIVE_STATUSES = (ACTIVE, WAITING, QUEUED)
FINISHED = (COMPLETED, EXITED)

# Step-log kinds of moves that are not a step's own outcome.
CRITERIA = "criteria"  # an exit criterion took the customer out before the step ran
FAILED_STEP = "error"  # the step kept failing (or could not run at all)


class Journey(Base):
    """A journey: the editable draft graph and the version new customers enter."""

    __tablename__ = "journeys"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        Index("ix_journeys_workspace_status", "workspace_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default=DRAFT)
    # the graph being edited; publishing copies it into a new immutable version
    draft: Mapped[dict[str, Any]]
    # the trigger kind of the live version (what the trigger jobs look for)
    trigger_kind: Mapped[str | None] = mapped_column(String(20))
    live_version: Mapped[int | None]
    scenario: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    published_at: Mapped[datetime | None]


class JourneyVersion(Base):
    """A published graph; never changed. Customers finish the version they entered."""

    __tablename__ = "journey_versions"
    __table_args__ = (UniqueConstraint("journey_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int]
    graph: Mapped[dict[str, Any]]
    published_by: Mapped[str] = mapped_column(String(100))
    published_at: Mapped[datetime]


class JourneyInstance(Base):
    """One customer's walk through one version of a journey.

    ``visit`` grows with every move, so (instance, visit) names one step execution: advance
    jobs are keyed by it and the step log is unique on it. ``active_key`` is set while the
    instance is live, so a customer is never inside the same journey twice at once.
    """

    __tablename__ = "journey_instances"
    __table_args__ = (
        UniqueConstraint("journey_id", "customer_id", "entry_key"),
        UniqueConstraint("active_key"),
        Index("ix_journey_instances_due", "status", "next_at"),
        Index("ix_journey_instances_customer", "customer_id", "status"),
        Index("ix_journey_instances_journey", "journey_id", "status", "step_key"),
        Index("ix_journey_instances_entered", "journey_id", "entered_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int]
    workspace_id: Mapped[int] = mapped_column(BigInt)
    customer_id: Mapped[int] = mapped_column(BigInt)
    entry_no: Mapped[int] = mapped_column(default=1)
    # what let the customer in (an event id, a segment refresh, a date, an API key)
    entry_key: Mapped[str] = mapped_column(String(200))
    active_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    step_key: Mapped[str | None] = mapped_column(String(64))
    visit: Mapped[int] = mapped_column(default=0)
    next_at: Mapped[datetime | None]
    wait_event: Mapped[str | None] = mapped_column(String(200))
    # the inbox position of the triggering event: only later events resume or convert
    trigger_seq: Mapped[int | None] = mapped_column(BigInt)
    # the triggering event (cart items …), split variants, API context
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    exit_reason: Mapped[str | None] = mapped_column(String(40))
    converted_at: Mapped[datetime | None]
    entered_at: Mapped[datetime]
    step_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class JourneyStepLog(Base):
    """Append-only: an instance completed a step (or left the journey) at one visit."""

    __tablename__ = "journey_step_log"
    __table_args__ = (
        UniqueConstraint("instance_id", "visit"),
        Index("ix_journey_step_log_journey_step", "journey_id", "step_key"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("journey_instances.id", ondelete="CASCADE"))
    journey_id: Mapped[int] = mapped_column(BigInt)
    version: Mapped[int]
    visit: Mapped[int]
    step_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    # what happened: next, event, timeout, matched:<n>, otherwise, variant, holdout, sent,
    # suppressed, exit:<reason> …
    outcome: Mapped[str] = mapped_column(String(60))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime]
