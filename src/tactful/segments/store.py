"""Queries over segments, versions, memberships and changes (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from tactful.core.dialect import bulk_insert_chunk_size, lock_rows
from tactful.customers.models import Customer
from tactful.segments.models import (
    CONTINUOUS,
    SCHEDULED,
    Segment,
    SegmentChange,
    SegmentMembership,
    SegmentVersion,
)


def segment(
    session: Session, workspace_id: int, segment_id: int, *, lock: bool = False
) -> Segment | None:
    stmt = select(Segment).where(Segment.id == segment_id, Segment.workspace_id == workspace_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def by_name(session: Session, workspace_id: int, name: str) -> Segment | None:
    return session.scalars(
        select(Segment).where(Segment.workspace_id == workspace_id, Segment.name == name)
    ).one_or_none()


def segments(session: Session, workspace_id: int) -> list[Segment]:
    return list(
        session.scalars(
            select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id)
        )
    )


def versions(session: Session, segment_id: int) -> list[SegmentVersion]:
    return list(
        session.scalars(
            select(SegmentVersion)
            .where(SegmentVersion.segment_id == segment_id)
            .order_by(SegmentVersion.version)
        )
    )


def member_ids(session: Session, segment_id: int) -> set[int]:
    return set(
        session.scalars(
            select(SegmentMembership.customer_id).where(SegmentMembership.segment_id == segment_id)
        )
    )


def members(
    session: Session, segment_id: int, *, after_id: int, limit: int
) -> list[SegmentMembership]:
    return list(
        session.scalars(
            select(SegmentMembership)
            .where(
                SegmentMembership.segment_id == segment_id,
                SegmentMembership.customer_id > after_id,
            )
            .order_by(SegmentMembership.customer_id)
            .limit(limit)
        )
    )


def add_members(session: Session, segment_id: int, ids: Sequence[int], at: datetime) -> None:
    rows = [{"segment_id": segment_id, "customer_id": i, "entered_at": at} for i in ids]
    size = bulk_insert_chunk_size(session, 3)
    for start in range(0, len(rows), size):
        session.execute(insert(SegmentMembership), rows[start : start + size])


def remove_members(session: Session, segment_id: int, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 900):
        session.execute(
            delete(SegmentMembership).where(
                SegmentMembership.segment_id == segment_id,
                SegmentMembership.customer_id.in_(ids[start : start + 900]),
            )
        )


def add_changes(
    session: Session, segment_id: int, change: str, ids: Sequence[int], refresh: int, at: datetime
) -> None:
    rows = [
        {"segment_id": segment_id, "customer_id": i, "change": change, "refresh": refresh, "at": at}
        for i in ids
    ]
    size = bulk_insert_chunk_size(session, 5)
    for start in range(0, len(rows), size):
        session.execute(insert(SegmentChange), rows[start : start + size])


def changes(
    session: Session, segment_id: int, *, before_id: int | None, limit: int
) -> list[SegmentChange]:
    stmt = select(SegmentChange).where(SegmentChange.segment_id == segment_id)
    if before_id is not None:
        stmt = stmt.where(SegmentChange.id < before_id)
    return list(session.scalars(stmt.order_by(SegmentChange.id.desc()).limit(limit)))


def due_scheduled(session: Session, now: datetime) -> list[Segment]:
    return list(
        session.scalars(
            select(Segment).where(
                Segment.refresh_mode == SCHEDULED,
                Segment.next_refresh_at.is_not(None),
                Segment.next_refresh_at <= now,
            )
        )
    )


def continuous(session: Session, workspace_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Segment.id).where(
                Segment.workspace_id == workspace_id, Segment.refresh_mode == CONTINUOUS
            )
        )
    )


def count_members(session: Session, segment_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(SegmentMembership)
            .where(SegmentMembership.segment_id == segment_id)
        )
        or 0
    )


def customers(session: Session, ids: Sequence[int]) -> list[Customer]:
    return list(session.scalars(select(Customer).where(Customer.id.in_(list(ids)))))
