"""Bulk import of the demo chain from CSV (customers, then receipt lines) into a fresh
embedded data folder, each beside DuckDB's own ``read_csv`` of the same file into a table
(the ceiling: reading the file is the least any import does).

The customers import resolves identities, writes profiles, identities and consents to
SQLite in chunks; the purchases import checks every row, resolves each receipt's customer
and appends receipts and lines to the DuckDB warehouse.
"""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from tactful import wiring
from tactful.bench import BenchResult, stopwatch
from tactful.config import Settings
from tactful.core.migrate import upgrade
from tactful.core.runtime import build_runtime
from tactful.demo.generate import generate
from tactful.events import service as events
from tactful.tenancy import service as tenancy

NAME = "import"
TITLE = "bulk import of customers and receipt lines from CSV vs DuckDB read_csv of the same files"
BASELINE = "DuckDB read_csv of the same file into a table"
AS_OF = date(2025, 6, 30)
SIZES = {"small": 20_000, "full": 1_000_000}


def _csv(parquet: Path) -> Path:
    target = parquet.with_suffix(".csv")
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{target}' (HEADER)")
    finally:
        con.close()
    return target


def _read_csv(path: Path) -> float:
    """DuckDB reading the file into a table, in memory."""
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        with stopwatch() as elapsed:
            con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}')")
        return elapsed()
    finally:
        con.close()


def run(scale: str) -> list[BenchResult]:
    """Generate the files, import customers and purchases, then time DuckDB reading them."""
    wiring.install()
    customers = SIZES.get(scale, SIZES["small"])
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="tactful-import-") as tmp:
        files = generate(Path(tmp) / "demo", customers=customers, seed=42, as_of=AS_OF)
        paths = {
            "customers": _csv(files.customers),
            "purchases": _csv(files.receipts),
        }
        runtime = build_runtime(Settings(data_dir=Path(tmp) / "data"))
        try:
            upgrade(runtime.db.engine)
            with runtime.db.scope() as session:
                workspace_id = tenancy.initialize(
                    session, phone_region="RU", timezone="Europe/Moscow"
                ).workspace.id
            # the stores first, so receipts are checked against them as a retailer's would be
            events.import_file(
                runtime,
                workspace_id=workspace_id,
                kind="stores",
                path=files.stores,
                options=events.ImportOptions(),
                actor="bench",
            )
            for kind, path in paths.items():
                cpu = time.process_time()
                with stopwatch() as elapsed:
                    run_ = events.import_file(
                        runtime,
                        workspace_id=workspace_id,
                        kind=kind,
                        path=path,
                        options=events.ImportOptions(),
                        actor="bench",
                    )
                ours, cpu = elapsed(), time.process_time() - cpu
                baseline = _read_csv(path)
                results.append(
                    BenchResult(
                        benchmark=NAME,
                        case=f"{kind}: {run_.rows_total:,} rows ({customers:,} customers)",
                        ours_seconds=ours,
                        baseline=BASELINE,
                        baseline_seconds=baseline,
                        items=run_.rows_total,
                        unit="rows",
                        target="within 3× of read_csv",
                        extra={
                            "file": f"{path.stat().st_size / 1e6:,.0f} MB",
                            "imported, rejected": f"{run_.rows_imported:,}, {run_.rows_rejected:,}",
                            "CPU seconds of this process": f"{cpu:.1f}",
                        },
                    )
                )
        finally:
            runtime.close()
    total_ours = sum(r.ours_seconds for r in results)
    total_base = sum(r.baseline_seconds or 0 for r in results)
    results.append(
        BenchResult(
            benchmark=NAME,
            case="both files",
            ours_seconds=total_ours,
            baseline=BASELINE,
            baseline_seconds=total_base,
            items=sum(r.items for r in results),
            unit="rows",
            target="within 3× of read_csv",
        )
    )
    return results
