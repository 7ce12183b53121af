"""Warehouses for tests that run the same queries on several engines."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tactful.core.warehouse import Warehouse
from tactful.testing.postgres import TempPostgres

_names = itertools.count()


def open_warehouse(kind: str, request: pytest.FixtureRequest, folder: Path) -> Warehouse:
    """A new DuckDB file or PostgreSQL database in the session's server, or the session's
    Spark warehouse (shared by the whole run: the caller must not close it)."""
    if kind == "duckdb":
        return Warehouse(f"duckdb://{folder / 'w.duckdb'}", data_dir=folder)
    if kind == "postgres":
        server: TempPostgres = request.getfixturevalue("pg_server")
        url = server.create_database(f"warehouse{next(_names)}")
        return Warehouse(url.replace("postgresql://", "postgres://"), data_dir=folder)
    warehouse: Warehouse = request.getfixturevalue("spark_warehouse")
    return warehouse
