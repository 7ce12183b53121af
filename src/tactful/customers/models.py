"""Customer profiles, their identities (and delivery addresses), merges and consents."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigIntPK

# Identity kinds. Matchable kinds resolve records to customers; every kind is stored.
PHONE = "phone"
EMAIL = "email"
CARD = "card"
ANONYMOUS = "anonymous"
DEVICE = "device"
EXTERNAL = "external"
PUSH_TOKEN = "push_token"  # noqa: S105 - an identity kind, not a secret
TELEGRAM = "telegram"
MATCHABLE_KINDS = (PHONE, EMAIL, CARD, ANONYMOUS, DEVICE, EXTERNAL)
IDENTITY_KINDS = (*MATCHABLE_KINDS, PUSH_TOKEN, TELEGRAM)

# Delivery status of a contact identity (phone, e-mail, push token, chat).
CONTACT_OK = "ok"
CONTACT_INVALID = "invalid"
CONTACT_BOUNCED = "bounced"
CONTACT_COMPLAINED = "complained"


class Customer(Base):
    """One person. A merged customer keeps its row and points at the survivor."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_workspace_updated", "workspace_id", "updated_at"),
        # covers a whole-base scan (campaign planning) without touching the wide rows
        Index(
            "ix_customers_planning", "workspace_id", "id", "timezone", "is_test", "merged_into_id"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    anonymous: Mapped[bool] = mapped_column(default=False)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    gender: Mapped[str | None] = mapped_column(String(1))
    birthday: Mapped[date | None] = mapped_column(Date)
    timezone: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(String(100))
    locale: Mapped[str | None] = mapped_column(String(16))
    # The primary delivery addresses (copies of identities, for fast reads).
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    is_test: Mapped[bool] = mapped_column(default=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # attribute name -> source that last set it (conflicts resolve by source priority)
    attribute_sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]


class Identity(Base):
    """An identifier or address that points at a customer.

    Valid matchable identities are unique per workspace, so one phone, e-mail, card or
    anonymous id can never belong to two customers. Invalid contacts are kept (with the
    reason) but never used for matching or delivery.
    """

    __tablename__ = "identities"
    __table_args__ = (
        Index(
            "uq_identities_valid_value",
            "workspace_id",
            "kind",
            "namespace",
            "value",
            unique=True,
            sqlite_where=text("valid"),
            postgresql_where=text("valid"),
        ),
        # by customer, and covering for reachability over a whole base
        Index("ix_identities_customer", "customer_id", "kind", "valid", "status", "workspace_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    namespace: Mapped[str] = mapped_column(String(50), default="")
    value: Mapped[str] = mapped_column(String(320))
    raw_value: Mapped[str | None] = mapped_column(String(320))
    valid: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(String(20), default=CONTACT_OK)
    status_reason: Mapped[str | None] = mapped_column(String(300))
    status_at: Mapped[datetime | None]
    source: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime]


class CustomerMerge(Base):
    """A recorded merge: the merged customer became an alias of the survivor."""

    __tablename__ = "customer_merges"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    survivor_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    merged_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    reason: Mapped[str] = mapped_column(String(300))
    # what moved, and the merged profile as it was, so the merge can be undone
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]
    reverted_at: Mapped[datetime | None]


# Consent kinds: personal-data processing is separate from advertising (152-FZ, 38-FZ, GDPR).
PERSONAL_DATA = "personal_data"
ADVERTISING = "advertising"
TOPIC = "topic"
CONSENT_KINDS = (PERSONAL_DATA, ADVERTISING, TOPIC)
CHANNELS = ("email", "sms", "push", "viber", "telegram", "call", "webhook")
ANY_CHANNEL = "*"
GRANTED = "granted"
REVOKED = "revoked"


class Consent(Base):
    """The current state of one consent or subscription of a customer.

    ``brand_scope`` is ``b<brand id>`` for a brand's consent or ``ws`` for the workspace
    (personal-data consent is given to the company).
    """

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("customer_id", "brand_scope", "kind", "channel", "topic"),
        # covering for reachability over a whole base
        Index(
            "ix_consents_planning",
            "customer_id",
            "brand_scope",
            "kind",
            "channel",
            "topic",
            "status",
            "workspace_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    brand_scope: Mapped[str] = mapped_column(String(24))
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20), default=ANY_CHANNEL)
    topic: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(50))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    changed_at: Mapped[datetime]


class ConsentChange(Base):
    """Append-only history of consent changes, with their evidence."""

    __tablename__ = "consent_changes"
    __table_args__ = (Index("ix_consent_changes_customer", "customer_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    brand_scope: Mapped[str] = mapped_column(String(24))
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    previous_status: Mapped[str | None] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(50))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]


class Topic(Base):
    """A subscription topic of a brand ("promotions", "order_status" …)."""

    __tablename__ = "topics"
    __table_args__ = (UniqueConstraint("workspace_id", "brand_id", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    message_class: Mapped[str] = mapped_column(String(20), default="marketing")
    # opt-out topics count as subscribed until the customer leaves them
    default_subscribed: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class AttributeCatalog(Base):
    """Custom attributes seen in a workspace, with their inferred types (for the segment
    builder)."""

    __tablename__ = "attribute_catalog"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(20))
    example: Mapped[str | None] = mapped_column(String(200))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
