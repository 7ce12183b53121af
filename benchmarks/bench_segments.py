"""Segment evaluation, incremental metric refresh and size estimates on the demo data.

The demo generator's Parquet files are loaded straight into the warehouse tables (receipts,
receipt lines, customer profiles and reachability) with DuckDB — the same shapes the loader
and the bulk importer write — and every customer's metrics are built once. Then:

1. **Full evaluation** of a six-condition segment (gender, age, city, at least two purchases
   in the last 90 days, a falling average check, 7–60 days since the last purchase): our
   compiled Ibis query, materialising the member ids, against a hand-written DuckDB SQL query
   over the same tables (the ceiling, target ≤ 1.5×) and the same hand-written query on
   PostgreSQL over the same rows loaded with COPY (target: we are ≥ 10× faster). Ours is a
   repeated evaluation of the definition, as a scheduled or continuous refresh runs it: the
   SQL is filled in from the template the first evaluation made (``segments.templates``).
   The first evaluation (which compiles) and an evaluation that compiles every time are
   printed beside it.
2. **Incremental metric refresh** after 10,000 new receipts: recomputing and replacing the
   metrics of the customers those receipts touched, against rebuilding everyone's metrics
   (target < 1 s).
3. **Size estimate** of the same segment over the materialised metrics (target < 200 ms),
   against the hand-written DuckDB count.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import psycopg
import pyarrow as pa

from tactful.bench import BenchResult
from tactful.core.warehouse import Warehouse
from tactful.demo.generate import generate
from tactful.events.warehouse import RECEIPT_LINES, RECEIPTS, SCHEMAS
from tactful.metrics import service as metrics_service
from tactful.metrics import warehouse as mw
from tactful.segments import service as segment_service
from tactful.segments.compiler import Compiler
from tactful.segments.definition import parse
from tactful.testing.postgres import temp_postgres

NAME = "segments"
TITLE = "six-condition segment, incremental metric refresh and size estimate on demo data"
AS_OF = date(2025, 6, 30)
NOW = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
WORKSPACE = 1
SIZES = {"small": 20_000, "full": 1_000_000}
NEW_RECEIPTS = 10_000
RUNS = 5

DEFINITION = {
    "all": [
        {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
        {"type": "attribute", "attribute": "age", "operator": "between", "value": [25, 55]},
        {
            "type": "attribute",
            "attribute": "city",
            "operator": "in",
            "value": ["Moscow", "Saint Petersburg", "Kazan", "Yekaterinburg"],
        },
        {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 2},
        {"type": "metric", "metric": "avg_check_trend", "operator": "lt", "value": -0.1},
        {
            "type": "metric",
            "metric": "days_since_last_purchase",
            "operator": "between",
            "value": [7, 60],
        },
    ]
}

# The same question by hand. {now} and {since} are timestamp literals; {today_*} the date.
HAND_SQL = """
WITH recent AS MATERIALIZED (
    SELECT customer_id, count(*) AS n
    FROM receipts
    WHERE workspace_id = 1 AND kind = 'sale' AND occurred_at > {since}
    GROUP BY customer_id
)
SELECT p.customer_id
FROM customer_profiles p
JOIN customer_metrics m ON m.workspace_id = 1 AND m.customer_id = p.customer_id
JOIN recent r ON r.customer_id = p.customer_id
WHERE p.workspace_id = 1
  AND p.gender = 'f'
  AND p.city IN ('Moscow', 'Saint Petersburg', 'Kazan', 'Yekaterinburg')
  AND {today_year} - extract(year FROM p.birthday)
      - CASE WHEN extract(month FROM p.birthday) > {today_month}
              OR (extract(month FROM p.birthday) = {today_month}
                  AND extract(day FROM p.birthday) > {today_day}) THEN 1 ELSE 0 END
      BETWEEN 25 AND 55
  AND r.n >= 2
  AND m.avg_check_trend < -0.1
  -- 7 to 60 whole days since the last purchase, as a range PostgreSQL can estimate
  AND m.last_purchase_at > {day61} AND m.last_purchase_at <= {day7}
"""


def _hand_sql(dialect: str) -> str:
    kind = "TIMESTAMPTZ" if dialect == "duckdb" else "timestamptz"

    def stamp(moment: datetime) -> str:
        return f"{kind} '{moment.strftime('%Y-%m-%d %H:%M:%S+00')}'"

    return HAND_SQL.format(
        since=stamp(NOW - timedelta(days=90)),
        day61=stamp(NOW - timedelta(days=61)),
        day7=stamp(NOW - timedelta(days=7)),
        today_year=NOW.year,
        today_month=NOW.month,
        today_day=NOW.day,
    )


def _timed(work: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    """The median of ``runs`` timed runs after one warm-up, and the last result."""
    result = work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _timed_pair(
    ours: Callable[[], Any], baseline: Callable[[], Any], runs: int = RUNS
) -> tuple[tuple[float, Any], tuple[float, Any]]:
    """``_timed`` of ours and of the baseline with their runs alternating (after one
    warm-up each), so neither gets a warmer cache or a quieter moment of the machine."""
    results = [ours(), baseline()]
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for index, work in enumerate((ours, baseline)):
            started = time.perf_counter()
            results[index] = work()
            times[index].append(time.perf_counter() - started)
    return (
        (statistics.median(times[0]), results[0]),
        (statistics.median(times[1]), results[1]),
    )


def _load(warehouse: Warehouse, folder: Path) -> None:
    """The demo's Parquet files straight into the warehouse tables (ids: C0000042 → 42)."""
    mw.ensure_metric_tables(warehouse)
    con: Any = warehouse.con
    cid = "CAST(substr(customer_external_id, 2) AS BIGINT)"
    con.raw_sql(
        f"INSERT INTO {RECEIPT_LINES} SELECT 0, {WORKSPACE}, receipt_id, line_no, {cid}, "
        "store_id, channel, kind, occurred_at, product_id, category_id, quantity, unit_price, "
        "discount, quantity * unit_price - discount, "
        "CASE WHEN kind = 'return' THEN -1 ELSE 1 END * (quantity * unit_price - discount) "
        f"FROM read_parquet('{folder / 'receipts.parquet'}')"
    )
    con.raw_sql(
        f"INSERT INTO {RECEIPTS} SELECT 0, {WORKSPACE}, receipt_id, any_value(customer_id), "
        "any_value(store_id), any_value(channel), any_value(kind), NULL, any_value(occurred_at), "
        "count(*), sum(quantity), sum(quantity * unit_price), sum(discount), sum(amount), "
        "sum(signed_amount), 0, 0, 'RUB', 'demo', true "
        f"FROM {RECEIPT_LINES} GROUP BY receipt_id"
    )
    people = f"read_parquet('{folder / 'customers.parquet'}')"
    con.raw_sql(
        f"INSERT INTO {mw.PROFILES} SELECT {WORKSPACE}, CAST(substr(external_id, 2) AS BIGINT), "
        "false, false, gender, birthday, city, 'ru', timezone, 180, email IS NOT NULL, "
        f"phone IS NOT NULL, '{{}}', registered_at, registered_at, NULL FROM {people}"
    )
    for channel, contact in (("email", "email"), ("sms", "phone"), ("push", "app_device_id")):
        con.raw_sql(
            f"INSERT INTO {mw.REACH} SELECT {WORKSPACE}, CAST(substr(external_id, 2) AS BIGINT), "
            f"1, '{channel}', {contact} IS NOT NULL, consent_{channel}, "
            f"{contact} IS NOT NULL AND consent_{channel} AND consent_personal_data FROM {people}"
        )


def _compiler(warehouse: Warehouse, now: datetime = NOW) -> Compiler:
    return Compiler(
        warehouse=warehouse,
        source=metrics_service,
        workspace_id=WORKSPACE,
        now=now,
        attribute_types={},
        definition_of=lambda _segment_id: None,
    )


def _postgres_copy(warehouse: Warehouse, url: str, folder: Path) -> None:
    """The tables the hand-written query reads, copied to PostgreSQL with COPY."""
    tables = {
        mw.PROFILES: "workspace_id bigint, customer_id bigint, gender text, birthday date, "
        "city text",
        mw.METRICS: "workspace_id bigint, customer_id bigint, avg_check_trend double precision, "
        "last_purchase_at timestamptz",
        RECEIPTS: "workspace_id bigint, customer_id bigint, receipt_id text, kind text, "
        "occurred_at timestamptz",
    }
    con: Any = warehouse.con
    with psycopg.connect(url, autocommit=True) as pg:
        for name, columns in tables.items():
            names = ", ".join(part.split()[0] for part in columns.split(", "))
            path = folder / f"{name}.csv"
            con.raw_sql(f"COPY (SELECT {names} FROM {name}) TO '{path}' (HEADER false)")
            pg.execute(f"CREATE TABLE {name} ({columns})")
            with (
                pg.cursor() as cursor,
                cursor.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy,
                path.open("rb") as source,
            ):
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
            path.unlink()
        pg.execute(f"CREATE UNIQUE INDEX ON {mw.PROFILES} (workspace_id, customer_id)")
        pg.execute(f"CREATE UNIQUE INDEX ON {mw.METRICS} (workspace_id, customer_id)")
        pg.execute(f"CREATE INDEX ON {RECEIPTS} (occurred_at)")
        pg.execute("VACUUM ANALYZE")


def _new_receipts(warehouse: Warehouse, customers: int) -> list[int]:
    """10,000 sales today by random existing customers, appended to the history."""
    rnd = random.Random(7)
    receipts, lines, touched = [], [], []
    for number in range(NEW_RECEIPTS):
        customer = rnd.randint(1, customers)
        touched.append(customer)
        at = NOW - timedelta(minutes=rnd.randint(1, 600))
        price = rnd.randint(1, 500) * 100
        receipt_id = f"NEW{number:06d}"
        common = {
            "seq": 1,
            "workspace_id": WORKSPACE,
            "receipt_id": receipt_id,
            "customer_id": customer,
            "store_id": "S001",
            "channel": "offline",
            "kind": "sale",
            "occurred_at": at,
        }
        receipts.append(
            {
                **common,
                "original_receipt_id": None,
                "lines": 1,
                "quantity": 1.0,
                "gross": price,
                "discount": 0,
                "amount": price,
                "signed_amount": price,
                "bonus_accrued": 0,
                "bonus_spent": 0,
                "currency": "RUB",
                "source": "bench",
                "historical": False,
            }
        )
        lines.append(
            {
                **common,
                "line_no": 1,
                "product_id": "P000001",
                "category_id": "garden-tools",
                "quantity": 1.0,
                "unit_price": price,
                "discount": 0,
                "amount": price,
                "signed_amount": price,
            }
        )
    warehouse.insert_arrow(RECEIPTS, pa.Table.from_pylist(receipts, SCHEMAS[RECEIPTS].to_pyarrow()))
    warehouse.insert_arrow(
        RECEIPT_LINES, pa.Table.from_pylist(lines, SCHEMAS[RECEIPT_LINES].to_pyarrow())
    )
    return sorted(set(touched))


def run(scale: str) -> list[BenchResult]:
    customers = SIZES.get(scale, SIZES["small"])
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="tactful-segments-") as tmp:
        folder = Path(tmp)
        clock_start = time.perf_counter()

        def note(stage: str) -> None:
            print(f"  [{time.perf_counter() - clock_start:6.0f} s] {stage}", flush=True)

        files = generate(folder / "demo", customers=customers, seed=42, as_of=AS_OF)
        note("demo data generated")
        warehouse = Warehouse(f"duckdb://{folder / 'warehouse.duckdb'}", data_dir=folder)
        try:
            _load(warehouse, files.directory)
            note("loaded into DuckDB")
            started = time.perf_counter()
            rows = mw.compute_metrics(warehouse, workspace_id=WORKSPACE, now=NOW)
            mw.replace_rows(
                warehouse, mw.METRICS, workspace_id=WORKSPACE, customer_ids=None, rows=rows
            )
            rebuild_seconds = time.perf_counter() - started
            note(f"metrics built in {rebuild_seconds:.1f} s")
            con: Any = warehouse.con
            raw = con.con  # the DuckDB connection behind Ibis

            node = parse(DEFINITION)

            def ours() -> list[int]:
                return sorted(
                    segment_service.evaluate_members(
                        warehouse, lambda moment: _compiler(warehouse, moment), node, NOW
                    )
                )

            def compiled_each_time() -> list[int]:
                members = _compiler(warehouse).members(node)
                return sorted(con.to_pyarrow(members)["customer_id"].to_pylist())

            hand_sql = _hand_sql("duckdb")

            def hand() -> list[int]:
                return sorted(r[0] for r in raw.execute(hand_sql).fetchall())

            started = time.perf_counter()
            first_ids = ours()
            first_s = time.perf_counter() - started
            (ours_s, ours_ids), (hand_s, hand_ids) = _timed_pair(ours, hand)
            compile_s, _sql = _timed(
                lambda: ibis.to_sql(_compiler(warehouse).members(node), dialect="duckdb")
            )
            each_s, each_ids = _timed(compiled_each_time, runs=3)
            assert first_ids == ours_ids == each_ids == hand_ids, (
                "the compiled query and the hand-written one disagree"
            )
            note("DuckDB evaluations timed")
            with temp_postgres(fast=False) as server:
                url = server.create_database("bench")
                _postgres_copy(warehouse, url, folder)
                note("copied to PostgreSQL")
                pg_sql = _hand_sql("postgres")
                with psycopg.connect(url) as pg:

                    def postgres() -> list[int]:
                        return sorted(r[0] for r in pg.execute(pg_sql).fetchall())

                    pg_s, pg_ids = _timed(postgres, runs=3)
            assert pg_ids == hand_ids, "PostgreSQL answers differently"
            common = {
                "first evaluation (compiles it and makes the template)": f"{first_s:.3f} s",
                "evaluation compiling the definition each time": f"{each_s:.3f} s",
                "compiling the definition": f"{compile_s:.3f} s",
                "members": f"{len(ours_ids):,}",
                "customers": f"{customers:,}",
                "receipt lines": f"{files.receipt_lines_count:,}",
                "receipts": f"{files.receipts_count:,}",
            }
            results.append(
                BenchResult(
                    NAME,
                    "full evaluation (member ids)",
                    ours_s,
                    "hand-written DuckDB SQL (ceiling)",
                    hand_s,
                    target="≤ 1.5× the hand-written query",
                    extra=common,
                )
            )
            results.append(
                BenchResult(
                    NAME,
                    "full evaluation vs PostgreSQL",
                    ours_s,
                    "hand-written SQL on PostgreSQL",
                    pg_s,
                    target="≥ 10× faster (ratio ≤ 0.1)",
                )
            )

            def size() -> int:
                return segment_service.count_members(
                    warehouse,
                    workspace_id=WORKSPACE,
                    anchor=NOW,
                    key="six conditions",
                    members=lambda: _compiler(warehouse).members(node),
                )

            count_sql = f"SELECT count(*) FROM ({hand_sql})"
            (size_s, size_n), (hand_count_s, hand_n) = _timed_pair(
                size, lambda: raw.execute(count_sql).fetchone()[0]
            )
            assert size_n == hand_n == len(ours_ids)
            results.append(
                BenchResult(
                    NAME,
                    "size estimate",
                    size_s,
                    "hand-written DuckDB count",
                    hand_count_s,
                    target="< 200 ms",
                    extra={"size": f"{size_n:,}"},
                )
            )

            touched = _new_receipts(warehouse, customers)
            later = NOW + timedelta(minutes=1)

            def incremental() -> None:
                ids = metrics_service.canonical_ids(
                    warehouse, workspace_id=WORKSPACE, customer_ids=touched
                )
                mw.refresh_customers(
                    warehouse,
                    workspace_id=WORKSPACE,
                    customer_ids=pa.array(ids, pa.int64()),
                    now=later,
                )

            def full() -> None:
                fresh = mw.compute_metrics(warehouse, workspace_id=WORKSPACE, now=later)
                mw.replace_rows(
                    warehouse, mw.METRICS, workspace_id=WORKSPACE, customer_ids=None, rows=fresh
                )

            incremental_s, _ = _timed(incremental, runs=3)
            full_s, _ = _timed(full, runs=1)
            results.append(
                BenchResult(
                    NAME,
                    f"metric refresh after {NEW_RECEIPTS:,} receipts",
                    incremental_s,
                    "full metric rebuild",
                    full_s,
                    items=len(touched),
                    unit="customers",
                    target="< 1 s",
                    extra={
                        "customers touched": f"{len(touched):,}",
                        "first full build": f"{rebuild_seconds:.1f} s",
                    },
                )
            )
        finally:
            warehouse.close()
    return results
