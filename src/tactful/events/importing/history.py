"""Writing imported history to the warehouse: which rows it already has, and appending the
rest in large Arrow batches (the same tables and columns the loader fills)."""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import pyarrow as pa

from tactful.events.importing import reader
from tactful.events.importing.context import ImportContext
from tactful.events.warehouse import SCHEMAS, ensure_tables

WRITE_BATCH = 1_000_000


def known_keys(
    ctx: ImportContext, *, table: str, probe: str, keys: Sequence[str], into: str
) -> None:
    """Create the DuckDB table ``into`` with the ``keys`` of rows the warehouse ``table``
    already holds for this workspace among the rows whose first key is in ``probe`` (a
    query returning that key's values)."""
    warehouse = ctx.runtime.warehouse
    ensure_tables(warehouse)
    first = keys[0]
    wanted = ctx.con.execute(probe).to_arrow_table()
    stored = warehouse.table(table)
    mine = stored.filter(stored[first].notnull() & (stored.workspace_id == ctx.workspace_id))
    if wanted.num_rows and warehouse.con.execute(mine.count()):
        found = warehouse.con.to_pyarrow(
            mine.semi_join(ibis.memtable(wanted.rename_columns([first])), first).select(*keys)
        )
    else:
        schema = SCHEMAS[table].to_pyarrow()
        found = pa.table({k: pa.array([], schema.field(k).type) for k in keys})
    ctx.con.register("known_batch", found)
    try:
        ctx.con.execute(f"CREATE TABLE {into} AS SELECT * FROM known_batch")  # noqa: S608
    finally:
        ctx.con.unregister("known_batch")


def append(ctx: ImportContext, *, table: str, sql: str, stage: str, total: int) -> int:
    """Append the rows of ``sql`` (the warehouse table's columns, in order) to ``table``."""
    warehouse = ctx.runtime.warehouse
    ensure_tables(warehouse)
    schema = SCHEMAS[table].to_pyarrow()
    written = 0
    ctx.progress(stage, 0, total)
    for batch in reader.batches(ctx.con, sql, size=WRITE_BATCH):
        rows = batch.rename_columns(schema.names).cast(schema)
        if warehouse.kind == "duckdb":
            # DuckDB scans the Arrow table in place; Ibis's insert costs twice as much
            duck = warehouse.con.con
            duck.register("tactful_import_batch", rows)
            try:
                duck.execute(f"INSERT INTO {table} SELECT * FROM tactful_import_batch")  # noqa: S608
            finally:
                duck.unregister("tactful_import_batch")
        else:
            warehouse.insert_arrow(table, rows)
        written += batch.num_rows
        ctx.progress(stage, written, total)
    return written
