"""The demo data generator against DuckDB writing random rows of the same shape.

The baseline writes as many customers, receipt lines and events as the generator produced,
with the same column counts and types, straight from ``range(n)`` with ``random()``: the cost
of producing and encoding that much Parquet with no realism at all.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import duckdb

from tactful.bench import BenchResult, stopwatch
from tactful.demo.generate import generate

NAME = "demo"
TITLE = "realistic retail demo data (Parquet) vs DuckDB writing random rows of the same shape"
BASELINE = "DuckDB writing random rows of the same shape"
AS_OF = date(2025, 6, 30)
SIZES = {"small": (20_000,), "full": (20_000, 1_000_000)}

_CUSTOMERS = """
SELECT 'C' || lpad((i + 1)::VARCHAR, 7, '0') AS external_id,
       'Name' || (i % 61)::VARCHAR AS first_name,
       'Surname' || (i % 131)::VARCHAR AS last_name,
       CASE WHEN random() < 0.57 THEN 'f' ELSE 'm' END AS gender,
       DATE '1950-01-01' + (random() * 20000)::INT AS birthday,
       '+7 9' || lpad((random() * 99999999)::BIGINT::VARCHAR, 8, '0') AS phone,
       'user' || i::VARCHAR || '@mail.ru' AS email,
       '27' || lpad((random() * 9999999999)::BIGINT::VARCHAR, 11, '0') AS loyalty_card,
       'City' || (i % 18)::VARCHAR AS city,
       'Europe/Moscow' AS timezone,
       'S' || lpad((i % 48)::VARCHAR, 3, '0') AS home_store_id,
       TIMESTAMPTZ '2020-01-01 00:00:00+00' + to_seconds((random() * 1.7e8)::BIGINT)
           AS registered_at,
       CASE WHEN random() < 0.62 THEN 'store' ELSE 'online' END AS source,
       random() < 0.4 AS consent_email, random() < 0.4 AS consent_sms,
       random() < 0.2 AS consent_push, random() < 0.2 AS consent_viber,
       random() < 0.97 AS consent_personal_data,
       CASE WHEN random() < 0.3 THEN md5(i::VARCHAR) END AS app_device_id,
       CASE WHEN random() < 0.3 THEN 'occasional' ELSE 'regular' END AS archetype
FROM range({n}) t(i)
"""

_LINES = """
SELECT 'R' || lpad((i // 2 + 1)::VARCHAR, 10, '0') AS receipt_id,
       (i % 2 + 1)::INTEGER AS line_no,
       'C' || lpad((random() * {customers})::BIGINT::VARCHAR, 7, '0') AS customer_external_id,
       'S' || lpad((random() * 48)::INT::VARCHAR, 3, '0') AS store_id,
       CASE WHEN random() < 0.2 THEN 'online' ELSE 'offline' END AS channel,
       TIMESTAMPTZ '2023-07-01 00:00:00+00' + to_seconds((random() * 63072000)::BIGINT)
           AS occurred_at,
       CASE WHEN random() < 0.02 THEN 'return' ELSE 'sale' END AS kind,
       CASE WHEN random() < 0.02 THEN 'R' || lpad((i // 3)::VARCHAR, 10, '0') END
           AS original_receipt_id,
       'P' || lpad((random() * 3720)::INT::VARCHAR, 6, '0') AS product_id,
       'category-' || (random() * 37)::INT::VARCHAR AS category_id,
       (1 + random() * 3)::INTEGER AS quantity,
       ((random() * 10000)::BIGINT * 100) AS unit_price,
       ((random() * 100)::BIGINT * 100) AS discount,
       ((random() * 500)::BIGINT * 100) AS bonus_accrued,
       ((random() * 50)::BIGINT * 100) AS bonus_spent
FROM range({n}) t(i)
"""

_EVENTS = """
SELECT md5(i::VARCHAR) AS event_id,
       CASE WHEN random() < 0.8 THEN 'C' || lpad((random() * {customers})::BIGINT::VARCHAR, 7, '0')
       END AS customer_external_id,
       md5((i // 7)::VARCHAR) AS anonymous_id,
       CASE WHEN random() < 0.5 THEN 'Product Viewed' ELSE 'Order Completed' END AS event,
       CASE WHEN random() < 0.3 THEN 'app' ELSE 'web' END AS channel,
       TIMESTAMPTZ '2023-07-01 00:00:00+00' + to_seconds((random() * 63072000)::BIGINT)
           AS occurred_at,
       '{{"product_id":"P' || lpad((random() * 3720)::INT::VARCHAR, 6, '0')
           || '","category":"Garden / Tools","price":' || (random() * 5000)::INT::VARCHAR
           || '.00,"cart_id":"K' || lpad((i // 3)::VARCHAR, 10, '0') || '"}}' AS properties
FROM range({n}) t(i)
"""


def _baseline(directory: Path, customers: int, lines: int, events: int) -> None:
    con = duckdb.connect()
    try:
        for name, sql, rows in (
            ("customers", _CUSTOMERS, customers),
            ("receipts", _LINES, lines),
            ("events", _EVENTS, events),
        ):
            query = sql.format(n=rows, customers=customers)
            target = directory / f"{name}.parquet"
            con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION snappy)")
    finally:
        con.close()


def run(scale: str) -> list[BenchResult]:
    """Generate each size, then let DuckDB write the same row counts of random data."""
    results: list[BenchResult] = []
    for customers in SIZES.get(scale, SIZES["small"]):
        with tempfile.TemporaryDirectory(prefix="tactful-demo-") as tmp:
            ours_dir, base_dir = Path(tmp) / "ours", Path(tmp) / "baseline"
            base_dir.mkdir()
            with stopwatch() as ours:
                files = generate(ours_dir, customers=customers, seed=42, as_of=AS_OF)
            with stopwatch() as baseline:
                _baseline(base_dir, customers, files.receipt_lines_count, files.events_count)
            results.append(
                BenchResult(
                    benchmark=NAME,
                    case=f"{customers:,} customers",
                    ours_seconds=ours(),
                    baseline=BASELINE,
                    baseline_seconds=baseline(),
                    items=files.receipt_lines_count,
                    unit="lines",
                    target="1M customers in a few minutes" if customers >= 1_000_000 else "",
                    extra={
                        "customers": f"{files.customers_count:,}",
                        "receipts": f"{files.receipts_count:,}",
                        "lines": f"{files.receipt_lines_count:,}",
                        "events": f"{files.events_count:,}",
                        "seconds": f"{files.seconds:.1f}",
                    },
                )
            )
    return results
