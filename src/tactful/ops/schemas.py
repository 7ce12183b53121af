"""API shapes for operations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    key: str | None
    status: str
    attempts: int
    max_attempts: int
    run_at: datetime
    lease_until: datetime | None
    locked_by: str | None
    last_error: str | None
    payload: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class RetryResult(BaseModel):
    requeued: int
