"""Fixtures for imports: run an import in this process, write files, read what was stored."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tactful.core.runtime import Runtime
from tactful.events import service
from tactful.events.models import ImportRun
from tests.conftest import Tenant

Importer = Callable[..., ImportRun]


@pytest.fixture
def run_import(runtime: Runtime, tenant: Tenant) -> Importer:
    """``run_import(kind, path, **options)``: import a file now and return its run."""

    def run(kind: str, path: Path, **options: Any) -> ImportRun:
        return service.import_file(
            runtime,
            workspace_id=tenant.workspace_id,
            kind=kind,
            path=path,
            options=service.ImportOptions(**options),
            actor="test",
        )

    return run


def write_text(path: Path, text: str) -> Path:
    """A file with exactly this text (the tests spell CSV files out line by line)."""
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def errors(path: Path) -> list[list[str]]:
    """An error file's rows (header included)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def counts(run: ImportRun) -> tuple[str, int, int, int, int]:
    return (run.status, run.rows_total, run.rows_imported, run.rows_duplicate, run.rows_rejected)


def count_rows(runtime: Runtime, model: type[Any]) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def warehouse_rows(runtime: Runtime, table: str, order: list[str]) -> list[dict[str, Any]]:
    warehouse = runtime.warehouse
    if not warehouse.has_table(table):
        return []
    rows: list[dict[str, Any]] = warehouse.con.to_pyarrow(
        warehouse.table(table).order_by(order)
    ).to_pylist()
    return rows
