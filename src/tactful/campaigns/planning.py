"""Pure planning arithmetic: the control group's hash, when runs happen, and how a run's
audience is cut into waves (local times, throttling, slices)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from tactful.campaigns.schemas import WEEKDAYS, RecurringSchedule
from tactful.core.arrays import distinct

# customers of one wave are handed to the contact policy in one transaction
WAVE_SIZE = 10_000
# the earliest local time on Earth (UTC+14): a local-time run starts when it is reached
EARLIEST_OFFSET = timedelta(hours=14)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fixed, well-spread 64-bit hash (the same everywhere)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def control_mask(campaign_id: int, customer_ids: np.ndarray, share: float) -> np.ndarray:
    """Which customers the campaign holds out: SplitMix64's ``customer``-th output for a
    seed drawn from the campaign, mapped to [0, 1), below ``share``. Deterministic: the
    same customers in every run and process."""
    if share <= 0 or not len(customer_ids):
        return np.zeros(len(customer_ids), dtype=bool)
    with np.errstate(over="ignore"):
        seed = _mix(np.array([campaign_id], dtype=np.uint64))[0]
        state = seed + customer_ids.astype(np.uint64) * _GOLDEN
    unit = (_mix(state) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return unit < share


def zone(name: str | None, fallback: str) -> ZoneInfo:
    """A customer's zone, or the fallback when it is missing or unknown."""
    try:
        return ZoneInfo(name or fallback)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


def local_moment(day: date, at: str, tz: ZoneInfo) -> datetime:
    """``day`` at ``at`` (HH:MM) in ``tz``, in UTC."""
    return datetime.combine(day, time.fromisoformat(at), tzinfo=tz).astimezone(UTC)


def earliest_moment(day: date, at: str) -> datetime:
    """When ``at`` on ``day`` first happens anywhere (UTC+14)."""
    return datetime.combine(day, time.fromisoformat(at), tzinfo=UTC) - EARLIEST_OFFSET


@dataclass(frozen=True)
class Occurrence:
    """When a run starts, and the local day and time its customers get it at (if any)."""

    start: datetime
    local_date: date | None = None
    local_time: str | None = None


def next_occurrence(
    schedule: RecurringSchedule, *, after: datetime, workspace_tz: str, runs_so_far: int
) -> Occurrence | None:
    """The first run of a recurring schedule that starts after ``after`` (None when the
    schedule has ended)."""
    if schedule.max_runs is not None and runs_so_far >= schedule.max_runs:
        return None
    tz = zone(schedule.timezone, workspace_tz)
    day = after.astimezone(tz).date()
    if schedule.starts_on and schedule.starts_on > day:
        day = schedule.starts_on
    allowed = {WEEKDAYS.index(d) for d in schedule.weekdays} or set(range(7))
    for _ in range(366 * 2):
        if schedule.until is not None and day > schedule.until:
            return None
        if day.weekday() in allowed:
            moment = local_moment(day, schedule.time, tz)
            if moment > after:
                if schedule.customer_local:
                    return Occurrence(
                        max(after, earliest_moment(day, schedule.time)), day, schedule.time
                    )
                return Occurrence(moment)
        day += timedelta(days=1)
    return None


@dataclass(frozen=True)
class Wave:
    """Customers sent together at one moment."""

    send_at: datetime
    customer_ids: np.ndarray


def desired_times(
    customer_ids: np.ndarray,
    zone_members: Mapping[str, np.ndarray],
    *,
    start: datetime,
    local_date: date | None,
    local_time: str | None,
    workspace_tz: str,
) -> np.ndarray:
    """Each customer's wished send time in whole UTC seconds: the run's start, or the
    local time of the run's day in the customer's zone (``zone_members``: sorted ids by
    zone; others are in the workspace's), never before the start: zones where it has
    passed get it at once."""
    start_s = int(start.timestamp())
    wished = np.full(len(customer_ids), start_s, dtype=np.int64)
    if local_date is None or local_time is None:
        return wished

    def at(tz: ZoneInfo) -> int:
        return max(start_s, int(local_moment(local_date, local_time, tz).timestamp()))

    wished[:] = at(zone(None, workspace_tz))
    for name, members in zone_members.items():
        wished[np.isin(customer_ids, members)] = at(zone(name, workspace_tz))
    return wished


def throttle(wished: np.ndarray, per_minute: int | None) -> np.ndarray:
    """Send times no faster than ``per_minute`` a minute and never before the wished time:
    customers keep their order, and each minute-long slot holds at most ``per_minute``
    (``wished`` must be sorted)."""
    if per_minute is None or not len(wished):
        return wished.copy()
    result = np.empty_like(wished)
    slot_start: int | None = None
    filled = 0
    values, starts = np.unique(wished, return_index=True)
    bounds = [*starts.tolist(), len(wished)]
    for value, lo, hi in zip(values.tolist(), bounds[:-1], bounds[1:], strict=True):
        if slot_start is None or value >= slot_start + 60:
            slot_start, filled = int(value), 0
        position = filled + np.arange(hi - lo)
        result[lo:hi] = np.maximum(value, slot_start + 60 * (position // per_minute))
        total = filled + (hi - lo)
        last = (total - 1) // per_minute
        slot_start, filled = slot_start + 60 * last, total - last * per_minute
    return result


def waves(
    customer_ids: np.ndarray,
    wished: np.ndarray,
    *,
    per_minute: int | None,
    size: int = WAVE_SIZE,
) -> list[Wave]:
    """Cut an audience into waves: by send time (after throttling), at most ``size`` each."""
    order = np.lexsort((customer_ids, wished))
    ids, times = customer_ids[order], wished[order]
    send = throttle(times, per_minute)
    found: list[Wave] = []
    moments, starts = np.unique(send, return_index=True)
    bounds = [*starts.tolist(), len(send)]
    for moment, lo, hi in zip(moments.tolist(), bounds[:-1], bounds[1:], strict=True):
        at = datetime.fromtimestamp(int(moment), UTC)
        for chunk in range(lo, hi, size):
            found.append(Wave(at, np.sort(ids[chunk : min(hi, chunk + size)])))
    return found


def union_minus(
    targets: Sequence[np.ndarray], exclusions: Sequence[np.ndarray]
) -> tuple[np.ndarray, int]:
    """The union of target member arrays without the exclusions' members, and how many the
    exclusions removed."""
    union = distinct(np.concatenate(targets)) if targets else np.zeros(0, dtype=np.int64)
    if not exclusions:
        return union, 0
    excluded = distinct(np.concatenate(exclusions))
    kept = union[~np.isin(union, excluded, assume_unique=True)]
    return kept, len(union) - len(kept)
