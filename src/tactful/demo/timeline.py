"""The calendar of the demo history: seasonal shop traffic, shopping hours, local → UTC.

Purchases are generated in *operational time*: a clock that runs faster on busy days (spring
weekends, the weeks before New Year and 8 March) and slower on quiet ones. A customer who buys
"every 30 days" in operational time therefore buys more often in May than in November, and
the whole chain shows the right seasonality without any per-row logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

HISTORY_DAYS = 730
MICROS = 1_000_000
_EPOCH = date(1970, 1, 1)

# Relative traffic by weekday, Monday first: weekends are the busiest days of a DIY store.
WEEKDAY_TRAFFIC = np.array([0.85, 0.85, 0.9, 0.95, 1.1, 1.45, 1.3])

# Relative traffic by local hour for offline weekdays, offline weekends and online.
_OFFLINE_WEEKDAY = {8: 0.4, 9: 0.6, 10: 0.8, 11: 1.0, 12: 1.1, 13: 1.1, 14: 1.0, 15: 0.95,
                    16: 1.0, 17: 1.2, 18: 1.35, 19: 1.25, 20: 0.9, 21: 0.45}  # fmt: skip
_OFFLINE_WEEKEND = {8: 0.3, 9: 0.7, 10: 1.1, 11: 1.4, 12: 1.5, 13: 1.5, 14: 1.45, 15: 1.35,
                    16: 1.2, 17: 1.05, 18: 0.9, 19: 0.7, 20: 0.45, 21: 0.25}  # fmt: skip
_ONLINE = (0.35, 0.15, 0.08, 0.05, 0.05, 0.08, 0.2, 0.4, 0.6, 0.75, 0.85, 0.9, 1.0, 0.95, 0.9,
           0.9, 0.9, 0.95, 1.05, 1.2, 1.4, 1.5, 1.3, 0.8)  # fmt: skip
OFFLINE_WEEKDAY, OFFLINE_WEEKEND, ONLINE = 0, 1, 2


def _hour_table() -> np.ndarray:
    table = np.zeros((3, 24))
    for hour, value in _OFFLINE_WEEKDAY.items():
        table[OFFLINE_WEEKDAY, hour] = value
    for hour, value in _OFFLINE_WEEKEND.items():
        table[OFFLINE_WEEKEND, hour] = value
    table[ONLINE] = _ONLINE
    cumulative = np.cumsum(table, axis=1)
    cumulative /= cumulative[:, -1:]
    # Row r spans (r, r + 1], so one searchsorted serves all three profiles at once.
    return (cumulative + np.arange(3)[:, None]).reshape(-1)


_HOURS = _hour_table()


def epoch_day(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - _EPOCH).days


def _bump(values: np.ndarray, centre: float, width: float, period: float) -> np.ndarray:
    distance = np.abs(values - centre)
    distance = np.minimum(distance, period - distance)
    return np.exp(-0.5 * (distance / width) ** 2)


@dataclass(frozen=True)
class Timeline:
    """Two years of local calendar days ending at ``as_of`` and their relative traffic."""

    as_of: date
    first_day: int  # epoch day of the first day of history
    last_day: int  # epoch day of as_of
    week: np.ndarray  # week of year (0-52) of each history day
    weekend: np.ndarray  # Saturday or Sunday
    cumulative: np.ndarray  # operational time at the start of each day (length days + 1)

    @classmethod
    def ending(cls, as_of: date) -> Timeline:
        """The history window that ends with ``as_of`` (inclusive)."""
        first = as_of - timedelta(days=HISTORY_DAYS - 1)
        days = np.arange(epoch_day(first), epoch_day(as_of) + 1, dtype=np.int64)
        dates = days.astype("datetime64[D]")
        day_of_year = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
        traffic = (
            1.0
            + 0.9 * _bump(day_of_year, 135.0, 38.0, 365.0)  # the garden season
            + 0.35 * _bump(day_of_year, 350.0, 7.0, 365.0)  # New Year decorations
            + 0.25 * _bump(day_of_year, 63.0, 3.0, 365.0)  # 8 March gifts
            + 0.3 * _bump(day_of_year, 124.0, 3.0, 365.0)  # the long May weekends at the dacha
        ) * WEEKDAY_TRAFFIC[weekday]
        traffic[day_of_year == 0] *= 0.3  # 1 January: most people are not shopping
        traffic *= len(traffic) / traffic.sum()
        cumulative = np.concatenate([[0.0], np.cumsum(traffic)])
        return cls(
            as_of=as_of,
            first_day=int(days[0]),
            last_day=int(days[-1]),
            week=np.minimum(day_of_year // 7, 52).astype(np.int16),
            weekend=weekday >= 5,
            cumulative=cumulative,
        )

    @property
    def days(self) -> int:
        """Number of days of history."""
        return self.last_day - self.first_day + 1

    def operational(self, day: np.ndarray) -> np.ndarray:
        """Operational time at the start of (possibly fractional) epoch days."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        moment: np.ndarray = np.interp(day - self.first_day, grid, self.cumulative)
        return moment

    def calendar(self, moment: np.ndarray) -> np.ndarray:
        """Epoch day (integer) on which an operational moment falls."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        offset = np.floor(np.interp(moment, self.cumulative, grid)).astype(np.int64)
        day: np.ndarray = self.first_day + np.clip(offset, 0, self.days - 1)
        return day

    def index(self, day: np.ndarray) -> np.ndarray:
        """Position of epoch days inside the history window."""
        return (day - self.first_day).astype(np.int64)


def seconds_of_day(rng: np.random.Generator, profile: np.ndarray) -> np.ndarray:
    """Random local seconds since midnight following the hourly profile of each row."""
    u = rng.random(len(profile))
    slot = np.searchsorted(_HOURS, profile + u, side="right")
    hour = np.minimum(slot - profile.astype(np.int64) * 24, 23)
    seconds: np.ndarray = hour * 3600 + rng.integers(0, 3600, len(profile))
    return seconds


def utc_micros(day: np.ndarray, seconds: np.ndarray, offset_hours: np.ndarray) -> np.ndarray:
    """UTC microseconds since the epoch of a local day and time at a fixed UTC offset."""
    micros: np.ndarray = (day * 86_400 + seconds - offset_hours.astype(np.int64) * 3600) * MICROS
    return micros
