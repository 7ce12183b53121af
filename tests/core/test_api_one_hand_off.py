"""A transactional route with a plain function endpoint takes one hand-off to a worker
thread: the API key check, the endpoint, the response's validation and the commit run there
in turn. A bad key is refused before the request's other faults are judged, and the endpoint
never runs; an answer that fails validation is not committed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.to_thread
import pytest
from fastapi.exceptions import ResponseValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from tactful.app import create_app
from tactful.core.api import SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.core.db import after_commit
from tactful.core.runtime import Runtime
from tests.conftest import IngestKey, Tenant


class Body(BaseModel):
    n: int


@dataclass
class Seen:
    """What the test routes saw: the threads that checked keys and ran endpoints, the
    principals the endpoints got, and every hand-off to a worker thread."""

    key_checks: list[int] = field(default_factory=list)
    endpoints: list[tuple[int, Principal]] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)
    hand_offs: int = 0


CURRENT: dict[str, Seen] = {}  # the Seen of the test in progress
Ingest = Annotated[Principal, require_scope("ingest")]
Admin = Annotated[Principal, require_scope("admin")]
router = api_router(prefix="/test")


def _saw(principal: Principal) -> None:
    CURRENT["seen"].endpoints.append((threading.get_ident(), principal))


@router.post("/plain")
def plain(body: Body, session: SessionDep, principal: Ingest) -> dict[str, int]:
    _saw(principal)
    return {"n": body.n, "workspace_id": principal.workspace_id}


@router.post("/coroutine")
async def coroutine(body: Body, principal: Ingest) -> dict[str, int]:
    _saw(principal)
    return {"n": body.n}


class Count(BaseModel):
    rows: int


@router.post("/probe")
def probe(body: Body, session: SessionDep, principal: Ingest) -> Count:
    """Writes a row, then answers with the body's number: a number that is not a count
    (negative) is not a valid answer."""
    session.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": body.n})
    after_commit(session, lambda: CURRENT["seen"].commits.append(threading.get_ident()))
    _saw(principal)
    answer: Any = {"rows": body.n if body.n >= 0 else "none"}
    return answer  # type: ignore[no-any-return]


@router.post("/both")
def both(body: Body, first: Ingest, second: Admin) -> dict[str, bool]:
    _saw(first)
    return {"same": first is second}


@pytest.fixture
def seen(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Seen]]:
    seen = CURRENT["seen"] = Seen()
    with runtime.db.scope() as session:
        session.execute(text("CREATE TABLE probe (n INTEGER NOT NULL)"))
    app = create_app(runtime=runtime, run_worker=False)
    app.include_router(router)
    authenticate: Callable[[Session, str], Principal] = app.state.authenticate_key

    def recording(session: Session, key: str) -> Principal:
        seen.key_checks.append(threading.get_ident())
        return authenticate(session, key)

    app.state.authenticate_key = recording
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen.hand_offs += 1
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    with TestClient(app) as client:
        yield client, seen


def _clear(seen: Seen) -> None:
    seen.key_checks.clear()
    seen.endpoints.clear()
    seen.commits.clear()
    seen.hand_offs = 0


def _after_one_call(
    seen: tuple[TestClient, Seen], key: IngestKey, path: str, n: int
) -> tuple[TestClient, Seen, dict[str, str]]:
    """The client, a cleared record and the key's header after one good call (which also
    records the key's use, after the answer: a hand-off of its own)."""
    client, record = seen
    auth = {"Authorization": f"Bearer {key.plain}"}
    assert client.post(path, json={"n": n}, headers=auth).status_code == 200
    _clear(record)
    return client, record, auth


def _probes(runtime: Runtime) -> list[int]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(text("SELECT n FROM probe ORDER BY n")))


def test_the_key_check_and_a_plain_endpoint_share_one_hand_off(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey, tenant: Tenant
) -> None:
    client, record, auth = _after_one_call(seen, ingest_key, "/test/plain", 1)

    answer = client.post("/test/plain", json={"n": 2}, headers=auth)

    assert answer.status_code == 200
    assert answer.json() == {"n": 2, "workspace_id": tenant.workspace_id}
    [(thread, principal)] = record.endpoints
    assert record.key_checks == [thread]
    assert isinstance(principal, Principal)
    assert principal.key_id == ingest_key.id
    assert record.hand_offs == 1  # the check, the endpoint and the commit on one thread


def test_a_coroutine_endpoint_gets_its_principal_checked_first(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey
) -> None:
    client, record = seen
    answer = client.post(
        "/test/coroutine", json={"n": 3}, headers={"Authorization": f"Bearer {ingest_key.plain}"}
    )
    assert answer.status_code == 200
    assert answer.json() == {"n": 3}
    [(_thread, principal)] = record.endpoints
    assert len(record.key_checks) == 1
    assert principal.key_id == ingest_key.id


def test_two_scopes_take_one_key_check_and_both_must_be_held(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey, tenant: Tenant
) -> None:
    client, record = seen
    ingest_only = client.post(
        "/test/both", json={"n": 1}, headers={"Authorization": f"Bearer {ingest_key.plain}"}
    )
    assert ingest_only.status_code == 403
    assert ingest_only.json()["detail"] == "this credential lacks the 'admin' scope"
    assert record.endpoints == []
    assert len(record.key_checks) == 1

    _clear(record)
    admin = client.post("/test/both", json={"n": 1}, headers=tenant.headers)
    assert admin.status_code == 200
    assert admin.json() == {"same": True}  # one principal for both parameters
    assert len(record.key_checks) == 1


@pytest.mark.parametrize(
    ("headers", "status", "detail", "checks"),
    [
        pytest.param(
            {},
            401,
            "an API key is required (Authorization: Bearer <key>, or HTTP Basic with the key "
            "as the user name)",
            0,
            id="no key",
        ),
        pytest.param(
            {"Authorization": "Bearer tk_nothere_x"}, 401, "the API key is not valid", 1, id="bad"
        ),
    ],
)
def test_a_missing_or_bad_key_is_refused_before_the_body_is_judged(
    seen: tuple[TestClient, Seen],
    headers: dict[str, str],
    status: int,
    detail: str,
    checks: int,
) -> None:
    client, record = seen
    for body in ({"n": 1}, {"n": "not a number"}):
        _clear(record)
        answer = client.post("/test/plain", json=body, headers=headers)
        assert (answer.status_code, answer.json()["detail"]) == (status, detail)
        assert record.endpoints == []
        assert len(record.key_checks) == checks


def test_a_valid_key_with_a_bad_body_gets_the_body_s_fault(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey
) -> None:
    client, record = seen
    answer = client.post(
        "/test/plain",
        json={"n": "not a number"},
        headers={"Authorization": f"Bearer {ingest_key.plain}"},
    )
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["n"]
    assert record.endpoints == []
    assert len(record.key_checks) == 1


def test_a_write_commits_on_the_endpoint_s_thread_in_the_one_hand_off(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey, runtime: Runtime
) -> None:
    client, record, auth = _after_one_call(seen, ingest_key, "/test/probe", 1)

    answer = client.post("/test/probe", json={"n": 2}, headers=auth)

    assert (answer.status_code, answer.json()) == (200, {"rows": 2})
    [(thread, _principal)] = record.endpoints
    assert record.key_checks == record.commits == [thread]
    assert record.hand_offs == 1
    assert _probes(runtime) == [1, 2]


def test_an_answer_that_fails_validation_is_not_committed(
    seen: tuple[TestClient, Seen], ingest_key: IngestKey, runtime: Runtime
) -> None:
    client, record, auth = _after_one_call(seen, ingest_key, "/test/probe", 5)

    with pytest.raises(ResponseValidationError):  # the test client re-raises server errors
        client.post("/test/probe", json={"n": -1}, headers=auth)

    assert len(record.endpoints) == 1  # it ran, wrote its row, and gave a bad answer
    assert record.commits == []
    assert _probes(runtime) == [5]
