"""Journeys' API shapes (the graph itself is :class:`tactful.journeys.graph.Graph`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tactful.journeys.graph import Graph


class JourneyIn(BaseModel):
    """A new draft journey."""

    model_config = ConfigDict(extra="forbid")

    brand_id: int
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    graph: Graph


class JourneyUpdate(BaseModel):
    """Changes to the draft (published versions never change)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    graph: Graph | None = None


class GraphCheckIn(BaseModel):
    """A graph to check without saving it."""

    model_config = ConfigDict(extra="forbid")

    brand_id: int
    graph: dict[str, Any]


class JourneyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    name: str
    description: str | None
    status: str = Field(description="draft, live, paused or stopped")
    scenario: str | None
    live_version: int | None = Field(description="the version new customers enter")
    trigger_kind: str | None
    draft: dict[str, Any] = Field(description="the graph being edited")
    created_by: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    graph: dict[str, Any]
    published_by: str
    published_at: datetime


class ProblemOut(BaseModel):
    field: str
    reason: str
    step: str | None = None


class CheckOut(BaseModel):
    valid: bool
    problems: list[ProblemOut]


class StopOut(BaseModel):
    journey: JourneyOut
    left: int = Field(description="customers taken out of the journey")


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int
    key: str | None = Field(
        default=None,
        max_length=150,
        description="an idempotency key: the same key never lets the customer in twice",
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="values templates see (and `event.properties`)"
    )


class EntriesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[EntryIn] = Field(min_length=1, max_length=1000)


class EntryOut(BaseModel):
    customer_id: int
    entered: bool
    reason: str = Field(
        description="entered, inside, reentry_never, reentry_too_soon, cap_total, cap_day, "
        "duplicate, not_live, unknown_customer or merged_customer"
    )
    instance_id: int | None = None


class EntriesOut(BaseModel):
    entered: int
    refused: int
    results: list[EntryOut]


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    journey_id: int
    version: int
    customer_id: int
    entry_no: int
    status: str = Field(description="waiting, queued, completed or exited")
    step_key: str | None
    visit: int
    next_at: datetime | None
    wait_event: str | None
    exit_reason: str | None
    converted_at: datetime | None
    entered_at: datetime
    finished_at: datetime | None
    context: dict[str, Any]


class StepLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    visit: int
    step_key: str
    kind: str
    outcome: str
    details: dict[str, Any]
    at: datetime


class InstanceDetailOut(InstanceOut):
    history: list[StepLogOut]


class StepStatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key: str
    type: str | None
    now: int = Field(description="customers standing on the step now")
    completed: int = Field(description="times the step ran to an outcome")
    outcomes: dict[str, int]
    messages: dict[str, int] = Field(description="the step's deliveries by status")
    variants: dict[str, int]


class StatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    journey_id: int
    entered: int
    active: int
    completed: int
    exited: dict[str, int] = Field(description="customers who left early, by reason")
    conversions: int
    conversion_rate: float
    messages: dict[str, int]
    versions: dict[int, dict[str, int]]
    steps: list[StepStatsOut]


class ScenarioOut(BaseModel):
    key: str
    name: str
    description: str


class ScenarioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand_id: int
    name: str | None = Field(default=None, min_length=1, max_length=200)
