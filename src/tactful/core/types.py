"""Column types shared by every feature's models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.sql.type_api import _BindProcessorType, _ResultProcessorType

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# Any other 64-bit integer column (ids of other tables, money in minor units, points).
BigInt = BigInteger()

# JSON documents: JSONB on PostgreSQL, JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _orjson_loads(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def _orjson_dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class OrjsonJSON(TypeDecorator[Any]):
    """JSON text that orjson writes and reads on SQLite, for columns read in bulk (the
    inbox): orjson reads about three times faster than the standard library, and reading a
    batch of inbox rows spent a fifth of its time decoding. Reading with orjson is exact
    only for what orjson wrote (it would turn an integer wider than 64 bits, which the
    standard library writes and orjson refuses, into a float), so both sides go through
    it. On PostgreSQL: JSONB, as ``JSONType``."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> _BindProcessorType[Any] | None:
        if dialect.name == "sqlite":
            return _orjson_dumps
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> _ResultProcessorType[Any] | None:
        if dialect.name == "sqlite":
            return _orjson_loads
        return super().result_processor(dialect, coltype)


# JSON documents read in bulk: JSONB on PostgreSQL, JSON text by orjson on SQLite.
OrjsonJSONType = OrjsonJSON().with_variant(JSONB(), "postgresql")


def _to_utc(value: datetime) -> datetime:
    """A datetime to be stored, in UTC; a naive one is refused (its zone is unknown)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _read_utc(value: datetime) -> datetime:
    """A stored datetime in UTC; a naive one was stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    """A UTC datetime as SQLite stores it: naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``
    (SQLAlchemy's format for SQLite, so comparisons with stored values stay textual), made by
    one C call instead of SQLAlchemy's formatting of each field (a sixth of the cost of an
    event's row in a bulk insert)."""
    if value is None:
        return None
    return _to_utc(value).isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else _read_utc(datetime.fromisoformat(value))


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> _BindProcessorType[datetime] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(
        self, dialect: Dialect, coltype: Any
    ) -> _ResultProcessorType[datetime] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _to_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return _read_utc(value)
