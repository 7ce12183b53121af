"""A whole-day metric (days since the last purchase …) compared as a range on the stored
moment it counts from gives exactly the answer of comparing the day count, at every day
boundary, for fractional values and for a missing moment."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tactful.metrics import warehouse as mw
from tactful.segments.compiler import _day_bounds

NOW = datetime(2025, 6, 30, 23, 59, 12, 345678, tzinfo=UTC)
WHOLE_NOW = int(NOW.replace(microsecond=0).timestamp())
DAY = 86_400


def _days(stamp: datetime) -> int:
    """The day count as ``with_derived`` defines it: whole seconds on both sides, floored."""
    return (WHOLE_NOW - math.floor(stamp.timestamp())) // DAY


CHECKS: dict[str, Callable[[int, Any], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
    "eq": operator.eq,
    "between": lambda days, pair: pair[0] <= days <= pair[1],
}

# moments a few seconds (and fractions of one) either side of whole-day boundaries
stamps = st.builds(
    lambda days, seconds, micros: (
        NOW.replace(microsecond=0)
        - timedelta(days=days, seconds=seconds)
        + timedelta(microseconds=micros)
    ),
    st.integers(-2, 70),
    st.integers(-2, 2),
    st.sampled_from([0, 1, 500_000, 999_999]),
)
numbers = st.one_of(st.integers(-3, 70), st.integers(-6, 140).map(lambda n: n / 2))
conditions = st.one_of(
    st.tuples(st.sampled_from(["gte", "gt", "lte", "lt", "eq"]), numbers),
    st.tuples(st.just("between"), st.tuples(numbers, numbers).map(sorted)),
)


@pytest.fixture(scope="module")
def con() -> Any:
    return ibis.duckdb.connect()


@settings(max_examples=80, deadline=None)
@given(moments=st.lists(stamps, min_size=1, max_size=25), condition=conditions)
def test_range_on_the_moment_equals_the_day_comparison(
    con: Any, moments: list[datetime], condition: tuple[str, Any]
) -> None:
    name, value = condition
    bounds = _day_bounds(name, value)
    if bounds is None:  # eq with a fraction: compared as a number, no range
        assert name == "eq"
        assert not float(value).is_integer()
        return
    rows: list[datetime | None] = [*moments, None]
    table = ibis.memtable(
        pa.table(
            {
                "i": list(range(len(rows))),
                "stamp": pa.array(rows, pa.timestamp("us", tz="UTC")),
            }
        )
    )
    low, high = bounds
    hit = mw.days_since_within(table.stamp, now=NOW, low=low, high=high)
    got = con.to_pyarrow(table.select(table.i, hit.name("hit")).order_by("i"))["hit"]
    expected = [None if m is None else CHECKS[name](_days(m), value) for m in rows]
    assert got.to_pylist() == expected


def test_bounds_of_each_operator() -> None:
    assert _day_bounds("gte", 7.5) == (8, None)
    assert _day_bounds("gt", 7.5) == (8, None)
    assert _day_bounds("gt", 7) == (8, None)
    assert _day_bounds("lte", 60.5) == (None, 60)
    assert _day_bounds("lt", 60) == (None, 59)
    assert _day_bounds("lt", 60.5) == (None, 60)
    assert _day_bounds("between", [7.0, 60.0]) == (7, 60)
    assert _day_bounds("eq", 3.0) == (3, 3)
    assert _day_bounds("eq", 3.5) is None
    assert _day_bounds("ne", 3) is None
    assert _day_bounds("in", [1, 2]) is None
