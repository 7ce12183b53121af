"""Segments, their definition versions, materialised memberships and the change log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK

MANUAL = "manual"
SCHEDULED = "scheduled"
CONTINUOUS = "continuous"
REFRESH_MODES = (MANUAL, SCHEDULED, CONTINUOUS)

NEW = "new"
OK = "ok"
FAILED = "failed"

ENTERED = "entered"
EXITED = "exited"


class Segment(Base):
    """A named audience; its definition is the latest of its versions."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)
    definition: Mapped[dict[str, Any]]
    refresh_mode: Mapped[str] = mapped_column(String(12), default=MANUAL)
    refresh_every_minutes: Mapped[int | None]
    next_refresh_at: Mapped[datetime | None] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(10), default=NEW)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_refresh_at: Mapped[datetime | None]
    last_good_refresh_at: Mapped[datetime | None]
    refreshes: Mapped[int] = mapped_column(default=0)
    member_count: Mapped[int] = mapped_column(BigInt, default=0)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SegmentVersion(Base):
    """Every definition a segment has had (updates add a version, nothing is overwritten)."""

    __tablename__ = "segment_versions"
    __table_args__ = (UniqueConstraint("segment_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    version: Mapped[int]
    definition: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text)  # the plain-language rendering
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class SegmentMembership(Base):
    """A customer currently in a segment."""

    __tablename__ = "segment_memberships"

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    entered_at: Mapped[datetime]


class SegmentChange(Base):
    """Append-only: a customer entered or exited a segment at a refresh."""

    __tablename__ = "segment_changes"
    __table_args__ = (
        Index("ix_segment_changes_segment_at", "segment_id", "at"),
        Index("ix_segment_changes_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigInt)
    change: Mapped[str] = mapped_column(String(8))
    refresh: Mapped[int]
    at: Mapped[datetime]
