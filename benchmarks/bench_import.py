"""Bulk import of the demo chain from CSV (customers, then receipt lines) into a fresh
embedded data folder, each beside DuckDB's own ``read_csv`` of the same file into a table
(the ceiling: reading the file is the least any import does).

The customers import resolves identities, writes profiles, identities and consents to
SQLite in chunks; the purchases import checks every row, resolves each receipt's customer
and appends receipts and lines to the DuckDB warehouse.

Beside the customers figure the benchmark prints two floors that no import of this file into
the embedded default can go under, whatever its code: the rows the import wrote, inserted
into a copy of the database as it was before the import by bare ``sqlite3`` ``executemany``
in one transaction (same schema, indexes and pragmas, no logic), and ``phonenumbers``
parsing, validating and formatting the file's phones (the E.164 check the import must make).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from contextlib import closing
from datetime import date
from pathlib import Path

import duckdb
import phonenumbers

from tactful import wiring
from tactful.bench import BenchResult, stopwatch
from tactful.config import Settings
from tactful.core.db import SQLITE_PRAGMAS
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
REGION = "RU"


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


def _marks(con: sqlite3.Connection) -> dict[str, int]:
    """Each table's highest rowid."""
    tables = [
        name
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        t: int(con.execute(f'SELECT coalesce(max(rowid), 0) FROM "{t}"').fetchone()[0])
        for t in tables
    }


def _write_floor(
    database: Path, before: Path, marks: dict[str, int]
) -> tuple[float, dict[str, int]]:
    """The rows ``database`` gained after ``marks`` (by table), inserted into ``before`` (a
    copy of it from then) by bare ``executemany`` in one transaction: the seconds it took."""
    new: dict[str, list[tuple[object, ...]]] = {}
    with closing(sqlite3.connect(database)) as source:
        for table, mark in marks.items():
            rows = source.execute(f'SELECT * FROM "{table}" WHERE rowid > ?', (mark,)).fetchall()
            if rows:
                new[table] = rows
    target = sqlite3.connect(before, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            target.execute(pragma)
        with stopwatch() as elapsed:
            target.execute("BEGIN")
            for table, rows in new.items():
                marks_ = ", ".join("?" * len(rows[0]))
                target.executemany(f'INSERT INTO "{table}" VALUES ({marks_})', rows)
            target.execute("COMMIT")
        return elapsed(), {table: len(rows) for table, rows in new.items()}
    finally:
        target.close()


def _phones_floor(path: Path, region: str) -> tuple[float, int]:
    """``phonenumbers`` parsing, validating and formatting the file's phones, as the import's
    E.164 check does (without its cache): the seconds and the number of phones."""
    con = duckdb.connect()
    try:
        phones = [
            str(row[0])
            for row in con.execute(
                f"SELECT phone FROM read_csv('{path}', all_varchar = true) WHERE phone IS NOT NULL"
            ).fetchall()
        ]
    finally:
        con.close()
    with stopwatch() as elapsed:
        for text in phones:
            try:
                number = phonenumbers.parse(text.strip(), region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return elapsed(), len(phones)


def _floors(
    database: Path, before: Path, marks: dict[str, int], path: Path, baseline: float
) -> dict[str, str]:
    """The customers import's floors, as extra columns of its row."""
    write, written = _write_floor(database, before, marks)
    phones, count = _phones_floor(path, REGION)
    listed = ", ".join(
        f"{table} {n:,}" for table, n in sorted(written.items(), key=lambda x: -x[1])
    )
    return {
        "rows written": f"{sum(written.values()):,} ({listed})",
        "floor: the same rows by bare sqlite3 executemany": (
            f"{write:.2f} s ({write / baseline:.1f}× read_csv)"
        ),
        f"floor: phonenumbers on the file's {count:,} phones": (
            f"{phones:.2f} s ({phones / baseline:.1f}× read_csv)"
        ),
        "the two floors together": f"{(write + phones) / baseline:.1f}× read_csv",
    }


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
                    session, phone_region=REGION, timezone="Europe/Moscow"
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
            database = Path(str(runtime.db.engine.url.database))
            for kind, path in paths.items():
                if kind == "customers":
                    # the database as the import finds it, for the floor of its writes
                    before = Path(tmp) / "before.sqlite3"
                    with closing(sqlite3.connect(database)) as live:
                        with closing(sqlite3.connect(before)) as copy:
                            live.backup(copy)
                        marks = _marks(live)
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
                floors = (
                    _floors(database, before, marks, path, baseline) if kind == "customers" else {}
                )
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
                            **floors,
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
