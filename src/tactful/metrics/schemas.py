"""API shapes of metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MetricOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    type: str = Field(description="number, string, boolean, timestamp or list")
    meaning: str
    window: str
    formula: str
    derived: bool = Field(description="computed when read, relative to now")
    values: list[str] = Field(description="possible values of an enumerated metric")
    default: int | str | None = Field(description="the value of a customer without history")


class CustomerMetricsOut(BaseModel):
    customer_id: int
    computed_at: datetime = Field(description="when the stored metrics were computed")
    metrics: dict[str, Any]


class MetricsStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    profiles_synced_to: datetime | None = Field(
        description="profile changes up to this moment are in the warehouse"
    )
    profiles_synced_at: datetime | None
    metrics_refreshed_at: datetime | None
    metrics_rebuilt_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class RebuildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: bool = Field(
        default=False, description="also copy every profile to the warehouse again"
    )


class RebuildOut(BaseModel):
    queued: bool = Field(description="true when a rebuild job was written")
