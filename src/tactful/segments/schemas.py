"""API shapes of segments."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFINITION_EXAMPLE = {
    "all": [
        {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
        {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 2},
        {"type": "metric", "metric": "avg_check_trend", "operator": "lt", "value": -0.1},
        {"not": {"type": "reachable", "channel": "sms", "brand_id": 1}},
    ]
}
Definition = dict[str, Any]


class DefinitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: Definition = Field(
        description="a tree of all / any / not over conditions (see docs/segments.md)",
        examples=[DEFINITION_EXAMPLE],
    )


class SegmentIn(DefinitionIn):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    brand_id: int | None = None
    refresh_mode: Literal["manual", "scheduled", "continuous"] = "manual"
    refresh_every_minutes: int | None = Field(default=None, ge=5, le=10_080)


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: Definition | None = Field(
        default=None, description="a new definition becomes a new version"
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    refresh_mode: Literal["manual", "scheduled", "continuous"] | None = None
    refresh_every_minutes: int | None = Field(default=None, ge=5, le=10_080)


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    brand_id: int | None
    version: int
    definition: Definition
    refresh_mode: str
    refresh_every_minutes: int | None
    next_refresh_at: datetime | None
    status: str = Field(description="new (never refreshed), ok or failed")
    last_error: str | None
    last_refresh_at: datetime | None
    last_good_refresh_at: datetime | None = Field(
        description="when the memberships were last computed successfully"
    )
    member_count: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    definition: Definition
    description: str = Field(description="the definition in plain language")
    actor: str
    created_at: datetime


class ValidationOut(BaseModel):
    valid: bool
    description: str = Field(description="the definition in plain language")


class SampleOut(BaseModel):
    customer_id: int
    values: dict[str, Any] = Field(description="each condition's path → the value it looked at")


class PreviewOut(BaseModel):
    size: int
    description: str
    sample: list[SampleOut]


class SizeOut(BaseModel):
    size: int


class EstimateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: Definition | None = Field(default=None, description="omit to use the segment's")
    brand_id: int
    cascade: list[str] = Field(
        default=["push", "email", "viber", "sms"],
        min_length=1,
        description="channels in the order tried; each customer costs the first reachable one",
    )


class EstimateOut(BaseModel):
    size: int
    brand_id: int
    reachable: dict[str, int] = Field(description="marketing-reachable members per channel")
    cost: dict[str, int] = Field(description="one message to each reachable member, minor units")
    cascade: list[str]
    cascade_reached: int
    cascade_cost: int = Field(description="minor units")
    per_channel_in_cascade: dict[str, int]


class OverlapOut(BaseModel):
    first: int
    second: int
    both: int
    either: int


class RefreshOut(BaseModel):
    segment_id: int
    status: str
    members: int
    entered: int
    exited: int
    error: str | None


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: int
    entered_at: datetime


class ChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int
    change: str = Field(description="entered or exited")
    refresh: int
    at: datetime
