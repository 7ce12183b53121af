"""The contact policy's vocabulary: intents in, decisions out, and the rule sets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MessageClass = Literal["marketing", "service", "transactional"]
MESSAGE_CLASSES = ("marketing", "service", "transactional")
CHANNELS = ("push", "email", "viber", "telegram", "sms", "webhook", "call")

# Decision outcomes.
SCHEDULED = "scheduled"  # a delivery should be created for ``channel`` at ``send_at``
SUPPRESSED = "suppressed"  # no message; ``reason`` says why
BUNDLED = "bundled"  # folded into another decision's message (``bundle_leader_id``)

# Statuses reported back by messaging for scheduled decisions.
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"
CANCELLED = "cancelled"
EXPIRED = "expired"
LEDGER_STATUSES = (
    SCHEDULED,
    SUPPRESSED,
    BUNDLED,
    SENT,
    DELIVERED,
    READ,
    FAILED,
    CANCELLED,
    EXPIRED,
)
# Statuses that count towards caps and spacing (a message that went, or will go, out).
COUNTED = (SCHEDULED, SENT, DELIVERED, READ)

# Reason codes: every decision has one, so "why (not)?" always has an answer.
REASONS = {
    "ok": "passed every rule",
    "deferred_quiet_hours": "deferred to the end of the customer's quiet hours",
    "deferred_cap": "deferred until the cap allows another message",
    "deferred_spacing": "deferred to keep the minimum spacing between messages",
    "no_personal_data_consent": "no personal-data consent",
    "no_advertising_consent": "no advertising consent for the brand and channel",
    "unsubscribed_topic": "the customer left the topic",
    "no_contact": "no usable contact on any channel of the cascade",
    "invalid_contact": "the contact is invalid",
    "hard_bounce": "the address bounced",
    "complained": "the customer complained",
    "not_test_recipient": "a test send goes only to the brand's test recipients",
    "duplicate": "the same dedupe key was used within its window",
    "cap_exceeded": "a cap leaves no room before the message expires",
    "spacing": "too soon after the previous message, and it would expire before",
    "quiet_hours_until_expiry": "quiet hours last until the message expires",
    "expired": "the message expired before it could be sent",
    "lost_arbitration": "a higher-priority message took the slot",
    "held_out": "the customer is held out of this program",
    "customer_merged": "the customer was merged into another",
    "cascade_exhausted": "no further channel in the cascade",
    "bundled": "folded into another message of the same kind",
    "cancelled": "the sender cancelled it",
}


@dataclass(frozen=True)
class ChannelStep:
    """One channel of a cascade: send here; if not delivered (or read) within ``timeout``,
    fall through to the next step."""

    channel: str
    timeout: timedelta | None = None
    wait_for: Literal["delivered", "read"] = "delivered"


@dataclass(frozen=True)
class Intent:
    """A wish to send one message to one customer, from anywhere (campaign, journey, API)."""

    workspace_id: int
    brand_id: int
    customer_id: int
    message_class: str
    source: str  # "campaign:12", "journey:3:v2:step:welcome_2", "api:key:7"
    steps: tuple[ChannelStep, ...]
    topic: str | None = None
    tags: tuple[str, ...] = ()
    dedupe_key: str | None = None
    dedupe_window: timedelta | None = None
    priority: int = 0
    expected_value: float = 0.0
    not_before: datetime | None = None
    expires_at: datetime | None = None
    bundle_key: str | None = None
    bundle_item: dict[str, Any] | None = None
    exclusive_group: str | None = None
    is_test: bool = False
    reference: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one intent (also stored in the ledger as ``decision_id``)."""

    decision_id: int
    outcome: str  # scheduled | suppressed | bundled
    reason: str
    rule: str | None
    channel: str | None
    address: str | None
    send_at: datetime | None
    step: int  # index into the intent's cascade steps
    cost: int  # minor units of the chosen channel (0 when nothing is sent)
    bundle_leader_id: int | None = None

    @property
    def scheduled(self) -> bool:
        return self.outcome == SCHEDULED


# -- rule sets ---------------------------------------------------------------------------------

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CapRule(BaseModel):
    """At most ``limit`` messages per calendar day (customer's time zone) or rolling week."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    limit: int = Field(ge=0, le=1000)
    period: Literal["day", "week"]
    channel: str | None = Field(default=None, description="None counts every channel")
    message_class: Literal["marketing", "service"] | None = Field(
        default=None, description="None counts marketing and service (never transactional)"
    )
    tag: str | None = Field(default=None, max_length=64, description="a topic or tag")

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and value not in CHANNELS:
            raise ValueError(f"channel must be one of {list(CHANNELS)}")
        return value


class SpacingRule(BaseModel):
    """Keep at least ``min_hours`` between two messages of a class (per channel or any)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    min_hours: float = Field(gt=0, le=24 * 60)
    message_class: Literal["marketing", "service"] = "marketing"
    channel: str | None = None


class Window(BaseModel):
    """An allowed sending window in local time, e.g. 09:00-21:00."""

    model_config = ConfigDict(extra="forbid")

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not HHMM.match(value):
            raise ValueError("use HH:MM, 24-hour")
        return value

    @model_validator(mode="after")
    def _order(self) -> Window:
        if self.start >= self.end:
            raise ValueError("start must be before end (a window does not cross midnight)")
        return self

    def bounds(self) -> tuple[time, time]:
        return time.fromisoformat(self.start), time.fromisoformat(self.end)


WindowClass = Literal["marketing", "service"]


def _marketing_only() -> list[WindowClass]:
    return ["marketing"]


class SendWindows(BaseModel):
    """When messages may be sent, per weekday, in the customer's local time; holidays use
    their own windows (none: no sending that day)."""

    model_config = ConfigDict(extra="forbid")

    default: list[Window] = Field(default_factory=lambda: [Window(start="09:00", end="21:00")])
    weekdays: dict[str, list[Window]] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)
    holiday_windows: list[Window] = Field(default_factory=list)
    applies_to: list[WindowClass] = Field(default_factory=_marketing_only)

    @field_validator("weekdays")
    @classmethod
    def _days(cls, value: dict[str, list[Window]]) -> dict[str, list[Window]]:
        unknown = sorted(set(value) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"unknown weekdays {unknown}; use {list(WEEKDAYS)}")
        return value


class RuleSet(BaseModel):
    """The rules of a workspace or a brand; stacked, the strictest wins."""

    model_config = ConfigDict(extra="forbid")

    caps: list[CapRule] = Field(default_factory=list)
    spacing: list[SpacingRule] = Field(default_factory=list)
    send_windows: SendWindows | None = None
    default_dedupe_window_hours: float = Field(default=24 * 7, gt=0)
    bundle_window_minutes: float = Field(default=30, ge=0)
    held_out_sources: list[str] = Field(
        default_factory=list,
        description="sources (e.g. 'campaign:12') customers in an exclusive group are held out of",
    )
    use_best_channel: bool = Field(
        default=True,
        description="let a customer's learned best "
        "channel go first among the cascade's reachable channels",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        ids = [c.id for c in self.caps] + [s.id for s in self.spacing]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"rule ids repeat: {repeated}")
        return self


DEFAULT_RULES = RuleSet(
    caps=[
        CapRule(id="marketing-per-day", limit=2, period="day", message_class="marketing"),
        CapRule(id="marketing-per-week", limit=6, period="week", message_class="marketing"),
    ],
    spacing=[SpacingRule(id="marketing-spacing", min_hours=4)],
    send_windows=SendWindows(),
)
