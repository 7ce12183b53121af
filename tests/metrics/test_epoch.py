"""Metrics count in whole seconds since the epoch, the same on DuckDB, PostgreSQL and Spark:
the floor of a moment's epoch, fractions and moments before 1970 included."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import ibis
import pyarrow as pa
import pytest

from tactful.core.warehouse import Warehouse
from tactful.metrics.warehouse import _epoch
from tests.warehouses import open_warehouse

MOMENTS = [
    datetime(2025, 6, 30, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2025, 3, 30, 1, 0, 0, 500_000, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 0, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    datetime(1950, 7, 1, 12, 30, 15, 1, tzinfo=UTC),
]


@pytest.fixture(
    params=[
        "duckdb",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow]),
    ]
)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    opened = open_warehouse(request.param, request, tmp_path)
    yield opened
    if request.param != "spark":  # Spark's is shared by the run
        opened.close()


def test_epoch_is_the_floor_in_whole_seconds(warehouse: Warehouse) -> None:
    moments = pa.table(
        {"n": list(range(len(MOMENTS))), "at": pa.array(MOMENTS, pa.timestamp("us", "UTC"))}
    )
    table = ibis.memtable(moments)
    rows = warehouse.con.to_pyarrow(table.select("n", seconds=_epoch(table.at))).to_pylist()
    got = {row["n"]: row["seconds"] for row in rows}
    assert got == {n: math.floor(moment.timestamp()) for n, moment in enumerate(MOMENTS)}
