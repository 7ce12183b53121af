"""The dialect helpers give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select

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
