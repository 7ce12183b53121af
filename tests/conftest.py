"""Shared fixtures: a fresh migrated database per test on SQLite *and* PostgreSQL.

The PostgreSQL server is started by the tests themselves (``initdb`` + ``pg_ctl`` on a free
port in a temp folder) once per session; each test gets its own database cloned from a
migrated template. ``--db sqlite`` or ``--db postgres`` limits the run to one backend.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tactful import wiring
from tactful.app import create_app
from tactful.config import DatabaseSettings, Settings
from tactful.core.db import create_db_engine
from tactful.core.jobs.registry import JOBS
from tactful.core.jobs.runner import Worker
from tactful.core.logging import StderrHandler
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime
from tactful.core.warehouse import Warehouse
from tactful.tenancy import service as tenancy_service
from tactful.testing.postgres import TempPostgres, available
from tests.warehouses import open_warehouse

wiring.install()
_counter = itertools.count()


@pytest.fixture(autouse=True)
def jobs_run_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests drain the queue under a frozen clock: jobs registered with a ``delay`` (work
    that gathers, such as metrics refreshes) run at once here; the delay itself is tested
    in tests/metrics/test_refresh_gathering.py."""
    for name, spec in list(JOBS.items()):
        if spec.delay is not None:
            monkeypatch.setitem(JOBS, name, replace(spec, delay=None))


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """A test that configures logging (a CLI command run in-process) leaves the root logger
    as it found it, so other tests' servers (aiosmtpd logs every connection) stay quiet."""
    root = logging.getLogger()
    level = root.level
    yield
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)]
    root.setLevel(level)


@pytest.fixture(
    params=[
        "duckdb",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow]),
    ]
)
def any_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse on DuckDB, PostgreSQL and Spark in turn (Spark's is the run's
    shared one, left open)."""
    opened = open_warehouse(request.param, request, tmp_path)
    yield opened
    if request.param != "spark":
        opened.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgres", "all"],
        default="all",
        help="which databases to run database tests on",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    choice = config.getoption("--db")
    if choice == "all":
        return
    skip = pytest.mark.skip(reason=f"--db {choice}")
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("db_backend") if callspec else None
        if backend and backend != choice:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TempPostgres]:
    if not available():
        pytest.skip("PostgreSQL server binaries are not installed")
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: TempPostgres) -> str:
    url = pg_server.create_database("tactful_template")
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    return "tactful_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "tactful.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of the parametrised backend."""
    if db_backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "db" / "tactful.sqlite3"
        target.parent.mkdir()
        shutil.copy(template, target)
        yield f"sqlite:///{target}"
        return
    server: TempPostgres = request.getfixturevalue("pg_server")
    template_name: str = request.getfixturevalue("pg_template")
    name = f"t{next(_counter)}_{request.node.name[:20].lower()}".replace("[", "_")
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    yield server.create_database(name, template=template_name)
    server.drop_database(name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database=DatabaseSettings(url=db_url))


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def spark_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """One Spark session (local mode) for the whole run: it takes ~20 s to start, and
    stopping it ends it for everyone, so tests share this one."""
    pytest.importorskip("pyspark")
    warehouse = Warehouse("spark://local[2]", data_dir=tmp_path_factory.mktemp("spark"))
    yield warehouse
    warehouse.close()


@dataclass(frozen=True)
class Tenant:
    workspace_id: int
    brand_id: int
    admin_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


@pytest.fixture
def tenant(runtime: Runtime) -> Tenant:
    with runtime.db.scope() as session:
        result = tenancy_service.initialize(session, phone_region="RU", timezone="Europe/Moscow")
        assert result.admin_key is not None
        return Tenant(result.workspace.id, result.brand.id, result.admin_key)


@dataclass(frozen=True)
class IngestKey:
    """An API key with the ingest scope only (a website's or an app's write key)."""

    id: int
    plain: str
    name: str = "site"


@pytest.fixture
def ingest_key(runtime: Runtime, tenant: Tenant) -> IngestKey:
    with runtime.db.scope() as session:
        key, plain = tenancy_service.issue_api_key(
            session, workspace_id=tenant.workspace_id, name=IngestKey.name, scopes=["ingest"]
        )
        return IngestKey(key.id, plain)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime, run_worker=False)) as test_client:
        yield test_client


@pytest.fixture
def worker(runtime: Runtime) -> Worker:
    return Worker(runtime, worker_id="test-worker")
