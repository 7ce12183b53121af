"""On SQLite, read-write transactions of one process queue on a lock taken with SQLite's own
write lock. Every way a transaction can end gives the lock back (commit, an error rolled
back, a connection returned or thrown away mid-transaction, a commit on another thread than
the begin), read-only transactions never wait for it, and concurrent writers lose nothing.

A leaked lock would make the next writer wait the full busy timeout (60 s); each check runs
the next write on another thread and gives it 10 s."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from tactful.core.db import Database, create_db_engine

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


def test_concurrent_writers_lose_nothing(db: Database) -> None:
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(_bump, db) for _ in range(400)]:
            future.result()
    assert _count(db) == 400
