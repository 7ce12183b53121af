"""API shapes for customers, identities, consents and the timeline."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    namespace: str
    value: str
    raw_value: str | None
    valid: bool
    status: str = Field(description="ok, invalid, bounced or complained")
    status_reason: str | None
    source: str | None
    created_at: datetime


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    brand_scope: str = Field(description="'ws' for the workspace, 'b<id>' for a brand")
    kind: str
    channel: str
    topic: str
    status: str
    source: str
    evidence: dict[str, Any]
    changed_at: datetime


class MergeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    survivor_id: int
    merged_id: int
    reason: str
    actor: str
    at: datetime
    reverted_at: datetime | None


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    anonymous: bool
    first_name: str | None
    last_name: str | None
    gender: str | None
    birthday: date | None
    timezone: str | None
    city: str | None
    locale: str | None
    email: str | None
    phone: str | None
    is_test: bool
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None


class ProfileOut(CustomerOut):
    """A customer with identities, consents and merges."""

    requested_id: int = Field(description="the id asked for (a merged alias leads here)")
    identities: list[IdentityOut]
    consents: list[ConsentOut]
    merges: list[MergeOut]


class ProfileUpdate(BaseModel):
    """Traits to write: standard fields, e-mail/phone/loyalty_card, or custom attributes
    (any other name; types are inferred and listed under /v1/attributes)."""

    traits: dict[str, Any] = Field(
        min_length=1, examples=[{"first_name": "Anna", "favourite_colour": "green"}]
    )
    source: str = Field(default="api", max_length=50)


class ConsentChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["personal_data", "advertising", "topic"]
    status: Literal["granted", "revoked"]
    channel: str = Field(
        default="*", description="email, sms, push, viber, telegram, call, webhook or * (all)"
    )
    topic: str = Field(default="", max_length=64)
    brand_id: int | None = None


class ConsentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: list[ConsentChangeIn] = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, max_length=50, examples=["preference_centre"])
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="how the customer agreed: text version, form, ip, document …",
        examples=[{"text_version": "2026-01", "form": "checkout", "ip": "203.0.113.7"}],
    )


class ConsentChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    brand_scope: str
    kind: str
    channel: str
    topic: str
    status: str
    previous_status: str | None
    source: str
    evidence: dict[str, Any]
    actor: str
    at: datetime


class TimelineItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    kind: str
    title: str
    details: dict[str, Any]
    source: str


class AttributeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    type: str
    example: str | None
    first_seen_at: datetime


class TopicIn(BaseModel):
    brand_id: int
    key: str = Field(pattern=r"^[a-z0-9_]{1,64}$", examples=["promotions"])
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    message_class: Literal["marketing", "service", "transactional"] = "marketing"
    default_subscribed: bool = True


class TopicOut(TopicIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
