"""Messaging's shapes: the send request other features use, and the API's bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tactful.policy.schemas import ChannelStep

Channel = Literal["email", "sms", "push", "viber", "telegram", "webhook", "call"]
MessageClass = Literal["marketing", "service", "transactional"]


@dataclass(frozen=True)
class SendRequest:
    """One message (or cascade) to one customer: the policy intent plus what to render."""

    workspace_id: int
    brand_id: int
    customer_id: int
    template_id: int
    message_class: str
    source: str  # "campaign:12", "journey:3:v2:step:welcome", "api:key:7"
    steps: tuple[ChannelStep, ...]
    context: dict[str, Any] = field(default_factory=dict)  # event, products, extra values
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
class SendOutcome:
    """What became of one request: a delivery planned, or why not."""

    decision_id: int
    outcome: str  # scheduled | suppressed | bundled
    reason: str
    delivery_id: int
    channel: str | None
    send_at: datetime | None
    cost: int


@dataclass(frozen=True)
class AudienceOutcome:
    """What became of one message to a whole audience (``send_audience``).

    ``by_reason`` counts every decision's reason code (``ok`` and ``deferred_*`` for
    scheduled ones, the suppression reason for the rest), so it sums to the audience size.
    Suppressed decisions have no delivery row: the ledger batch ``decision_batch_id`` keeps
    them. ``estimated_cost`` is the sum of the scheduled deliveries' prices (a cascade's
    later steps cost more only if they are reached)."""

    decision_batch_id: int | None
    scheduled: int
    suppressed: int
    bundled: int
    by_reason: dict[str, int]
    deliveries: int
    estimated_cost: int


# -- API ----------------------------------------------------------------------------------


class ContentRules(BaseModel):
    """Who the content is meant for (the policy's safety rails enforce it)."""

    model_config = ConfigDict(extra="forbid")

    audience_gender: Literal["f", "m"] | None = None
    min_age: int | None = Field(default=None, ge=0, le=150)
    max_age: int | None = Field(default=None, ge=0, le=150)


class TemplateIn(BaseModel):
    """A message (Liquid parts per channel; e-mail body in MJML), a master layout (MJML with
    ``{{ content }}``) or a reusable block (used with ``{% render 'key' %}``)."""

    model_config = ConfigDict(extra="forbid")

    brand_id: int
    kind: Literal["message", "layout", "block"] = "message"
    key: str = Field(pattern=r"^[a-z0-9_\-]{1,64}$", examples=["abandoned_cart"])
    name: str = Field(min_length=1, max_length=200)
    layout_id: int | None = None
    parts: dict[Channel, dict[str, str]] = Field(
        min_length=1,
        examples=[
            {
                "email": {
                    "subject": "{{ customer.first_name }}, your cart is waiting",
                    "body": "<mj-section><mj-column><mj-text>Hello</mj-text></mj-column>"
                    "</mj-section>",
                },
                "sms": {"text": "{{ customer.first_name }}, your cart is waiting"},
            }
        ],
    )
    content_rules: ContentRules = Field(default_factory=ContentRules)
    sample_context: dict[str, Any] = Field(
        default_factory=dict, description="values used by previews without a customer"
    )


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    kind: str
    key: str
    name: str
    layout_id: int | None
    parts: dict[str, dict[str, str]]
    content_rules: dict[str, Any]
    is_test_content: bool = Field(description="the subject or text reads as a test")
    sample_context: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, description="variables that do not exist, with line and column"
    )


class ValidationOut(BaseModel):
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    is_test_content: bool


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel = "email"
    customer_id: int | None = Field(default=None, description="a real customer; else a sample")
    context: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(BaseModel):
    channel: str
    subject: str | None
    title: str | None
    html: str | None
    text: str
    data: dict[str, Any]
    warnings: list[dict[str, Any]]


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand_id: int
    kind: Literal["smtp", "sms_generic", "twilio", "fcm", "viber", "telegram", "webhook", "call"]
    name: str = Field(pattern=r"^[a-z0-9_\-]{1,50}$", examples=["main-smtp"])
    config: dict[str, Any] = Field(
        default_factory=dict, description="endpoint, credentials and options of the provider"
    )
    rate_per_second: float | None = Field(default=None, gt=0, le=100_000)
    concurrency: int = Field(default=4, ge=1, le=256)
    enabled: bool = True


class ProviderOut(BaseModel):
    id: int
    brand_id: int
    channel: str
    kind: str
    name: str
    config: dict[str, Any] = Field(description="secrets are masked")
    rate_per_second: float | None
    concurrency: int
    enabled: bool
    webhook_url: str = Field(description="where the provider posts status callbacks")


class SenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand_id: int
    channel: Channel
    provider_id: int
    address: str = Field(
        min_length=1, max_length=320, description="from-address, SMS sender id, bot or app id"
    )
    name: str | None = Field(default=None, max_length=200, description="from-name")
    reply_to: str | None = Field(default=None, max_length=320)
    is_default: bool = True


class SenderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    channel: str
    provider_id: int
    address: str
    name: str | None
    reply_to: str | None
    is_default: bool


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    timeout_seconds: int | None = Field(
        default=None, ge=60, description="fall through to the next step when not delivered"
    )
    wait_for: Literal["delivered", "read"] = "delivered"


class MessageIn(BaseModel):
    """A message or cascade to one customer, checked by the contact policy."""

    model_config = ConfigDict(extra="forbid")

    brand_id: int
    customer_id: int
    template_id: int
    message_class: MessageClass = "transactional"
    steps: list[StepIn] = Field(min_length=1, max_length=7)
    topic: str | None = Field(default=None, max_length=64)
    context: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=20)
    dedupe_key: str | None = Field(default=None, max_length=300)
    priority: int = Field(default=0, ge=-100, le=100)
    not_before: datetime | None = None
    expires_at: datetime | None = None


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand_id: int
    template_id: int
    channel: Channel = "email"
    customer_ids: list[int] | None = Field(
        default=None, description="test recipients (default: every test customer)"
    )
    context: dict[str, Any] = Field(default_factory=dict)


class SendOutcomeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    decision_id: int
    outcome: str
    reason: str
    delivery_id: int
    channel: str | None
    send_at: datetime | None
    cost: int


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    customer_id: int
    decision_id: int
    template_id: int | None
    source: str
    channel: str | None
    address: str | None
    status: str
    reason: str | None
    subject: str | None
    cost: int
    send_at: datetime | None
    attempts: int
    provider_message_id: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    clicked_at: datetime | None


class CallTaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int
    customer_id: int
    delivery_id: int | None
    phone: str | None
    script: str
    context: dict[str, Any] = Field(description="the customer's profile and the message context")
    status: str
    outcome: str | None
    note: str | None
    due_at: datetime
    completed_at: datetime | None
    completed_by: str | None


class CallOutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["reached", "no_answer", "refused"]
    note: str | None = Field(default=None, max_length=2000)
