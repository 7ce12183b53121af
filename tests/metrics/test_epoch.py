"""Metrics count in whole seconds since the epoch, the same on DuckDB, PostgreSQL and Spark:
the floor of a moment's epoch, fractions and moments before 1970 included."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import ibis
import pyarrow as pa

from tactful.core.warehouse import Warehouse
from tactful.metrics.warehouse import _epoch

MOMENTS = [
    datetime(2025, 6, 30, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2025, 3, 30, 1, 0, 0, 500_000, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    datetime(1950, 7, 1, 12, 30, 15, 1, tzinfo=UTC),
]


def test_epoch_is_the_floor_in_whole_seconds(any_warehouse: Warehouse) -> None:
    moments = pa.table(
        {"n": list(range(len(MOMENTS))), "at": pa.array(MOMENTS, pa.timestamp("us", "UTC"))}
    )
    table = ibis.memtable(moments)
    rows = any_warehouse.con.to_pyarrow(table.select("n", seconds=_epoch(table.at))).to_pylist()
    got = {row["n"]: row["seconds"] for row in rows}
    assert got == {n: math.floor(moment.timestamp()) for n, moment in enumerate(MOMENTS)}
