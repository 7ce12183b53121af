"""On SQLite, read-write transactions of one process queue on a lock taken with SQLite's own
write lock. Every way a transaction can end gives the lock back (commit, an error rolled
back, a connection returned or thrown away mid-transaction, a commit on another thread than
the begin), read-only transactions never wait for it, and concurrent writers lose nothing.
Requests go before waiting jobs, but a job's wait is bounded. A write in a read-only
transaction fails at once.

A leaked lock would make the next writer wait the full busy timeout (60 s); each check runs
the next write on another thread and gives it 10 s."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from tactful.core import db as core_db
from tactful.core.db import (
    Database,
    WriteInReadOnlyScope,
    _WriteGate,
    background_writes,
    create_db_engine,
)

PATIENCE = 10.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(create_db_engine(f"sqlite:///{tmp_path / 'gate.sqlite3'}", pool_size=8))
    with database.scope() as session:
        session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        session.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield database
    database.dispose()


def _bump(db: Database) -> None:
    with db.scope() as session:
        session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))


def _count(db: Database) -> int:
    with db.scope(readonly=True) as session:
        return int(session.execute(text("SELECT n FROM counter")).scalar_one())


def _elsewhere(work: Callable[[], None]) -> None:
    """Run ``work`` on another thread; fail if it does not finish in time."""
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(PATIENCE), "the next writer was still waiting: the write lock leaked"


def test_commit_gives_the_lock_back(db: Database) -> None:
    _bump(db)
    _elsewhere(lambda: _bump(db))
    assert _count(db) == 2


def test_an_error_rolls_back_and_gives_the_lock_back(db: Database) -> None:
    with pytest.raises(ZeroDivisionError), db.scope() as session:
        session.execute(text("UPDATE counter SET n = n + 100 WHERE id = 1"))
        _ = 1 / 0
    _elsewhere(lambda: _bump(db))
    assert _count(db) == 1  # the failed transaction changed nothing


def test_a_connection_closed_mid_transaction_gives_the_lock_back(db: Database) -> None:
    connection = db.engine.connect()
    connection.execute(text("UPDATE counter SET n = n + 100 WHERE id = 1"))
    connection.close()  # no commit: the pool rolls it back
    _elsewhere(lambda: _bump(db))
    assert _count(db) == 1


def test_an_invalidated_connection_gives_the_lock_back(db: Database) -> None:
    connection = db.engine.connect()
    connection.execute(text("UPDATE counter SET n = n + 100 WHERE id = 1"))
    connection.invalidate()
    connection.close()
    _elsewhere(lambda: _bump(db))
    assert _count(db) == 1


def test_a_transaction_may_end_on_another_thread(db: Database) -> None:
    session = db.session()
    session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
    _elsewhere(session.commit)  # as a request's scope closes after its handler's thread
    session.close()
    _elsewhere(lambda: _bump(db))
    assert _count(db) == 2


def test_readers_do_not_wait_for_a_writer(db: Database) -> None:
    writing, finish = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with db.scope() as session:
            session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
            writing.set()
            assert finish.wait(PATIENCE)

    writer = threading.Thread(target=slow_writer, daemon=True)
    writer.start()
    assert writing.wait(PATIENCE)
    try:
        assert _count(db) == 0  # the reader sees the last committed state at once
    finally:
        finish.set()
        writer.join(PATIENCE)
    assert _count(db) == 1


def test_a_write_in_a_read_only_scope_fails_at_once_and_the_connection_writes_again(
    db: Database,
) -> None:
    """A read-only scope never commits: a write in it would be lost, so it is refused at once
    rather than waiting for the write lock. The same pooled connection then serves a
    read-write scope as usual."""
    refused = pytest.raises(WriteInReadOnlyScope, match="must not write: UPDATE counter")
    with refused, db.scope(readonly=True) as session:
        session.execute(text("UPDATE counter SET n = 5 WHERE id = 1"))
    assert _count(db) == 0
    for _ in range(3):  # the pool (8 connections) hands the same one back
        _bump(db)
    assert _count(db) == 3


def test_concurrent_writers_lose_nothing(db: Database) -> None:
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(_bump, db) for _ in range(400)]:
            future.result()
    assert _count(db) == 400


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.001)


def _enter_on_thread(gate: _WriteGate, holder: str, order: list[str], *, job: bool) -> None:
    def run() -> None:
        if job:
            with background_writes():
                gate.enter(holder)
        else:
            gate.enter(holder)
        order.append(holder)

    threading.Thread(target=run, daemon=True).start()


def test_a_request_writes_before_a_job_that_waited_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_db, "BACKGROUND_YIELD_SECONDS", PATIENCE)
    gate, order = _WriteGate(), list[str]()
    gate.enter("request-1")
    _enter_on_thread(gate, "job", order, job=True)
    _until(lambda: gate._waiting["background"] + gate._waiting["overdue"] == 1)
    _enter_on_thread(gate, "request-2", order, job=False)
    _until(lambda: gate._waiting["foreground"] == 1)
    gate.leave("request-1")
    _until(lambda: order == ["request-2"])
    gate.leave("request-2")
    _until(lambda: order == ["request-2", "job"])
    gate.leave("job")
    assert gate._waiting == {"foreground": 0, "background": 0, "overdue": 0}


def test_requests_in_a_row_do_not_starve_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two request threads that always have one of them waiting: the job still gets its
    turn once it has let them go first for ``BACKGROUND_YIELD_SECONDS``."""
    monkeypatch.setattr(core_db, "BACKGROUND_YIELD_SECONDS", 0.05)
    gate, order = _WriteGate(), list[str]()
    turns: list[str] = []
    gate.enter("request-0")

    def requests(name: str) -> None:
        for n in range(1_000):  # 10 s of turns at most
            if order:
                return
            holder = f"{name}-{n}"
            gate.enter(holder)
            turns.append(holder)
            time.sleep(0.01)
            gate.leave(holder)

    threads = [threading.Thread(target=requests, args=(n,), daemon=True) for n in "ab"]
    for thread in threads:
        thread.start()
    _enter_on_thread(gate, "job", order, job=True)
    _until(lambda: gate._waiting["background"] + gate._waiting["overdue"] == 1)
    gate.leave("request-0")
    _until(lambda: order == ["job"])
    gate.leave("job")
    for thread in threads:
        thread.join(PATIENCE)
    assert len(turns) > 1  # requests did go first while the job yielded


def test_a_writer_gives_up_after_the_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_db, "SQLITE_BUSY_SECONDS", 0.1)
    gate = _WriteGate()
    gate.enter("stuck")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        gate.enter("next")
    with background_writes(), pytest.raises(sqlite3.OperationalError):
        gate.enter("job")
    assert gate._waiting == {"foreground": 0, "background": 0, "overdue": 0}
    gate.leave("stuck")
    gate.enter("next")  # the gate still works
