"""API shapes for tenancy."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class WorkspaceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    phone_region: str
    timezone: str
    currency: str
    created_at: datetime


class BrandIn(BaseModel):
    slug: str = Field(min_length=1, max_length=63, examples=["garden"])
    name: str = Field(min_length=1, max_length=200, examples=["Garden & Home"])


class BrandOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    created_at: datetime


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["web shop tracking"])
    scopes: list[Literal["ingest", "pos", "admin"]] = Field(
        min_length=1, description="ingest: send events; pos: loyalty operations; admin: all"
    )
    brand_id: int | None = Field(default=None, description="Limit the key to one brand")


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: list[str]
    brand_id: int | None
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When the key last authenticated a call (to within five minutes); null if never"
    )
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; shown only this once")


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, Any]
    at: datetime


class ChannelPriceIn(BaseModel):
    brand_id: int
    channel: Literal["push", "email", "webhook", "telegram", "viber", "sms", "call"]
    price: int = Field(ge=0, description="per message, in minor units (kopecks, cents)")
    provider: str = Field(default="default", max_length=50)
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class ChannelPriceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    brand_id: int
    channel: str
    provider: str
    price: int
    currency: str
    updated_at: datetime
