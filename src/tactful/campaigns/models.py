"""Campaigns, their runs (one send each; a recurring campaign has many), the waves a run is
sent in, every recipient with their group and policy decision, and plan checkpoints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK

# Campaign statuses: draft → (awaiting_approval →) scheduled → sending → done | cancelled.
DRAFT = "draft"
AWAITING_APPROVAL = "awaiting_approval"
SCHEDULED = "scheduled"
SENDING = "sending"
DONE = "done"
CANCELLED = "cancelled"
CAMPAIGN_STATUSES = (DRAFT, AWAITING_APPROVAL, SCHEDULED, SENDING, DONE, CANCELLED)
FINAL = (DONE, CANCELLED)

# Run statuses (scheduled, sending, done, cancelled as above) and a refused run: a safety
# rail stopped it at send time (audience larger than confirmed, content rules) and nothing
# was sent.
REFUSED = "refused"
RUN_STATUSES = (SCHEDULED, SENDING, DONE, CANCELLED, REFUSED)

# Wave statuses.
PENDING = "pending"
SENT = "sent"
WAVE_STATUSES = (PENDING, SENT, CANCELLED)

# Recipient groups.
TARGET = "target"
CONTROL = "control"

# Checkpoint statuses.
MET = "met"
MISSED = "missed"
CHECKPOINT_STATUSES = (PENDING, MET, MISSED, CANCELLED)


class Campaign(Base):
    """One message (or cascade) to the union of target segments minus exclusions: what,
    to whom, when, how fast, with which control group, goal and plan checkpoints."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_workspace_status", "workspace_id", "status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=DRAFT)
    template_id: Mapped[int] = mapped_column(BigInt)
    message_class: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str | None] = mapped_column(String(64))
    # [{channel, timeout_seconds, wait_for}]: the cascade, cheapest channel first
    steps: Mapped[list[Any]]
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target_segment_ids: Mapped[list[Any]]
    exclusion_segment_ids: Mapped[list[Any]] = mapped_column(default=list)
    control_share: Mapped[float] = mapped_column(default=0.0)
    # {kind: now | at | local_time | recurring, …} (schemas.Schedule)
    schedule: Mapped[dict[str, Any]]
    throttle_per_minute: Mapped[int | None]
    expires_after_hours: Mapped[int] = mapped_column(default=48)
    priority: Mapped[int] = mapped_column(default=0)
    requires_approval: Mapped[bool] = mapped_column(default=True)
    # {kind: purchases | buyers | revenue, attribution_days}
    goal: Mapped[dict[str, Any] | None]
    # [{after_hours, min_value, steps, template_id}]
    checkpoints: Mapped[list[Any]] = mapped_column(default=list)
    # the audience size the marketer confirmed at launch, and how far a run may exceed it
    confirmed_recipients: Mapped[int | None] = mapped_column(BigInt)
    confirmation_tolerance: Mapped[float] = mapped_column(default=0.05)
    runs_started: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    launched_by: Mapped[str | None] = mapped_column(String(100))
    launched_at: Mapped[datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(100))
    approved_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(100))
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CampaignRun(Base):
    """One send of a campaign: its audience is taken when it starts."""

    __tablename__ = "campaign_runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "number"),
        Index("ix_campaign_runs_due", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(BigInt)
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(12), default=SCHEDULED)
    scheduled_at: Mapped[datetime]
    # set when each customer gets the message at a local time of this day
    local_date: Mapped[date | None] = mapped_column(Date)
    local_time: Mapped[str | None] = mapped_column(String(5))
    audience: Mapped[int] = mapped_column(BigInt, default=0)  # targets ∪ minus exclusions
    excluded: Mapped[int] = mapped_column(BigInt, default=0)  # removed by exclusions
    targeted: Mapped[int] = mapped_column(BigInt, default=0)
    control: Mapped[int] = mapped_column(BigInt, default=0)
    waves: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class CampaignWave(Base):
    """Part of a run sent together at one time (a time zone's local time, a throttle slot,
    or a slice of a large audience); its job hands it to the contact policy."""

    __tablename__ = "campaign_waves"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    number: Mapped[int]
    send_at: Mapped[datetime]
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    decision_batch_id: Mapped[int | None] = mapped_column(BigInt)
    scheduled: Mapped[int] = mapped_column(default=0)
    suppressed: Mapped[int] = mapped_column(default=0)
    estimated_cost: Mapped[int] = mapped_column(BigInt, default=0)
    sent_at: Mapped[datetime | None]


class CampaignRecipient(Base):
    """A customer of a run's audience: target or control (held out by a deterministic
    hash), the wave, and the contact policy's decision for them."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (Index("ix_campaign_recipients_wave", "run_id", "wave", "customer_id"),)

    run_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_runs.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigInt)
    group: Mapped[str] = mapped_column("grp", String(8))
    wave: Mapped[int | None]  # None for the control group
    decision_id: Mapped[int | None] = mapped_column(BigInt)
    outcome: Mapped[str | None] = mapped_column(String(12))  # scheduled | suppressed
    reason: Mapped[str | None] = mapped_column(String(40))


class CampaignCheckpoint(Base):
    """A plan checkpoint of a run ("300 purchases by day 3"): checked when due; when
    missed, the configured dearer channel goes to the target group's non-converters."""

    __tablename__ = "campaign_checkpoints"
    __table_args__ = (
        UniqueConstraint("run_id", "number"),
        Index("ix_campaign_checkpoints_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(BigInt)
    number: Mapped[int]
    due_at: Mapped[datetime]
    goal_kind: Mapped[str] = mapped_column(String(12))
    attribution_days: Mapped[int]
    min_value: Mapped[int] = mapped_column(BigInt)
    # the follow-up: its cascade ([{channel, timeout_seconds, wait_for}]) and template
    steps: Mapped[list[Any]]
    template_id: Mapped[int] = mapped_column(BigInt)
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    value: Mapped[int | None] = mapped_column(BigInt)
    followup_audience: Mapped[int] = mapped_column(BigInt, default=0)
    followup_scheduled: Mapped[int] = mapped_column(BigInt, default=0)
    decision_batch_id: Mapped[int | None] = mapped_column(BigInt)
    checked_at: Mapped[datetime | None]
