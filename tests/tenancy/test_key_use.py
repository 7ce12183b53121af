"""An API key's last use: authentication writes nothing, and every request, read-only or
not, records a due use after its response, in a transaction of its own. A read-only request
never commits (and on SQLite its read transaction cannot become a write one once another
writer has committed); a write request would hold the key's row locked until its commit, so
concurrent requests with one key (all the tills of a shop) would queue behind each other."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.events.models import InboxEvent
from tactful.tenancy import service
from tactful.tenancy.models import ApiKey
from tests.conftest import IngestKey, Tenant

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _keys(runtime: Runtime) -> dict[int, tuple[str, datetime | None]]:
    with runtime.db.scope(readonly=True) as session:
        return {k.id: (k.name, k.last_used_at) for k in session.scalars(select(ApiKey))}


def _only_key(runtime: Runtime) -> int:
    (key_id,) = _keys(runtime)
    return key_id


def test_authentication_writes_nothing(runtime: Runtime, tenant: Tenant) -> None:
    key_id = _only_key(runtime)
    with clock.frozen(T0):
        for readonly in (True, False):
            with runtime.db.scope(readonly=readonly) as session:
                principal = service.authenticate_api_key(session, tenant.admin_key)
                assert not session.dirty
            assert principal.unrecorded_use == T0
            assert _keys(runtime)[key_id][1] is None

        # once recorded, nothing is due within the resolution
        with runtime.db.scope() as session:
            service.record_api_key_use(session, key_id, T0)
        clock.advance(service.LAST_USED_RESOLUTION)
        for readonly in (True, False):
            with runtime.db.scope(readonly=readonly) as session:
                principal = service.authenticate_api_key(session, tenant.admin_key)
            assert principal.unrecorded_use is None
        clock.advance(timedelta(seconds=1))
        with runtime.db.scope() as session:
            principal = service.authenticate_api_key(session, tenant.admin_key)
        assert principal.unrecorded_use == T0 + service.LAST_USED_RESOLUTION + timedelta(seconds=1)
    assert _keys(runtime)[key_id][1] == T0


def test_a_recorded_use_never_moves_back(runtime: Runtime, tenant: Tenant) -> None:
    key_id = _only_key(runtime)
    with runtime.db.scope() as session:
        service.record_api_key_use(session, key_id, T0)
    with runtime.db.scope() as session:
        service.record_api_key_use(session, key_id, T0 - timedelta(hours=1))
    assert _keys(runtime)[key_id][1] == T0
    with runtime.db.scope() as session:
        service.record_api_key_use(session, key_id, T0 + timedelta(hours=1))
    assert _keys(runtime)[key_id][1] == T0 + timedelta(hours=1)


def test_a_read_only_request_records_the_use_after_its_response(
    client: TestClient, runtime: Runtime, tenant: Tenant
) -> None:
    key_id = _only_key(runtime)
    with clock.frozen(T0):
        first = client.get("/v1/api-keys", headers=tenant.headers)
        assert first.status_code == 200
        # the list was read before the use was recorded
        assert [k["last_used_at"] for k in first.json()] == [None]
        assert _keys(runtime)[key_id][1] == T0

        second = client.get("/v1/api-keys", headers=tenant.headers)
    assert second.status_code == 200
    assert [datetime.fromisoformat(k["last_used_at"]) for k in second.json()] == [T0]


def test_a_write_request_records_the_use_after_its_response(
    client: TestClient, runtime: Runtime, ingest_key: IngestKey
) -> None:
    body = {"userId": "u1", "event": "Viewed", "messageId": "m-1"}
    with clock.frozen(T0):
        response = client.post("/v1/track", json=body, auth=(ingest_key.plain, ""))
    assert response.status_code == 200
    assert _keys(runtime)[ingest_key.id] == ("site", T0)


def test_a_write_request_commits_while_another_transaction_holds_the_key(
    client: TestClient, runtime: Runtime, ingest_key: IngestKey
) -> None:
    """The request's own transaction does not touch the key's row, so it commits while
    another transaction holds that row; the use is recorded once the row is free. (Before,
    every write request updated the row: under load, requests with one key queued on it
    until the commits deadlocked.) PostgreSQL only: a writer on SQLite holds the database."""
    if runtime.db.dialect == "sqlite":
        pytest.skip("SQLite's write lock covers the whole database, not one row")
    committed_while_held = threading.Event()

    def hold_the_key() -> None:
        with runtime.db.scope() as session:
            session.execute(update(ApiKey).where(ApiKey.id == ingest_key.id).values(name="renamed"))
            session.flush()
            held.set()
            for _ in range(200):  # until the request's event is committed, 10 s at most
                with runtime.db.scope(readonly=True) as reading:
                    found = reading.scalar(
                        select(InboxEvent.seq).where(InboxEvent.message_id == "m-held")
                    )
                if found is not None:
                    committed_while_held.set()
                    break
                time.sleep(0.05)

    held = threading.Event()
    holder = threading.Thread(target=hold_the_key)
    body = {"userId": "u1", "event": "Viewed", "messageId": "m-held"}
    with clock.frozen(T0):
        holder.start()
        assert held.wait(30)
        response = client.post("/v1/track", json=body, auth=(ingest_key.plain, ""))
        holder.join(60)
    assert response.status_code == 200
    assert committed_while_held.is_set()
    assert _keys(runtime)[ingest_key.id] == ("renamed", T0)


def test_a_read_while_another_writer_holds_the_key_answers_and_loses_nothing(
    client: TestClient, runtime: Runtime, tenant: Tenant
) -> None:
    """Another transaction changes the key and commits while the read runs. Recording the
    use inside the read made it wait for that writer and then fail on SQLite ("database is
    locked") or be rolled back on PostgreSQL."""
    key_id = _only_key(runtime)
    held = threading.Event()

    def rename_slowly() -> None:
        with runtime.db.scope() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(name="renamed"))
            session.flush()
            held.set()
            time.sleep(2)  # commits while the read below runs

    writer = threading.Thread(target=rename_slowly)
    with clock.frozen(T0):
        writer.start()
        assert held.wait(30)
        response = client.get("/v1/workspace", headers=tenant.headers)
        writer.join(60)
    assert response.status_code == 200
    assert _keys(runtime) == {key_id: ("renamed", T0)}


def test_a_use_that_cannot_be_recorded_leaves_the_answer_and_the_key_alone(
    client: TestClient, runtime: Runtime, tenant: Tenant
) -> None:
    key_id = _only_key(runtime)
    before = _keys(runtime)

    def failing(*_args: object) -> None:
        raise RuntimeError("the database went away")

    client.app.state.record_key_use = failing  # type: ignore[attr-defined]
    with clock.frozen(T0):
        response = client.get("/v1/workspace", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["id"] == tenant.workspace_id
    assert _keys(runtime) == before == {key_id: (before[key_id][0], None)}
