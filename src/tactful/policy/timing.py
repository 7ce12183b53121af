"""Time arithmetic in the customer's own time zone: send windows, holidays, calendar days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tactful.policy.schemas import WEEKDAYS, SendWindows, Window

MAX_SEARCH_DAYS = 60


def local_day_start(moment: datetime, zone: ZoneInfo) -> datetime:
    """Midnight (UTC) that starts the customer's calendar day containing ``moment``."""
    local = moment.astimezone(zone)
    return datetime.combine(local.date(), time(0), zone).astimezone(UTC)


def next_local_day_start(moment: datetime, zone: ZoneInfo) -> datetime:
    """Midnight (UTC) that starts the customer's next calendar day."""
    local = moment.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(local, time(0), zone).astimezone(UTC)


def _windows_for(day: date, windows: SendWindows) -> list[Window]:
    if day in windows.holidays:
        return windows.holiday_windows
    return windows.weekdays.get(WEEKDAYS[day.weekday()], windows.default)


def next_allowed(moment: datetime, zone: ZoneInfo, windows: SendWindows) -> datetime | None:
    """The first moment at or after ``moment`` inside an allowed window (None: none within
    ``MAX_SEARCH_DAYS``)."""
    local = moment.astimezone(zone)
    for offset in range(MAX_SEARCH_DAYS):
        day = local.date() + timedelta(days=offset)
        for window in sorted(_windows_for(day, windows), key=lambda w: w.start):
            start_t, end_t = window.bounds()
            start = datetime.combine(day, start_t, zone)
            end = datetime.combine(day, end_t, zone)
            if offset == 0 and local >= end:
                continue
            candidate = max(start, local) if offset == 0 else start
            if candidate < end:
                return candidate.astimezone(UTC)
    return None


def in_allowed(moment: datetime, zone: ZoneInfo, windows: SendWindows) -> bool:
    """True when ``moment`` falls inside an allowed window."""
    return next_allowed(moment, zone, windows) == moment.astimezone(UTC)
