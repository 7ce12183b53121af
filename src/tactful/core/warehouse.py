"""The analytical warehouse: one Ibis connection factory and idempotent Arrow appends.

DuckDB (a file in the data folder) is the embedded default; ``postgres://`` and ``spark://``
URLs select PostgreSQL or Spark. In embedded mode one process owns the DuckDB file; another
process that tries to open it gets a sentence saying so instead of a lock traceback.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import ibis
import pyarrow as pa
import pyarrow.compute as pc
from ibis.backends import BaseBackend

from tactful.config import WarehouseSettings
from tactful.core.errors import ConfigError, Unavailable

SCHEMES = ("duckdb", "postgres", "postgresql", "spark")


def warehouse_kind(url: str) -> str:
    """``duckdb``, ``postgres`` or ``pyspark`` for a warehouse URL, or a ConfigError."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "duckdb":
        return "duckdb"
    if scheme in ("postgres", "postgresql"):
        return "postgres"
    if scheme == "spark":
        return "pyspark"
    raise ConfigError(
        f"TACTFUL_WAREHOUSE_URL uses the unknown scheme {scheme or '(none)'!r}; use "
        "duckdb:///path, postgres://user:password@host/db or spark://local[2]",
        field="TACTFUL_WAREHOUSE_URL",
    )


def _duckdb_path(url: str) -> str:
    # duckdb:///abs/path, duckdb://rel/path or duckdb:// (in memory)
    rest = url[len("duckdb://") :]
    return rest or ":memory:"


def first_per_key(batch: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The batch without later rows that repeat an earlier row's key (order kept)."""
    position = "__tactful_position"
    numbered = batch.append_column(position, pa.array(range(batch.num_rows), pa.int64()))
    first = numbered.group_by(list(keys), use_threads=False).aggregate([(position, "min")])
    keep = pc.sort_indices(first[f"{position}_min"])
    return batch.take(pc.take(first[f"{position}_min"], keep))


class Warehouse:
    """A lazily opened Ibis backend plus the few write helpers features need."""

    def __init__(self, url: str, *, data_dir: Path, settings: WarehouseSettings | None = None):
        self.url = url
        self.kind = warehouse_kind(url)
        self.data_dir = data_dir
        self.settings = settings or WarehouseSettings()
        self._lock = threading.RLock()
        self._root: BaseBackend | None = None
        self._raw: Any = None
        self._local = threading.local()
        # tables known to exist: ensure_table runs before every query that reads them, and
        # asking the catalog each time cost more than compiling a segment
        self._ensured: set[str] = set()
        self._generation = 0  # bumped when a table is created or replaced: drops table()'s cache

    # -- connections ---------------------------------------------------------------------

    def _open(self) -> BaseBackend:
        if self.kind == "duckdb":
            return self._open_duckdb()
        if self.kind == "postgres":
            try:
                return ibis.connect(self.url.replace("postgresql://", "postgres://", 1))
            except Exception as exc:
                raise ConfigError(
                    f"TACTFUL_WAREHOUSE_URL: cannot connect to the PostgreSQL warehouse: "
                    f"{str(exc).strip().splitlines()[0]}",
                    field="TACTFUL_WAREHOUSE_URL",
                ) from exc
        return self._open_spark()

    def _open_duckdb(self) -> BaseBackend:
        path = _duckdb_path(self.url)
        config: dict[str, Any] = {}
        if self.settings.duckdb_memory_limit:
            config["memory_limit"] = self.settings.duckdb_memory_limit
        if self.settings.duckdb_threads:
            config["threads"] = self.settings.duckdb_threads
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._raw = duckdb.connect(path, config=config)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" in message.lower():
                pid = re.search(r"PID (\d+)", message)
                owner = f" (PID {pid.group(1)})" if pid else ""
                raise Unavailable(
                    f"The warehouse {path} is in use by another Tactful process{owner}. "
                    "In embedded mode one process owns it: stop that process, or reach the "
                    "data through its HTTP API."
                ) from exc
            raise ConfigError(
                f"TACTFUL_WAREHOUSE_URL: cannot open the DuckDB file {path}: {message}",
                field="TACTFUL_WAREHOUSE_URL",
            ) from exc
        return ibis.duckdb.from_connection(self._raw)

    def _open_spark(self) -> BaseBackend:
        try:
            from pyspark.sql import SparkSession  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ConfigError(
                "TACTFUL_WAREHOUSE_URL selects Spark, but pyspark is not installed "
                "(pip install 'tactful[spark]')",
                field="TACTFUL_WAREHOUSE_URL",
            ) from exc
        master = self.url[len("spark://") :]
        if not master.startswith("local"):
            master = f"spark://{master}"
        spark_dir = (self.data_dir / "spark").resolve()
        session = (
            SparkSession.builder.appName("tactful")
            .master(master)
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", str(self.settings.spark_shuffle_partitions))
            .config("spark.sql.warehouse.dir", str(spark_dir / "warehouse"))
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={spark_dir}")
            .getOrCreate()
        )
        return ibis.pyspark.connect(session)

    @property
    def con(self) -> BaseBackend:
        """The Ibis backend for this thread (DuckDB gives each thread its own cursor)."""
        with self._lock:
            if self._root is None:
                self._root = self._open()
            if self.kind != "duckdb":
                return self._root
        backend: BaseBackend | None = getattr(self._local, "backend", None)
        if backend is None:
            if threading.current_thread() is threading.main_thread():
                backend = self._root
            else:
                backend = ibis.duckdb.from_connection(self._raw.cursor())
            self._local.backend = backend
        return backend

    @property
    def generation(self) -> int:
        """Bumped whenever a table is created or replaced through this object: what was
        derived from the tables' schemas (compiled queries) is stale after it changes."""
        return self._generation

    @property
    def is_open(self) -> bool:
        return self._root is not None

    def close(self) -> None:
        with self._lock:
            if self._root is not None:
                if self.kind == "pyspark":
                    self._root.disconnect()
                elif self._raw is not None:
                    self._raw.close()
                self._root = None
                self._raw = None
                self._local = threading.local()
                self._ensured.clear()

    def ping(self) -> None:
        self.con.execute(ibis.literal(1))

    # -- tables --------------------------------------------------------------------------

    def has_table(self, name: str) -> bool:
        return name in self.con.list_tables()

    def table(self, name: str) -> ibis.Table:
        """The table as an Ibis expression. Looked up once per thread (asking the engine for
        the schema costs milliseconds, a segment reads several tables) until a table is
        created or replaced through this object."""
        cached: dict[str, tuple[int, ibis.Table]] = self._local.__dict__.setdefault("tables", {})
        found = cached.get(name)
        if found is not None and found[0] == self._generation:
            return found[1]
        table = self.con.table(name)
        cached[name] = (self._generation, table)
        return table

    def ensure_table(self, name: str, schema: ibis.Schema) -> None:
        """Create ``name`` with ``schema`` if it does not exist."""
        if name in self._ensured:
            return
        with self._lock:
            if not self.has_table(name):
                self.con.create_table(name, schema=schema)
                self._generation += 1
            self._ensured.add(name)

    def replace_table(self, name: str, data: pa.Table | ibis.Table) -> None:
        """Create or overwrite ``name`` with ``data``."""
        with self._lock:
            self.con.create_table(name, data, overwrite=True)
            self._generation += 1

    def _conform(self, name: str, batch: pa.Table) -> pa.Table:
        """The batch with exactly the target table's columns and types (missing ones null)."""
        target = self.table(name).schema().to_pyarrow()
        missing = [column for column in batch.column_names if column not in target.names]
        if missing:
            raise ValueError(f"columns {missing} do not exist in warehouse table {name!r}")
        columns = [
            batch[f.name].cast(f.type)
            if f.name in batch.column_names
            else pa.nulls(batch.num_rows, f.type)
            for f in target
        ]
        return pa.Table.from_arrays(columns, schema=target)

    def append_new(
        self,
        name: str,
        batch: pa.Table,
        *,
        key: Sequence[str],
        since_column: str | None = None,
    ) -> int:
        """Append the rows of ``batch`` whose ``key`` is not in ``name`` yet; returns how many.

        Duplicates inside the batch are dropped too (the first one wins). ``since_column``
        names a column that only grows (an inbox sequence, an event time): only stored rows at
        or above the batch's minimum are compared, which lets the engine skip old data.
        """
        if batch.num_rows == 0:
            return 0
        keys = list(key)
        with self._lock:
            if self.kind == "duckdb":
                return self._append_new_duckdb(name, batch, keys, since_column)
            incoming = self._conform(name, first_per_key(batch, keys))
            existing = self.table(name)
            # Only stored rows whose first key column matches the batch can collide.
            candidates = existing.filter(
                existing[keys[0]].isin(pc.unique(incoming[keys[0]]).to_pylist())
            )
            if since_column is not None:
                lowest = pc.min(batch[since_column]).as_py()
                candidates = candidates.filter(candidates[since_column] >= lowest)
            stored = self.con.to_pyarrow(candidates.select(*keys)).cast(
                incoming.select(keys).schema
            )
            new_rows = incoming.join(stored, keys=keys, join_type="left anti")
            if new_rows.num_rows:
                self.insert_arrow(name, new_rows.select(incoming.column_names))
            return int(new_rows.num_rows)

    def insert_arrow(self, name: str, rows: pa.Table) -> None:
        """Append Arrow rows whose columns match the table (in the table's order)."""
        if self.kind == "pyspark":
            # Straight from Arrow: the pandas detour would turn missing strings into "NaN".
            session = self.con._session
            session.createDataFrame(rows).write.insertInto(name)
        else:
            self.con.insert(name, rows)

    def _append_new_duckdb(
        self, name: str, batch: pa.Table, keys: list[str], since_column: str | None
    ) -> int:
        cursor = self._raw.cursor()
        try:
            cursor.register("tactful_incoming", batch)
            columns = [
                row[0]
                for row in cursor.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = ? ORDER BY ordinal_position",
                    [name],
                ).fetchall()
            ]
            present = set(batch.column_names)
            unknown = present - set(columns)
            if unknown:
                raise ValueError(f"columns {sorted(unknown)} do not exist in table {name!r}")
            select_list = ", ".join(
                f'i."{c}"' if c in present else f'NULL AS "{c}"' for c in columns
            )
            match = " AND ".join(f't."{k}" = i."{k}"' for k in keys)
            since = ""
            params: list[Any] = []
            if since_column is not None:
                since = f' AND t."{since_column}" >= ?'
                params.append(pc.min(batch[since_column]).as_py())
            partition = ", ".join(f'i."{k}"' for k in keys)
            result = cursor.execute(
                f'INSERT INTO "{name}" ({", ".join(chr(34) + c + chr(34) for c in columns)}) '  # noqa: S608
                f"SELECT {select_list} FROM tactful_incoming i "
                f'WHERE NOT EXISTS (SELECT 1 FROM "{name}" t WHERE {match}{since}) '
                f"QUALIFY row_number() OVER (PARTITION BY {partition}) = 1",
                params,
            ).fetchone()
            return int(result[0]) if result else 0
        finally:
            cursor.unregister("tactful_incoming")
            cursor.close()
