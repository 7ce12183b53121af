"""Campaign shapes: what a marketer defines (audience, message, schedule, control group,
goal, checkpoints) and what the API returns (campaigns, runs, recipients, stats)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tactful.messaging.schemas import StepIn

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MAX_SEGMENTS = 20


def _hhmm(value: str) -> str:
    if not HHMM.match(value):
        raise ValueError("use HH:MM, 24-hour")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NowSchedule(_Strict):
    """Send as soon as the campaign is launched (and approved)."""

    kind: Literal["now"] = "now"


class AtSchedule(_Strict):
    """Send at one moment."""

    kind: Literal["at"]
    at: AwareDatetime


class LocalTimeSchedule(_Strict):
    """Send on ``date`` at ``time`` in each customer's own time zone (customers without one
    use the workspace's)."""

    kind: Literal["local_time"]
    date: date
    time: str = Field(examples=["10:00"])

    _time = field_validator("time")(_hhmm)


class RecurringSchedule(_Strict):
    """Send again every day, or on some weekdays, at ``time``: each run takes its own
    audience and has its own recipients."""

    kind: Literal["recurring"]
    frequency: Literal["daily", "weekly"]
    time: str = Field(examples=["10:00"])
    weekdays: list[Weekday] = Field(default_factory=list, description="weekly: the days it runs on")
    customer_local: bool = Field(
        default=False, description="at `time` in each customer's own time zone"
    )
    timezone: str | None = Field(
        default=None, description="the zone of `time` (default: the workspace's)"
    )
    starts_on: date | None = None
    until: date | None = Field(default=None, description="the last day a run may start")
    max_runs: int | None = Field(default=None, ge=1, le=10_000)

    _time = field_validator("time")(_hhmm)

    @model_validator(mode="after")
    def _days(self) -> RecurringSchedule:
        if self.frequency == "weekly" and not self.weekdays:
            raise ValueError("a weekly schedule names its weekdays")
        if self.frequency == "daily" and self.weekdays:
            raise ValueError("a daily schedule runs every day; use weekly to pick days")
        if self.starts_on and self.until and self.until < self.starts_on:
            raise ValueError("until is before starts_on")
        return self


Schedule = Annotated[
    NowSchedule | AtSchedule | LocalTimeSchedule | RecurringSchedule,
    Field(discriminator="kind"),
]


class Goal(_Strict):
    """What a conversion is: purchases (receipts), buyers (customers who bought) or revenue
    (minor units), by the target group within ``attribution_days`` of a run's start."""

    kind: Literal["purchases", "buyers", "revenue"] = "purchases"
    attribution_days: int = Field(default=7, ge=1, le=90)


class Checkpoint(_Strict):
    """ "300 purchases by day 3": ``after_hours`` after a run starts, the goal must have
    reached ``min_value``; if not, ``steps`` (a dearer channel) go to every target customer
    who has not converted."""

    after_hours: int = Field(ge=1, le=24 * 90)
    min_value: int = Field(ge=1)
    steps: list[StepIn] = Field(min_length=1, max_length=7)
    template_id: int | None = Field(default=None, description="default: the campaign's")


class CampaignSpec(_Strict):
    """Everything a campaign is made of."""

    brand_id: int
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    template_id: int
    message_class: Literal["marketing", "service"] = "marketing"
    topic: str | None = Field(default=None, max_length=64)
    steps: list[StepIn] = Field(
        min_length=1, max_length=7, description="the channel, or a cascade cheapest first"
    )
    context: dict[str, Any] = Field(default_factory=dict, description="extra template values")
    target_segment_ids: list[int] = Field(min_length=1, max_length=MAX_SEGMENTS)
    exclusion_segment_ids: list[int] = Field(default_factory=list, max_length=MAX_SEGMENTS)
    control_share: float = Field(
        default=0.0, ge=0.0, le=0.5, description="share of the audience held out (0 to 0.5)"
    )
    schedule: Schedule = Field(default_factory=NowSchedule)
    throttle_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="at most this many messages a minute"
    )
    expires_after_hours: int = Field(
        default=48,
        ge=1,
        le=24 * 14,
        description="a message the policy defers (quiet hours, caps) is dropped after this",
    )
    priority: int = Field(default=0, ge=-100, le=100)
    requires_approval: bool = Field(default=True, description="a second person approves the launch")
    goal: Goal | None = None
    checkpoints: list[Checkpoint] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        if self.checkpoints and self.goal is None:
            raise ValueError("checkpoints measure the goal: set a goal")
        return self


class CampaignIn(CampaignSpec):
    """A new campaign (a draft)."""


class CampaignPatch(_Strict):
    """Changes to a draft; fields left out stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    template_id: int | None = None
    message_class: Literal["marketing", "service"] | None = None
    topic: str | None = Field(default=None, max_length=64)
    steps: list[StepIn] | None = Field(default=None, min_length=1, max_length=7)
    context: dict[str, Any] | None = None
    target_segment_ids: list[int] | None = Field(
        default=None, min_length=1, max_length=MAX_SEGMENTS
    )
    exclusion_segment_ids: list[int] | None = Field(default=None, max_length=MAX_SEGMENTS)
    control_share: float | None = Field(default=None, ge=0.0, le=0.5)
    schedule: Schedule | None = None
    throttle_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    expires_after_hours: int | None = Field(default=None, ge=1, le=24 * 14)
    priority: int | None = Field(default=None, ge=-100, le=100)
    requires_approval: bool | None = None
    goal: Goal | None = None
    checkpoints: list[Checkpoint] | None = Field(default=None, max_length=10)


class LaunchIn(_Strict):
    expected_recipients: int = Field(
        ge=0,
        description="the target-group size the marketer saw and confirms (from the estimate)",
    )
    tolerance: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="how far a run's target group may exceed the confirmed size",
    )


class ReviewIn(_Strict):
    comment: str | None = Field(default=None, max_length=2000)


class TestSendIn(_Strict):
    customer_ids: list[int] | None = Field(
        default=None, max_length=100, description="test recipients (default: every one)"
    )


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    name: str
    description: str | None
    status: str = Field(
        description="draft, awaiting_approval, scheduled, sending, done or cancelled"
    )
    template_id: int
    message_class: str
    topic: str | None
    steps: list[dict[str, Any]]
    context: dict[str, Any]
    target_segment_ids: list[int]
    exclusion_segment_ids: list[int]
    control_share: float
    schedule: dict[str, Any]
    throttle_per_minute: int | None
    expires_after_hours: int
    priority: int
    requires_approval: bool
    goal: dict[str, Any] | None
    checkpoints: list[dict[str, Any]]
    confirmed_recipients: int | None
    confirmation_tolerance: float
    runs_started: int
    next_run_at: datetime | None = None
    last_error: str | None
    created_by: str
    launched_by: str | None
    launched_at: datetime | None
    approved_by: str | None
    approved_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EstimateOut(BaseModel):
    audience: int = Field(
        description="members of the target segments now (memberships), minus exclusions"
    )
    excluded: int = Field(description="members the exclusion segments remove")
    targeted: int = Field(description="the target group: what a launch confirms")
    control: int = Field(description="held out by the control share")
    live_size: int = Field(description="customers the segments' definitions match right now")
    reachable: dict[str, int] = Field(
        description="per channel, customers of the live definitions reachable for marketing"
    )
    cascade_reached: int = Field(description="live customers some channel of the cascade reaches")
    cascade_cost: int = Field(
        description="one message each on the first channel that reaches them, minor units"
    )
    per_channel_in_cascade: dict[str, int]


class CancelOut(BaseModel):
    campaign: CampaignOut
    stopped: dict[str, int] = Field(
        description="runs, waves, checkpoints and deliveries that were stopped"
    )


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: int
    status: str = Field(description="scheduled, sending, done, cancelled or refused")
    scheduled_at: datetime
    local_date: date | None
    local_time: str | None
    audience: int
    excluded: int
    targeted: int
    control: int
    waves: int
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class RecipientOut(BaseModel):
    run: int
    customer_id: int
    group: str = Field(description="target or control")
    wave: int | None
    decision_id: int | None
    outcome: str | None = Field(description="the policy's decision: scheduled or suppressed")
    reason: str | None
    delivery_id: int | None
    delivery_status: str | None


class CheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: int
    number: int
    due_at: datetime
    goal_kind: str
    min_value: int
    status: str = Field(description="pending, met, missed or cancelled")
    value: int | None = Field(description="the goal's value when checked")
    followup_audience: int = Field(description="non-converters the dearer channel went to")
    followup_scheduled: int
    checked_at: datetime | None


class TestSendOut(BaseModel):
    customer_id: int
    outcome: str
    reason: str
    delivery_id: int
    channel: str | None


class GroupStats(BaseModel):
    customers: int
    buyers: int = Field(description="customers with a purchase in the attribution window")
    purchases: int
    revenue: int = Field(description="minor units")
    conversion_rate: float


class StatsOut(BaseModel):
    campaign_id: int
    audience: int = Field(description="recipients of every run: target and control")
    targeted: int
    control: int
    scheduled: int = Field(description="target customers the policy scheduled a message for")
    suppressed: int
    suppressed_by_reason: dict[str, int]
    deliveries: int
    waiting: int = Field(description="deliveries planned or queued, not sent yet")
    sent: int
    delivered: int
    opened: int
    clicked: int
    failed: int
    unknown: int = Field(description="caught mid-send by a crash: maybe sent, never resent")
    cancelled: int
    suppressed_at_send: int = Field(description="stopped by the policy's re-check at send time")
    unsubscribed: int
    complained: int
    by_channel: dict[str, int] = Field(description="messages sent per channel")
    cost: int = Field(description="what was sent, minor units")
    converted: GroupStats = Field(description="the target group's conversions")
    control_converted: GroupStats
    attribution_days: int
