"""Reports: the liability (outstanding points and when they expire) and accrual / redemption /
expiry per period, in the program's time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import ValidationFailed
from tactful.loyalty.models import (
    LINE_ACCRUAL,
    LINE_ADJUSTMENT,
    LINE_BONUS,
    LINE_EXPIRY,
    LINE_REDEMPTION,
)
from tactful.loyalty.schemas import ActivityOut, ActivityPeriod, ExpiryBucket, LiabilityOut
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service.programs import get_program, view_of
from tactful.loyalty.store import reports as report_store

PERIODS = ("day", "week", "month")
MAX_PERIODS = 400


def liability(
    session: Session, *, workspace_id: int, program_id: int, months: int = 12
) -> LiabilityOut:
    """Outstanding points (available and pending), their value, and how many expire in each of
    the coming local calendar months."""
    if not 1 <= months <= 60:
        raise ValidationFailed("months must be 1 to 60", field="months")
    program = get_program(session, workspace_id=workspace_id, program_id=program_id)
    now = clock.now()
    zone = ZoneInfo(program.timezone)
    month_starts = calc.month_boundaries(now, months, program.timezone)
    boundaries = [now, *month_starts[1:]]
    profile = report_store.expiry_profile(session, program.id, boundaries)
    available, pending, accounts = report_store.liability_totals(session, program.id)
    buckets = [
        ExpiryBucket(label="overdue", starts_at=None, ends_at=now, points=profile.get(-1, 0))
    ]
    for index in range(len(boundaries) - 1):
        buckets.append(
            ExpiryBucket(
                label=month_starts[index].astimezone(zone).strftime("%Y-%m"),
                starts_at=boundaries[index],
                ends_at=boundaries[index + 1],
                points=profile.get(index, 0),
            )
        )
    buckets.append(
        ExpiryBucket(
            label="later",
            starts_at=boundaries[-1],
            ends_at=None,
            points=profile.get(len(boundaries) - 1, 0),
        )
    )
    buckets.append(
        ExpiryBucket(label="never", starts_at=None, ends_at=None, points=profile.get(None, 0))
    )
    outstanding = available + pending
    return LiabilityOut(
        program_id=program.id,
        as_of=now,
        accounts_with_points=accounts,
        available_points=available,
        pending_points=pending,
        outstanding_points=outstanding,
        outstanding_value=outstanding * view_of(session, program).rules.point_value,
        currency=program.currency,
        expiry_profile=buckets,
    )


def activity(
    session: Session,
    *,
    workspace_id: int,
    program_id: int,
    start: datetime,
    end: datetime,
    period: str,
) -> ActivityOut:
    """Points accrued, granted as bonuses, redeemed, expired and adjusted per local day, week
    (from Monday) or month; the periods are whole, so the first may start before ``start``."""
    if period not in PERIODS:
        raise ValidationFailed(f"period must be one of {list(PERIODS)}", field="period")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed("give start and end with a time zone offset", field="start")
    if end <= start:
        raise ValidationFailed("end must be after start", field="end")
    program = get_program(session, workspace_id=workspace_id, program_id=program_id)
    boundaries = calc.period_boundaries(start, end, period, program.timezone, limit=MAX_PERIODS)
    if len(boundaries) - 1 > MAX_PERIODS:
        raise ValidationFailed(
            f"more than {MAX_PERIODS} periods; choose a longer period or a shorter range",
            field="period",
        )
    sums = report_store.activity(session, program.id, boundaries)
    periods = [
        ActivityPeriod(
            starts_at=boundaries[i],
            ends_at=boundaries[i + 1],
            accrued=sums.get((i, LINE_ACCRUAL), 0),
            bonus=sums.get((i, LINE_BONUS), 0),
            redeemed=-sums.get((i, LINE_REDEMPTION), 0),
            expired=-sums.get((i, LINE_EXPIRY), 0),
            adjusted=sums.get((i, LINE_ADJUSTMENT), 0),
        )
        for i in range(len(boundaries) - 1)
    ]
    totals = ActivityPeriod(
        starts_at=boundaries[0],
        ends_at=boundaries[-1],
        accrued=sum(p.accrued for p in periods),
        bonus=sum(p.bonus for p in periods),
        redeemed=sum(p.redeemed for p in periods),
        expired=sum(p.expired for p in periods),
        adjusted=sum(p.adjusted for p in periods),
    )
    return ActivityOut(
        program_id=program.id,
        period=period,
        timezone=program.timezone,
        periods=periods,
        totals=totals,
    )
