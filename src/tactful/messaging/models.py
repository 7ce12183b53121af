"""Templates, providers, sender identities, the delivery outbox, tracking events and call
tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK

# Template kinds: a message (parts per channel), an e-mail master layout, a reusable block.
MESSAGE = "message"
LAYOUT = "layout"
BLOCK = "block"
TEMPLATE_KINDS = (MESSAGE, LAYOUT, BLOCK)

# Delivery statuses (DESIGN.md §4 "Messaging"): the outbox's state machine.
PLANNED = "planned"  # waiting for its send_at
QUEUED = "queued"  # handed to a dispatch job
SENDING = "sending"  # committed just before the provider call
SENT = "sent"  # the provider accepted it
DELIVERED = "delivered"
READ = "read"  # opened (e-mail) or seen (messengers, push)
CLICKED = "clicked"
FAILED = "failed"
BOUNCED = "bounced"
EXPIRED = "expired"
SUPPRESSED = "suppressed"  # the policy said no (at decision or at send time)
BUNDLED = "bundled"  # folded into another delivery's message
UNKNOWN = "unknown"  # caught mid-send by a crash: maybe sent, never resent
CANCELLED = "cancelled"
STATUSES = (
    PLANNED,
    QUEUED,
    SENDING,
    SENT,
    DELIVERED,
    READ,
    CLICKED,
    FAILED,
    BOUNCED,
    EXPIRED,
    SUPPRESSED,
    BUNDLED,
    UNKNOWN,
    CANCELLED,
)
WAITING = (PLANNED, QUEUED)
# How far along a delivery is; a status report never moves a delivery backwards.
PROGRESS = {SENT: 1, DELIVERED: 2, READ: 3, CLICKED: 4}
FINAL_FAILURES = (FAILED, BOUNCED, EXPIRED, SUPPRESSED, CANCELLED)

# Call task outcomes.
REACHED = "reached"
NO_ANSWER = "no_answer"
REFUSED = "refused"
CALL_OUTCOMES = (REACHED, NO_ANSWER, REFUSED)


class MessageTemplate(Base):
    """A message's content per channel (Liquid; MJML for e-mail), an e-mail master layout,
    or a reusable block. ``content_rules`` are checked by the policy's safety rails."""

    __tablename__ = "message_templates"
    __table_args__ = (UniqueConstraint("workspace_id", "brand_id", "kind", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    layout_id: Mapped[int | None] = mapped_column(BigInt)
    # channel -> {field: Liquid source}; e-mail: subject, body (MJML), preheader, text
    parts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # audience_gender, min_age, max_age (enforced by the policy's safety rails)
    content_rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_test_content: Mapped[bool] = mapped_column(default=False)
    sample_context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MessageProvider(Base):
    """A configured channel provider of a brand: endpoint, credentials, limits."""

    __tablename__ = "message_providers"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rate_per_second: Mapped[float | None]
    concurrency: Mapped[int] = mapped_column(default=4)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SenderIdentity(Base):
    """Who a brand's messages come from on a channel: an e-mail from-name and address, an SMS
    sender id, a bot, an app."""

    __tablename__ = "message_senders"
    __table_args__ = (Index("ix_message_senders_brand_channel", "brand_id", "channel"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))
    provider_id: Mapped[int] = mapped_column(ForeignKey("message_providers.id"))
    name: Mapped[str | None] = mapped_column(String(200))  # from-name, bot name, app name
    address: Mapped[str] = mapped_column(String(320))  # from-address, sender id, bot, app id
    reply_to: Mapped[str | None] = mapped_column(String(320))
    is_default: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class Delivery(Base):
    """One message to one customer on one channel: the outbox row and its state machine.

    ``sending`` is committed before the provider is called and the outcome after, so a
    dispatcher that dies in between leaves a row that recovery marks ``unknown`` (or resends
    with the same idempotency key where the provider honours one): never a second
    submission.
    """

    __tablename__ = "message_deliveries"
    __table_args__ = (
        Index("ix_message_deliveries_due", "status", "send_at"),
        Index("ix_message_deliveries_customer", "customer_id", "created_at"),
        Index("ix_message_deliveries_provider_msg", "provider_id", "provider_message_id"),
        Index("ix_message_deliveries_cascade", "cascade_at"),
        Index("ix_message_deliveries_source", "workspace_id", "source"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(BigInt)
    customer_id: Mapped[int] = mapped_column(BigInt)
    decision_id: Mapped[int] = mapped_column(BigInt, unique=True)
    template_id: Mapped[int | None] = mapped_column(BigInt)
    source: Mapped[str] = mapped_column(String(200))
    campaign_id: Mapped[int | None] = mapped_column(BigInt)
    journey_id: Mapped[int | None] = mapped_column(BigInt)
    message_class: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(20))
    provider_id: Mapped[int | None] = mapped_column(BigInt)
    sender_id: Mapped[int | None] = mapped_column(BigInt)
    address: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(String(40))
    step: Mapped[int] = mapped_column(default=0)
    is_test: Mapped[bool] = mapped_column(default=False)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    subject: Mapped[str | None] = mapped_column(String(500))
    cost: Mapped[int] = mapped_column(BigInt, default=0)
    send_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # the cascade's steps ([{channel, timeout, wait_for}]); a step not delivered (or read)
    # by cascade_at, or failed, falls through to the next channel
    steps: Mapped[list[Any]] = mapped_column(default=list)
    cascade_at: Mapped[datetime | None]
    wait_for: Mapped[str | None] = mapped_column(String(10))
    bundle_leader_id: Mapped[int | None] = mapped_column(BigInt)
    # a leader renders the items of every message bundled into it
    bundle_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sending_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    read_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]


class DeliveryEvent(Base):
    """Everything that happened to a delivery after it was planned (status changes, opens,
    clicks, provider callbacks), append-only."""

    __tablename__ = "message_delivery_events"
    __table_args__ = (
        Index("ix_message_delivery_events_delivery", "delivery_id", "at"),
        UniqueConstraint("dedupe_key"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    delivery_id: Mapped[int] = mapped_column(ForeignKey("message_deliveries.id"))
    kind: Mapped[str] = mapped_column(String(20))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]


class CallTask(Base):
    """A call for a person to make, with the customer's context; its outcome is recorded."""

    __tablename__ = "message_call_tasks"
    __table_args__ = (Index("ix_message_call_tasks_open", "workspace_id", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(BigInt)
    customer_id: Mapped[int] = mapped_column(BigInt)
    delivery_id: Mapped[int | None] = mapped_column(BigInt, unique=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    script: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(12), default="open")
    outcome: Mapped[str | None] = mapped_column(String(12))
    note: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(100))


class RateBucket(Base):
    """A provider's token bucket shared by every worker process (PostgreSQL): ``tokens``
    left at ``stamp``; it refills at the provider's rate up to its burst."""

    __tablename__ = "message_rate_buckets"

    provider_id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    tokens: Mapped[float]
    stamp: Mapped[datetime]
