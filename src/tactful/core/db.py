"""The transactional database: the declarative base, engines and session scopes.

SQLite runs in WAL mode and every read-write transaction starts with ``BEGIN IMMEDIATE``, so
two writers never deadlock on a lock upgrade; read-only scopes start a plain deferred
transaction. A write in a read-only scope is a bug: on SQLite it is lost (the scope never
commits), and upgrading the read transaction fails ("database is locked") once another writer
has committed; on PostgreSQL, where a read-only scope's statements run outside a transaction,
it would be committed at once. Such a write is refused before it runs, on every database.
Within one process, read-write transactions queue on a lock taken with SQLite's write lock,
so a waiting writer starts the moment the previous one ends, and API requests go before the
job runner's routine transactions for a bounded time. PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
from psycopg import pq
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from tactful.core.errors import ConfigError
from tactful.core.types import JSONType, UTCDateTime

_log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_SECONDS = 60
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",
    "PRAGMA mmap_size=268435456",
)


class Base(DeclarativeBase):
    """Base class of every ORM model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        datetime: UTCDateTime(),
    }


def normalise_database_url(raw: str) -> URL:
    """Parse a database URL and pick the psycopg 3 driver for PostgreSQL."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(
            f"TACTFUL_DATABASE_URL is not a valid database URL ({raw!r})",
            field="TACTFUL_DATABASE_URL",
        ) from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ConfigError(
        f"TACTFUL_DATABASE_URL uses the unsupported scheme {url.drivername!r}; "
        "use sqlite:///path or postgresql://user:password@host/db",
        field="TACTFUL_DATABASE_URL",
    )


class WriteInReadOnlyScope(RuntimeError):
    """A statement that writes, run in a read-only scope (a bug: on SQLite the write would be
    lost; on PostgreSQL, where a read-only scope runs outside a transaction, it would be
    committed at once, whatever became of the request)."""


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE")
# a write inside a WITH statement (PostgreSQL's data-modifying CTEs): any of these words
# outside string literals and quoted names, whatever follows it (an aliased table, ONLY); a
# locking read (FOR UPDATE) too, which a read-only scope has no use for
_CTE_WRITE = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
# the execution option that marks a read-only scope's connections
_READONLY = "tactful_readonly"


def _readonly(options: Any) -> bool:
    return bool(options.get(_READONLY, False))


def _install_read_only_guard(engine: Engine) -> None:
    """Refuse writes in read-only scopes. (SQLite's ``query_only`` pragma would do it too,
    but switching it expires every prepared statement of the connection.)"""

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_writes(
        connection: Any, _cursor: Any, statement: str, *_args: Any, **_kwargs: Any
    ) -> None:
        if not _readonly(connection.get_execution_options()):
            return
        head = statement.lstrip()[:7].upper()
        if head.startswith(_WRITES) or (
            head.startswith("WITH") and _CTE_WRITE.search(_QUOTED.sub("''", statement))
        ):
            raise WriteInReadOnlyScope(f"a read-only scope must not write: {statement[:200]}")


def _configure_sqlite(dbapi_connection: Any) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" hook emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def open_sqlite_outside_pool(engine: Engine) -> sqlite3.Connection | None:
    """A new driver connection to the engine's SQLite file, set up as the pool's are, for
    work on another thread that must not wait for a pooled connection; the caller closes
    it. None for an in-memory database (another connection would open another one)."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    if args[0] == ":memory:":
        return None
    raw: sqlite3.Connection = engine.dialect.loaded_dbapi.connect(*args, **kwargs)
    _configure_sqlite(raw)
    return raw


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        _configure_sqlite(dbapi_connection)

    gate = _install_write_gate(engine)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if _readonly(connection.get_execution_options()):
            connection.info[_CHANGES_AT_BEGIN] = None
            connection.exec_driver_sql("BEGIN")
            return
        raw = connection.connection.dbapi_connection
        gate.enter(raw)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            gate.leave(raw)
            raise
        connection.info[_CHANGES_AT_BEGIN] = raw.total_changes


_CHANGES_AT_BEGIN = "tactful_changes_at_begin"


def unchanged_sqlite_writer(connection: Connection) -> bool:
    """True when this SQLite connection is in a read-write transaction that has changed no
    row yet. It holds the database's write lock from its ``BEGIN IMMEDIATE``, so nobody
    commits meanwhile: another connection reading now sees exactly what this one sees."""
    raw: Any = connection.connection.dbapi_connection
    at_begin = connection.info.get(_CHANGES_AT_BEGIN)
    return at_begin is not None and raw.in_transaction and raw.total_changes == at_begin


# How long a background writer (a job) lets waiting foreground writers (API requests) go
# first before it takes its turn anyway: requests answer promptly under load, and the jobs
# behind them cannot be starved.
BACKGROUND_YIELD_SECONDS = 0.2

_thread_role = threading.local()


@contextlib.contextmanager
def background_writes() -> Iterator[None]:
    """Mark this thread's read-write transactions as background work (the job runner's
    routine jobs and monitors).

    On SQLite such a transaction lets waiting foreground writers (API requests) take the
    write lock first, for up to ``BACKGROUND_YIELD_SECONDS``; without the mark, a request
    acknowledging events waited behind every job's transaction as often as not."""
    previous = getattr(_thread_role, "background", False)
    _thread_role.background = True
    try:
        yield
    finally:
        _thread_role.background = previous


class _WriteGate:
    """One read-write transaction at a time among this process's connections to a SQLite
    file, handed over the moment the previous one ends.

    SQLite lets one transaction write at a time anyway; a connection that finds the file
    locked polls it with growing sleeps (up to 100 ms each), so with several threads writing
    steadily (API requests, the job workers) most of a writer's wait was oversleeping: HTTP
    ingestion ran at half its speed. Threads now queue on this gate, taken just before
    ``BEGIN IMMEDIATE`` and released when the transaction commits or rolls back (or its
    connection goes back to the pool or is discarded). Foreground writers go before
    background ones (``background_writes``) that have waited less than
    ``BACKGROUND_YIELD_SECONDS``; after that, such a writer goes before foreground ones.
    Other processes still meet SQLite's own lock. Not tied to a thread: a transaction may
    end on another thread than the one that began it (a request's scope closes after its
    handler's thread). Holders are the driver's connections (one thread uses a connection
    at a time)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: object | None = None
        # waiting writers: requests, jobs still deferring to them, jobs done deferring
        self._waiting = {"foreground": 0, "background": 0, "overdue": 0}

    def _may_enter(self, role: str) -> bool:
        if self._holder is not None:
            return False
        if role == "foreground":  # a job done deferring goes first (no barging past it)
            return not self._waiting["overdue"]
        return role == "overdue" or not self._waiting["foreground"]

    def enter(self, raw: object) -> None:
        role = "background" if getattr(_thread_role, "background", False) else "foreground"
        now = time.monotonic()
        deadline = now + SQLITE_BUSY_SECONDS
        defer_until = now + BACKGROUND_YIELD_SECONDS
        with self._changed:
            self._waiting[role] += 1
            try:
                while True:
                    now = time.monotonic()
                    if role == "background" and now >= defer_until:
                        self._waiting[role] -= 1
                        role = "overdue"
                        self._waiting[role] += 1
                    if self._may_enter(role):
                        self._holder = raw
                        return
                    if now >= deadline:
                        self._changed.notify_all()  # requests held back by this job go on
                        raise sqlite3.OperationalError(
                            f"database is locked: other transactions of this process have "
                            f"been writing for {SQLITE_BUSY_SECONDS} s"
                        )
                    # (the yield is far shorter than the busy timeout)
                    self._changed.wait((defer_until if role == "background" else deadline) - now)
            finally:
                self._waiting[role] -= 1

    def leave(self, raw: object | None) -> None:
        # only the holder's own leave can clear it, so a connection that is not the holder
        # now cannot become it meanwhile: the check needs no lock
        if raw is None or raw is not self._holder:
            return
        with self._changed:
            self._holder = None
            self._changed.notify_all()


def _install_write_gate(engine: Engine) -> _WriteGate:
    gate = _WriteGate()
    dialect = engine.dialect  # shared by the pool, which rolls back connections it takes back
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def _raw(connection: Any) -> Any:
        # the dialect is handed the pool's proxy of a driver connection
        return getattr(connection, "dbapi_connection", connection)

    def do_commit(dbapi_connection: Any) -> None:
        commit(dbapi_connection)
        gate.leave(_raw(dbapi_connection))  # (a failed commit is rolled back, which leaves)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            gate.leave(_raw(dbapi_connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    def _ended(dbapi_connection: Any, *_args: Any) -> None:
        gate.leave(dbapi_connection)  # a transaction that ended any other way

    for name in ("checkin", "invalidate", "close"):
        event.listen(engine, name, _ended)
    return gate


# A statement is prepared on a connection once it ran this many times there (psycopg's
# default is 5). PostgreSQL plans each unprepared run from scratch, then each of a prepared
# statement's first five runs (custom plans) before it settles on one plan: a new connection
# pays that for every statement it runs. A statement run only once is still sent unprepared.
PREPARE_AFTER = 1


def _install_rollback_keeping_prepared_statements(engine: Engine) -> None:
    """Roll PostgreSQL transactions back without losing the connection's prepared statements.

    psycopg forgets every prepared statement of a connection that rolls back, and deallocates
    them on the server, in case the transaction dropped or changed a table they read. Our
    transactions change no tables (migrations run before serving), but they do roll back
    whenever a request is refused after its first statement: a POS confirm refused for a
    missing redemption code or too few points, a 404 inside a write. Each refusal then cost
    the next requests on that connection a fresh parse and up to seven plans of every
    statement; one refused confirm in ten doubled the database's CPU per operation. So the
    ROLLBACK goes straight to libpq, which leaves psycopg's cache alone: statements prepared
    before or during the transaction stay prepared on the server, as PostgreSQL keeps them
    past a rollback. Should a rolled-back transaction have changed a table's columns, a
    statement prepared on the new shape fails once on the old one, and psycopg then forgets
    it. Anything unusual (no transaction open, pipeline mode, a failed ROLLBACK) goes to
    psycopg's own rollback, which reports a broken connection as usual."""
    dialect = engine.dialect
    rollback = dialect.do_rollback
    open_states = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    def do_rollback(dbapi_connection: Any) -> None:
        # the dialect is handed the pool's proxy of a driver connection
        raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
        pgconn = raw.pgconn
        if (
            pgconn.transaction_status in open_states
            and pgconn.pipeline_status == pq.PipelineStatus.OFF
            and pgconn.exec_(b"ROLLBACK").status == pq.ExecStatus.COMMAND_OK
        ):
            return
        rollback(dbapi_connection)

    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


# A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 10.0


def _install_liveness_check(engine: Engine, ping_after_idle: float) -> None:
    """Ping a pooled connection only when it sat idle for ``ping_after_idle`` seconds.

    A dead connection is almost always one that sat idle (a server restart, a firewall or
    proxy dropping quiet connections), so busy connections skip the round trip that
    ``pool_pre_ping`` spends on every checkout. A connection that dies while busy fails the
    statement that finds it; SQLAlchemy then recognises the disconnect and replaces every
    connection of the pool made before it, so the next transaction gets a live one.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < ping_after_idle:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            # a commit, not a rollback: it wrote nothing, and psycopg forgets every prepared
            # statement of a connection that rolls back
            dbapi_connection.commit()
        except Exception as exc:  # any failure: the pool discards it and connects afresh
            raise DisconnectionError(f"a pooled connection was dead: {exc}") from exc


# each engine's URL as text, rendered once: rendering it costs about 10 µs
_DATABASE_NAMES: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def database_name(session_or_engine: Session | Engine) -> str:
    """The database as text (its engine's URL), for keys of in-process caches that must
    never mix two databases' rows."""
    engine = (
        session_or_engine.get_bind().engine
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    name = _DATABASE_NAMES.get(engine)
    if name is None:
        name = _DATABASE_NAMES[engine] = str(engine.url)
    return name


def json_text(value: Any) -> str:
    """JSON parameters for PostgreSQL (JSONB): orjson, several times faster than the standard
    library, which still writes what orjson refuses (integers wider than 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def create_db_engine(
    raw_url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
) -> Engine:
    """Create the engine for a database URL (never at import time)."""
    url = normalise_database_url(raw_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
        )
        _install_sqlite_hooks(engine)
        _install_read_only_guard(engine)
        return engine
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        connect_args={"connect_timeout": 10, "prepare_threshold": PREPARE_AFTER},
        json_serializer=json_text,
    )
    _install_liveness_check(engine, ping_after_idle)
    _install_rollback_keeping_prepared_statements(engine)
    _install_read_only_guard(engine)
    return engine


def check_database(engine: Engine) -> None:
    """Connect once, turning failures into one sentence that names the setting."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        shown = engine.url.set(drivername=engine.url.get_backend_name())
        where = shown.render_as_string(hide_password=True)
        raise ConfigError(
            f"TACTFUL_DATABASE_URL: cannot connect to {where}: {reason}",
            field="TACTFUL_DATABASE_URL",
        ) from exc


def is_sqlite(session_or_engine: Session | Engine) -> bool:
    """True when the database is SQLite."""
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else (session_or_engine)
    )
    return bind.dialect.name == "sqlite"


class Database:
    """An engine with its session factories."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        reader = engine.execution_options(**{_READONLY: True})
        if engine.dialect.name == "postgresql":
            # Under READ COMMITTED every statement takes its own snapshot anyway, so a read
            # transaction bought nothing but its BEGIN and ROLLBACK round trips. (SQLite's
            # read transactions do keep one snapshot: they stay.)
            reader = reader.execution_options(isolation_level="AUTOCOMMIT")
        self._readonly_factory = sessionmaker(reader, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, readonly: bool = False) -> Session:
        """A new session (the caller commits and closes it)."""
        return self._readonly_factory() if readonly else self._factory()

    @contextlib.contextmanager
    def scope(self, *, readonly: bool = False) -> Iterator[Session]:
        """A transaction: commit on success, roll back on error, run after-commit hooks."""
        session = self.session(readonly=readonly)
        try:
            yield session
            if not readonly:
                session.commit()
            # A read-only scope just closes: loaded objects stay readable after the scope.
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction has committed (never on rollback)."""
    hooks: list[Callable[[], None]] = session.info.setdefault("after_commit", [])
    hooks.append(callback)
    if not session.info.get("after_commit_installed"):
        session.info["after_commit_installed"] = True

        @event.listens_for(session, "after_commit")
        def _run(sess: Session) -> None:
            pending = list(sess.info.get("after_commit", []))
            sess.info["after_commit"] = []
            for hook in pending:
                try:
                    hook()
                except Exception:  # a side effect must never undo a committed change
                    _log.exception("after-commit hook failed")

        @event.listens_for(session, "after_rollback")
        def _drop(sess: Session) -> None:
            sess.info["after_commit"] = []
