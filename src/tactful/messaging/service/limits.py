"""Per-provider rate limits: a token bucket per provider in this process."""

from __future__ import annotations

import threading

from tactful.core.runtime import Runtime
from tactful.messaging.channels.base import Limiter, RateLimiter

_LIMITERS: dict[tuple[int, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(runtime: Runtime, provider_id: int, per_second: float | None) -> Limiter | None:
    """The limiter of a provider (None: unlimited)."""
    del runtime
    if not per_second:
        return None
    with _LIMITERS_LOCK:
        key = (provider_id, per_second)
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(per_second)
        return _LIMITERS[key]
