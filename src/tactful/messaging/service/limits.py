"""Per-provider rate limits: token buckets.

On PostgreSQL the bucket is a database row shared by every worker process: a process takes
a few tokens at a time with one statement (``store.take_tokens``) and spends them itself,
so all processes together never exceed the provider's rate. On SQLite (one process by
design: the workers live inside ``tactful serve``) the bucket lives in the process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from tactful.core.db import database_name
from tactful.core.runtime import Runtime
from tactful.messaging import store
from tactful.messaging.channels.base import Limiter, RateLimiter

# a process takes at most this share of a second's tokens from the shared bucket at once
TAKE_SHARE = 0.1


class SharedRateLimiter:
    """A provider's token bucket in the database, shared by every worker process."""

    def __init__(
        self,
        runtime: Runtime,
        provider_id: int,
        per_second: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.runtime = runtime
        self.provider_id = provider_id
        self.rate = per_second
        self.capacity = max(1.0, per_second)
        self.chunk = max(1, int(per_second * TAKE_SHARE))
        self._tokens = 0
        self._lock = threading.Lock()
        self._sleep = sleep

    def try_take(self) -> float:
        """Take a token: 0 when one was taken, else the seconds to wait before trying again."""
        with self._lock:
            if self._tokens == 0:
                with self.runtime.db.scope() as session:
                    taken, available = store.take_tokens(
                        session,
                        self.provider_id,
                        want=self.chunk,
                        rate=self.rate,
                        capacity=self.capacity,
                    )
                if not taken:
                    return max(0.001, (1 - available) / self.rate)
                self._tokens = taken
            self._tokens -= 1
            return 0.0

    async def acquire(self) -> None:
        wait = await asyncio.to_thread(self.try_take)
        while wait > 0:
            await asyncio.sleep(wait)  # the bucket refills with time, not on an event
            wait = await asyncio.to_thread(self.try_take)

    def acquire_blocking(self) -> None:
        wait = self.try_take()
        while wait > 0:
            self._sleep(wait)
            wait = self.try_take()


_LIMITERS: dict[tuple[int, float, str], Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(runtime: Runtime, provider_id: int, per_second: float | None) -> Limiter | None:
    """The limiter of a provider (None: unlimited); one per provider in a process."""
    if not per_second:
        return None
    key = (provider_id, per_second, database_name(runtime.db.engine))
    with _LIMITERS_LOCK:
        found = _LIMITERS.get(key)
        if found is None:
            if runtime.db.dialect == "postgresql":
                found = SharedRateLimiter(runtime, provider_id, per_second)
            else:
                found = RateLimiter(per_second)
            _LIMITERS[key] = found
        return found
