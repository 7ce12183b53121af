"""The shared column types store and read back the same values on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text

from tactful.core.runtime import Runtime
from tactful.core.types import UTCDateTime, _sqlite_datetime, _sqlite_text

MOSCOW = ZoneInfo("Europe/Moscow")


def _table() -> Table:
    return Table(
        "type_moments",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", UTCDateTime()),
    )


def test_utc_datetimes_round_trip_and_compare(runtime: Runtime) -> None:
    table = _table()
    moments = [
        datetime(2026, 3, 12, 19, 11, 46, tzinfo=UTC),  # no fraction: still six digits stored
        datetime(2026, 3, 12, 22, 11, 46, 1, tzinfo=MOSCOW),  # 19:11:46.000001 UTC
        datetime(2026, 3, 12, 19, 11, 47, 500_000, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    table.create(runtime.db.engine)
    try:
        with runtime.db.scope() as session:
            session.execute(insert(table), [{"id": n, "at": m} for n, m in enumerate(moments)])
        with runtime.db.scope(readonly=True) as session:
            found = session.execute(select(table.c.id, table.c.at).order_by(table.c.at)).all()
            later = session.scalars(
                select(table.c.id).where(
                    table.c.at > datetime(2026, 3, 12, 22, 11, 46, tzinfo=MOSCOW)
                )
            ).all()
            stored = session.scalars(text("SELECT at FROM type_moments ORDER BY id")).all()
        assert found == [(3, moments[3]), (0, moments[0]), (1, moments[1]), (2, moments[2])]
        assert all(at.tzinfo is UTC for _id, at in found)
        assert sorted(later) == [1, 2]
        if runtime.db.engine.dialect.name == "sqlite":
            # SQLAlchemy's text for SQLite: comparisons with stored values stay textual
            assert stored == [
                "2026-03-12 19:11:46.000000",
                "2026-03-12 19:11:46.000001",
                "2026-03-13 00:11:47.500000",
                "0001-01-01 00:00:00.000000",
            ]
    finally:
        table.drop(runtime.db.engine)


def test_naive_datetimes_are_refused(runtime: Runtime) -> None:
    table = _table()
    table.create(runtime.db.engine)
    try:
        with (
            pytest.raises(Exception, match="naive datetime given where UTC is required"),
            runtime.db.scope() as session,
        ):
            session.execute(insert(table), [{"id": 1, "at": datetime(2026, 1, 1)}])
        with runtime.db.scope(readonly=True) as session:
            assert session.scalars(select(table.c.id)).all() == []
    finally:
        table.drop(runtime.db.engine)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, MOSCOW, timezone(timedelta(hours=-9))]),
    )
)
def test_sqlite_text_is_sqlalchemys_format(moment: datetime) -> None:
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    expected = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
    )
    assert _sqlite_text(moment) == expected
    read = _sqlite_datetime(expected)
    assert read == moment.astimezone(UTC)
    assert read is not None
    assert read.tzinfo is UTC
