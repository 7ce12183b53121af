"""The durable event inbox, the event catalog, reference data (stores, products) and import
runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK, OrjsonJSONType

# Inbox record types: the Segment spec calls plus first-class purchases.
IDENTIFY = "identify"
TRACK = "track"
PAGE = "page"
SCREEN = "screen"
ALIAS = "alias"
GROUP = "group"
PURCHASE = "purchase"
EVENT_TYPES = (IDENTIFY, TRACK, PAGE, SCREEN, ALIAS, GROUP, PURCHASE)


class InboxEvent(Base):
    """An accepted event, committed before the call is acknowledged.

    The resolver assigns ``customer_id`` (identity resolution, profile updates); the loader
    copies resolved rows to the warehouse and sets ``loaded_at``. ``seq`` only grows.
    """

    __tablename__ = "event_inbox"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id"),
        Index(
            "ix_event_inbox_unresolved",
            "seq",
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index(
            "ix_event_inbox_unloaded",
            "seq",
            sqlite_where=text("loaded_at IS NULL AND resolved_at IS NOT NULL"),
            postgresql_where=text("loaded_at IS NULL AND resolved_at IS NOT NULL"),
        ),
        Index("ix_event_inbox_customer", "customer_id", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int | None] = mapped_column(BigInt)
    message_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[str | None] = mapped_column(String(200))
    anonymous_id: Mapped[str | None] = mapped_column(String(200))
    # normalised identifiers found in the call: [[kind, namespace, value, raw, valid, reason]]
    # (read in bulk by the resolver and the loader: orjson on SQLite)
    identities: Mapped[list[Any]] = mapped_column(OrjsonJSONType, default=list)
    traits: Mapped[dict[str, Any]] = mapped_column(OrjsonJSONType, default=dict)
    properties: Mapped[dict[str, Any]] = mapped_column(OrjsonJSONType, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(OrjsonJSONType, default=dict)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(100))
    # historical imports feed profiles, metrics and segments but never fire triggers
    historical: Mapped[bool] = mapped_column(default=False)
    customer_id: Mapped[int | None] = mapped_column(BigInt)
    resolved_at: Mapped[datetime | None]
    loaded_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


# The inbox's workspace as a condition the query planner cannot take an index for. SQLite,
# without statistics, takes an equality on the leading column of the (workspace, message id)
# key for a selective one: with the workspace named beside a range of ``seq`` (a trigger's
# batch), it read every inbox row of the workspace and sorted them instead of reading the
# range (40 ms for 2,000 rows with 40,000 in the inbox, growing with the inbox). Beside a
# list of customers the planner takes the customer index either way.
def in_workspace(workspace_id: int) -> ColumnElement[bool]:
    return InboxEvent.workspace_id + literal_column("0") == workspace_id


class EventCatalog(Base):
    """Event names and their properties with inferred types (for the segment builder)."""

    __tablename__ = "event_catalog"
    __table_args__ = (UniqueConstraint("workspace_id", "type", "name", "property"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    # "" is the row for the event itself
    property: Mapped[str] = mapped_column(String(200), default="")
    value_type: Mapped[str] = mapped_column(String(20), default="")
    example: Mapped[str | None] = mapped_column(String(200))
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class Store(Base):
    """A physical store or an online shop (``format`` "online")."""

    __tablename__ = "stores"
    __table_args__ = (UniqueConstraint("workspace_id", "store_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    store_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(32))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class Product(Base):
    """A catalogue product (used in templates, recommendations and segment builders)."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("workspace_id", "product_id"),
        Index("ix_products_category", "workspace_id", "category_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    category_id: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(300))
    brand: Mapped[str | None] = mapped_column(String(100))
    price: Mapped[int | None] = mapped_column(BigInt)
    gender: Mapped[str | None] = mapped_column(String(1))
    image_url: Mapped[str | None] = mapped_column(String(500))
    url: Mapped[str | None] = mapped_column(String(500))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class ImportRun(Base):
    """One bulk import of a file: what it was, what happened, where the rejects went."""

    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    file_name: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_imported: Mapped[int] = mapped_column(default=0)
    rows_duplicate: Mapped[int] = mapped_column(default=0)
    rows_rejected: Mapped[int] = mapped_column(default=0)
    error_file: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
