"""A burst of concurrent write calls larger than the worker-thread pool: on SQLite every
request but one waits for the single write lock on a worker thread, and the request holding
it must still be able to commit (its commit runs on threads of its own)."""

from __future__ import annotations

import asyncio
import uuid

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import func, select

from tactful.app import create_app
from tactful.core.runtime import Runtime
from tactful.events.models import InboxEvent
from tests.conftest import IngestKey

CALLS = 12


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_burst_larger_than_the_thread_pool_commits_every_call(
    runtime: Runtime, ingest_key: IngestKey
) -> None:
    key = ingest_key.plain
    app = create_app(runtime=runtime, run_worker=False)

    async def burst() -> list[int]:
        # two worker threads for a dozen calls: all but the lock holder's fill them
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tactful", auth=(key, "")
        ) as http:

            async def track(n: int) -> int:
                body = {"userId": f"u{n}", "event": "Viewed", "messageId": uuid.uuid4().hex}
                return (await http.post("/v1/track", json=body)).status_code

            return await asyncio.wait_for(
                asyncio.gather(*(track(n) for n in range(CALLS))), timeout=30
            )

    assert asyncio.run(burst()) == [200] * CALLS
    with runtime.db.scope(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(InboxEvent)) == CALLS
