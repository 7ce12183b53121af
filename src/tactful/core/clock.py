"""Time. Everything is timezone-aware UTC; tests replace the clock to control time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_frozen: datetime | None = None
_offset = timedelta(0)


def now() -> datetime:
    """The current time in UTC (frozen or shifted in tests)."""
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def ensure_utc(value: datetime) -> datetime:
    """Treat a naive datetime as UTC and convert an aware one to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@contextlib.contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """Freeze ``now()`` at a moment (tests)."""
    global _frozen  # noqa: PLW0603 - the clock is process-wide by design
    with _lock:
        previous, _frozen = _frozen, ensure_utc(at)
    try:
        yield
    finally:
        with _lock:
            _frozen = previous


def advance(delta: timedelta) -> None:
    """Move a frozen clock forward, or shift the real clock (tests)."""
    global _frozen, _offset  # noqa: PLW0603
    with _lock:
        if _frozen is not None:
            _frozen += delta
        else:
            _offset += delta
