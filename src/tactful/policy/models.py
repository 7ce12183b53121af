"""Versioned rule sets and the decision ledger (every intent's outcome with its reason)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK


class PolicyRuleSet(Base):
    """One version of the rules of a workspace (``brand_id`` null) or a brand."""

    __tablename__ = "policy_rule_sets"
    __table_args__ = (UniqueConstraint("workspace_id", "scope", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(24))  # "ws" or "b<brand id>"
    version: Mapped[int]
    rules: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(default=True)
    comment: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class DecisionBatch(Base):
    """What the intents of one ``decide`` call share: source, class, topic, cascade,
    reference, rule versions. A 1M-recipient campaign stores these once, not a million
    times."""

    __tablename__ = "policy_batches"
    __table_args__ = (Index("ix_policy_batches_source", "workspace_id", "source"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(BigInt)
    source: Mapped[str] = mapped_column(String(200))
    message_class: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    steps: Mapped[list[Any]] = mapped_column(default=list)
    exclusive_group: Mapped[str | None] = mapped_column(String(64))
    is_test: Mapped[bool] = mapped_column(default=False)
    reference: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rule_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    intents: Mapped[int] = mapped_column(default=0)
    decided_at: Mapped[datetime]


class ContactDecision(Base):
    """The ledger: what the gate decided for an intent, and what became of the message.

    Caps and spacing count the rows of a customer that went (or will go) out; dedupe looks
    up the dedupe key; "why did (not) customer X get Y" reads it.
    """

    __tablename__ = "contact_decisions"
    __table_args__ = (
        Index("ix_contact_decisions_customer_send", "customer_id", "send_at"),
        Index("ix_contact_decisions_batch", "batch_id"),
        Index(
            "ix_contact_decisions_dedupe",
            "workspace_id",
            "dedupe_key",
            "customer_id",
            sqlite_where=text("dedupe_key IS NOT NULL"),
            postgresql_where=text("dedupe_key IS NOT NULL"),
        ),
        Index(
            "ix_contact_decisions_bundle_leader",
            "bundle_leader_id",
            sqlite_where=text("bundle_leader_id IS NOT NULL"),
            postgresql_where=text("bundle_leader_id IS NOT NULL"),
        ),
        Index(
            "ix_contact_decisions_bundle",
            "customer_id",
            "bundle_key",
            sqlite_where=text("bundle_key IS NOT NULL"),
            postgresql_where=text("bundle_key IS NOT NULL"),
        ),
        # covering: the history a whole-base plan reads (caps and spacing)
        Index(
            "ix_contact_decisions_history",
            "workspace_id",
            "send_at",
            "status",
            "customer_id",
            "channel",
            "message_class",
            "batch_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("policy_batches.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(BigInt)
    customer_id: Mapped[int] = mapped_column(BigInt)
    message_class: Mapped[str] = mapped_column(String(20))
    # outcome of the gate, then the message's fate as messaging reports it
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(String(40))
    rule: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(320))
    step: Mapped[int] = mapped_column(default=0)
    cost: Mapped[int] = mapped_column(BigInt, default=0)
    send_at: Mapped[datetime | None]
    # the moment the intent asked for (its not-before time, or when it was decided)
    requested_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    priority: Mapped[int] = mapped_column(default=0)
    expected_value: Mapped[float] = mapped_column(default=0.0)
    dedupe_key: Mapped[str | None] = mapped_column(String(300))
    dedupe_until: Mapped[datetime | None]
    bundle_key: Mapped[str | None] = mapped_column(String(200))
    bundle_leader_id: Mapped[int | None] = mapped_column(BigInt)
    bundle_item: Mapped[dict[str, Any] | None]
    # a cascade's later steps point at the decision of the step before
    previous_id: Mapped[int | None] = mapped_column(BigInt)
    # what this intent adds to its batch's reference (e.g. a journey's trigger event)
    reference: Mapped[dict[str, Any] | None]
