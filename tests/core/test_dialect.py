"""The dialect helpers give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import BigInteger, Select, bindparam, literal, select, union_all

from tactful.core import dialect
from tactful.core.runtime import Runtime
from tactful.core.types import UTCDateTime

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    # the fraction is dropped (SQLite reads timestamps to the millisecond)
    datetime(1999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
    datetime(2026, 3, 12, 19, 11, 46, 33_681, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),  # past 32-bit seconds
]


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "before-3.38"])
def test_epoch_seconds_are_whole_unix_seconds(
    runtime: Runtime, legacy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if legacy:  # SQLite before 3.38 has no unixepoch(): strftime('%s') instead
        monkeypatch.setattr(dialect, "_UNIXEPOCH", False)
    with runtime.db.scope(readonly=True) as session:
        found = [
            session.scalar(
                select(dialect.epoch_seconds(session, bindparam("t", moment, UTCDateTime())))
            )
            for moment in [*MOMENTS, None]
        ]
    assert found == [0, 946_684_799, 1_773_342_706, 2_147_483_648, None]


def _rows_select(rows: list[tuple[int | None, ...]]) -> Select[Any]:
    """A select of literal rows that SQLite and PostgreSQL both read (no VALUES aliases)."""
    parts = [
        select(*(literal(value, BigInteger).label(f"x{i}") for i, value in enumerate(row)))
        for row in rows
    ]
    sub = union_all(*parts).subquery()
    return select(*sub.c)


def test_fetch_int_table_keeps_each_row_together(runtime: Runtime) -> None:
    rows = [(3, -1, 2**40), (1, 0, 7), (2, 5, -(2**40)), (3, 9, 0)]
    stmt = _rows_select(rows)
    with runtime.db.scope(readonly=True) as session:
        found = dialect.fetch_int_table(session, stmt)
        nothing = dialect.fetch_int_table(session, stmt.where(stmt.selected_columns[0] > 10))
    assert found.dtype == np.int64
    assert found.tolist() == [list(row) for row in rows]
    assert nothing.shape == (0, 3)


def test_fetch_int_table_refuses_nulls(runtime: Runtime) -> None:
    # one NULL in each column: SQLite's lists would still be of equal length
    stmt = _rows_select([(1, None), (3, 4), (None, 6)])
    with runtime.db.scope(readonly=True) as session, pytest.raises(ValueError, match="NULLs"):
        dialect.fetch_int_table(session, stmt)
