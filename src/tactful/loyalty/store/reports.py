"""Ledger checks and reports: sums per account, lots that disagree with the ledger, the
liability and its expiry profile, activity per period. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from tactful.loyalty.models import (
    AVAILABLE,
    OPEN_LOT,
    PENDING,
    Account,
    LedgerLine,
    Lot,
)


def account_sums(session: Session, account_ids: Sequence[int] | None) -> dict[int, dict[str, int]]:
    """Per account: the cached balances and what the ledger lines add up to."""
    line_sums = select(
        LedgerLine.account_id.label("account_id"),
        func.coalesce(
            func.sum(case((LedgerLine.bucket == AVAILABLE, LedgerLine.points), else_=0)), 0
        ).label("available"),
        func.coalesce(
            func.sum(case((LedgerLine.bucket == PENDING, LedgerLine.points), else_=0)), 0
        ).label("pending"),
    ).group_by(LedgerLine.account_id)
    if account_ids is not None:
        line_sums = line_sums.where(LedgerLine.account_id.in_(account_ids))
    sub = line_sums.subquery()
    lot_sums = select(
        Lot.account_id.label("account_id"),
        func.coalesce(func.sum(case((Lot.state == AVAILABLE, Lot.remaining), else_=0)), 0).label(
            "available"
        ),
        func.coalesce(func.sum(case((Lot.state == PENDING, Lot.remaining), else_=0)), 0).label(
            "pending"
        ),
        func.min(Lot.remaining).label("min_remaining"),
    ).group_by(Lot.account_id)
    if account_ids is not None:
        lot_sums = lot_sums.where(Lot.account_id.in_(account_ids))
    lots = lot_sums.subquery()
    stmt = (
        select(
            Account.id,
            Account.balance,
            Account.pending,
            func.coalesce(sub.c.available, 0),
            func.coalesce(sub.c.pending, 0),
            func.coalesce(lots.c.available, 0),
            func.coalesce(lots.c.pending, 0),
            func.coalesce(lots.c.min_remaining, 0),
        )
        .outerjoin(sub, sub.c.account_id == Account.id)
        .outerjoin(lots, lots.c.account_id == Account.id)
    )
    if account_ids is not None:
        stmt = stmt.where(Account.id.in_(account_ids))
    return {
        int(r[0]): {
            "balance": int(r[1]),
            "pending": int(r[2]),
            "lines_available": int(r[3]),
            "lines_pending": int(r[4]),
            "lots_available": int(r[5]),
            "lots_pending": int(r[6]),
            "min_lot_remaining": int(r[7]),
        }
        for r in session.execute(stmt)
    }


def lot_mismatches(session: Session, account_ids: Sequence[int] | None) -> list[dict[str, int]]:
    """Lots whose cached ``remaining`` differs from the sum of their lines."""
    line_sums = select(LedgerLine.lot_id, func.sum(LedgerLine.points).label("points"))
    if account_ids is not None:
        line_sums = line_sums.where(LedgerLine.account_id.in_(account_ids))
    sums = line_sums.group_by(LedgerLine.lot_id).subquery()
    stmt = select(Lot.id, Lot.remaining, func.coalesce(sums.c.points, 0)).outerjoin(
        sums, sums.c.lot_id == Lot.id
    )
    if account_ids is not None:
        stmt = stmt.where(Lot.account_id.in_(account_ids))
    stmt = stmt.where(Lot.remaining != func.coalesce(sums.c.points, 0))
    return [
        {"lot_id": int(r[0]), "remaining": int(r[1]), "lines": int(r[2])}
        for r in session.execute(stmt)
    ]


def bucket_index(column: Any, boundaries: Sequence[datetime]) -> ColumnElement[Any]:
    """The index ``i`` with ``boundaries[i] <= column < boundaries[i + 1]`` as a balanced CASE
    (portable, exact in any time zone); -1 before the first boundary, ``len - 1`` after the
    last."""

    def build(lo: int, hi: int) -> ColumnElement[Any]:
        # column is known to be >= boundaries[lo] (or below all when lo == -1) and < boundaries[hi]
        if hi - lo <= 1:
            return literal(lo)
        mid = (lo + hi) // 2
        return case((column < boundaries[mid], build(lo, mid)), else_=build(mid, hi))

    return build(-1, len(boundaries))


def expiry_profile(
    session: Session, program_id: int, boundaries: Sequence[datetime]
) -> dict[int | None, int]:
    """Open points by expiry bucket (``None``: never expires)."""
    index = bucket_index(Lot.expires_at, boundaries)
    bucket = case((Lot.expires_at.is_(None), literal(None)), else_=index).label("bucket")
    rows = session.execute(
        select(bucket, func.sum(Lot.remaining))
        .where(Lot.program_id == program_id, OPEN_LOT)
        .group_by(bucket)
    )
    return {None if r[0] is None else int(r[0]): int(r[1]) for r in rows}


def liability_totals(session: Session, program_id: int) -> tuple[int, int, int]:
    row = session.execute(
        select(
            func.coalesce(func.sum(Account.balance), 0),
            func.coalesce(func.sum(Account.pending), 0),
            func.count().filter(Account.balance + Account.pending > 0),
        ).where(Account.program_id == program_id)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def activity(
    session: Session, program_id: int, boundaries: Sequence[datetime]
) -> dict[tuple[int, str], int]:
    """Points by (period index, line kind) for lines between the first and last boundary."""
    index = bucket_index(LedgerLine.created_at, boundaries).label("period")
    rows = session.execute(
        select(index, LedgerLine.kind, func.sum(LedgerLine.points))
        .where(
            LedgerLine.program_id == program_id,
            LedgerLine.created_at >= boundaries[0],
            LedgerLine.created_at < boundaries[-1],
        )
        .group_by(index, LedgerLine.kind)
    )
    return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}
