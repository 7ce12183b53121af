"""The demo data generator: five Parquet files of a home-and-garden chain with a web shop.

Customers are generated in fixed chunks; each chunk's customers, receipts and events come from
their own random streams (``SeedSequence(seed, spawn_key=(table, chunk))``), so the same seed
and ``as_of`` give byte-identical files, and the tables are independent of one another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tactful.core.errors import ValidationFailed
from tactful.demo import catalog, events, purchases
from tactful.demo import customers as people_data
from tactful.demo.timeline import Timeline

CHUNK = 100_000
MAX_CUSTOMERS = 50_000_000
_CATALOG, _PEOPLE, _CONTACTS, _PURCHASES, _EVENTS = range(5)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class DemoFiles:
    """Where the generated files are and how much went into them."""

    directory: Path
    stores: Path
    products: Path
    customers: Path
    receipts: Path
    events: Path
    customers_count: int
    receipts_count: int
    receipt_lines_count: int
    events_count: int
    seconds: float


def _rng(seed: int, table: int, chunk: int = 0) -> np.random.Generator:
    # The same stream as SeedSequence(seed).spawn(…)[table].spawn(…)[chunk], without having
    # to spawn every earlier child first.
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(table, chunk)))
    )


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy")


def generate(
    directory: Path,
    *,
    customers: int = 20_000,
    seed: int = 42,
    as_of: date | None = None,
    progress: Progress | None = None,
) -> DemoFiles:
    """Write the five Parquet files; as_of (default: today, UTC) is the last day of history."""
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValidationFailed(
            f"customers must be between 1 and {MAX_CUSTOMERS:,}", field="customers"
        )
    if seed < 0:
        raise ValidationFailed("seed must be zero or positive", field="seed")
    started = time.perf_counter()
    report = progress or (lambda _stage, _fraction: None)
    as_of = as_of or datetime.now(UTC).date()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: directory / f"{name}.parquet"
        for name in ("stores", "products", "customers", "receipts", "events")
    }

    timeline = Timeline.ending(as_of)
    products = catalog.build_products(_rng(seed, _CATALOG))
    _write(catalog.stores_table(as_of), paths["stores"])
    _write(products.table, paths["products"])
    ctx = purchases.context(timeline, products)
    report("catalog", 1.0)

    id_width = max(7, len(str(customers)))
    registry = people_data.EmailRegistry.empty()
    counters = events.EventCounters()
    receipts = lines = 0
    chunks = range(0, customers, CHUNK)
    sink = _Sink(paths)
    try:
        for number, start in enumerate(chunks):
            size = min(CHUNK, customers - start)
            people = people_data.draw_people(
                _rng(seed, _PEOPLE, number), timeline, ctx.stores, start, size
            )
            ids = people_data.external_ids(start, size, id_width)
            bought = purchases.simulate(_rng(seed, _PURCHASES, number), people, ctx, receipts, ids)
            people_rows = people_data.people_table(
                _rng(seed, _CONTACTS, number),
                people,
                timeline,
                bought.first_purchase,
                registry,
                id_width,
            )
            done = (start + size) / customers
            # At most one chunk waits for the writer, which bounds memory.
            sink.settle()
            sink.append("customers", people_rows)
            report("customers", done)
            sink.append("receipts", bought.table)
            receipts += bought.receipts
            lines += bought.table.num_rows
            report("receipts", done)
            activity = events.simulate(
                _rng(seed, _EVENTS, number),
                people,
                ctx,
                bought.orders,
                ids,
                people_rows["app_device_id"].combine_chunks(),
                pc.cast(people_rows["registered_at"], pa.int64()).to_numpy(),
                counters,
            )
            sink.append("events", activity)
            report("events", done)
    finally:
        sink.close()
    return DemoFiles(
        directory=directory,
        stores=paths["stores"],
        products=paths["products"],
        customers=paths["customers"],
        receipts=paths["receipts"],
        events=paths["events"],
        customers_count=customers,
        receipts_count=receipts,
        receipt_lines_count=lines,
        events_count=counters.events,
        seconds=time.perf_counter() - started,
    )


class _Sink:
    """Appends tables to the Parquet files on one background thread.

    Encoding and compressing a chunk release the GIL, so they overlap with generating the
    next chunk; a single thread keeps every file's row groups in chunk order.
    """

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-parquet")
        self._pending: list[Future[None]] = []

    def append(self, name: str, table: pa.Table) -> None:
        """Queue a table for the named file."""
        self._pending.append(self._pool.submit(self._write, name, table))

    def settle(self) -> None:
        """Wait for the queued writes (and raise their errors)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Finish the queued writes and close the files."""
        try:
            self.settle()
        finally:
            self._pool.shutdown(wait=True)
            for writer in self._writers.values():
                writer.close()

    def _write(self, name: str, table: pa.Table) -> None:
        writer = self._writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(self._paths[name], table.schema, compression="snappy")
            self._writers[name] = writer
        writer.write_table(table)
