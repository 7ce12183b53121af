"""Reading an import file with DuckDB: its format, the column mapping, row numbers, the types
of extra columns, rejected rows and the error file.

Row numbers count data rows from 1 (the header is not counted; a quoted value that spans
several lines still makes one row). CSV is read as text and every value is checked by the
importers themselves, so one bad value rejects one row instead of failing the whole file;
rows the CSV parser cannot split into the header's columns are rejected with its reason.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tactful.core import storable
from tactful.core.errors import ValidationFailed
from tactful.customers.profile import ATTRIBUTE_NAME

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSIONS = (".gz", ".zst")
# a column is numeric when every value is; at most 18 digits before the point (more do not
# fit a 64-bit integer, and a double would round them): longer ones stay text, as ids do
NUMBER = r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]+)?$"
INTEGER = r"^-?(0|[1-9][0-9]{0,17})$"
DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATETIME_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
# how the CSV parser's complaints read in an error file
PARSE_ERRORS = {
    "MISSING COLUMNS": "fewer values than columns",
    "TOO MANY COLUMNS": "more values than columns",
    "UNQUOTED VALUE": "a quote is not closed, or text follows a quoted value",
    "LINE SIZE OVER MAXIMUM": "the row is too long",
    "INVALID ENCODING": "not UTF-8 text",
    "INVALID UNICODE": "not UTF-8 text",
}


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def file_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in CSV_SUFFIXES:
        return "csv"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    raise ValidationFailed(
        f"{path.name}: an import file is CSV (.csv, .tsv or .txt, optionally .gz) or Parquet "
        "(.parquet)",
        field="file",
    )


@dataclass(frozen=True)
class KindSpec:
    """The columns one kind of import reads."""

    kind: str
    fields: tuple[str, ...]
    # lower-case alternative column names -> field
    aliases: Mapping[str, str]
    # each group names fields of which at least one must be present
    required: tuple[tuple[str, ...], ...]
    # what any other column becomes ("attributes", "properties"), or None: refused
    extras: str | None = None


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """``column=field`` flags as a mapping; an empty field skips the column."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column.strip():
            raise ValidationFailed(
                f"--map {item!r} is not column=field (use column= to skip a column)",
                field="map",
            )
        mapping[column.strip()] = target.strip()
    return mapping


def load_mapping_file(path: Path) -> dict[str, str]:
    """A mapping file: a JSON, TOML or YAML object of column -> field, at its top level or
    under ``columns``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationFailed(
            f"cannot read the mapping file {path}: {exc.strerror}", field="mapping"
        ) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data: Any = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - YAML files only

            data = yaml.safe_load(text)
        else:
            raise ValidationFailed(
                f"the mapping file {path.name} must end in .json, .toml, .yaml or .yml",
                field="mapping",
            )
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValidationFailed(
            f"the mapping file {path.name} cannot be parsed: {exc}", field="mapping"
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str | None) for k, v in data.items()
    ):
        raise ValidationFailed(
            f"the mapping file {path.name} must hold an object of column: field pairs",
            field="mapping",
        )
    return {k.strip(): (v or "").strip() for k, v in data.items()}


def connect(temp_dir: Path, *, memory_limit: str | None, threads: int | None) -> Any:
    """A private in-memory DuckDB for one import (spilling to ``temp_dir`` when large)."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"temp_directory": str(temp_dir), "preserve_insertion_order": True}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")  # times without an offset are UTC
    return con


INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT")
WHOLE_TEXT = "[+-]?[0-9]{1,18}"
NUMBER_TEXT = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"


@dataclass(frozen=True)
class Source:
    """An import file staged as the view ``src``: ``line`` (the row number) and one column
    per mapped field or extra column, extra columns already of their inferred type.

    The expressions below read a field whatever its type in the file (CSV text, Parquet
    numbers and timestamps): NULL when the file has no such column or the cell is empty,
    NULL too when the value cannot be read (compare with :meth:`text` to tell the two
    apart).
    """

    con: Any
    fields: frozenset[str]
    extras: tuple[str, ...]
    total: int
    types: dict[str, str]

    def has(self, name: str) -> bool:
        return name in self.fields

    def _type(self, name: str) -> str:
        return self.types.get(name, "VARCHAR").upper()

    def text(self, name: str) -> str:
        """A field as trimmed text."""
        if name not in self.fields:
            return "NULL::VARCHAR"
        if self._type(name) == "VARCHAR":
            return f"nullif(trim({quote(name)}), '')"
        return f"CAST({quote(name)} AS VARCHAR)"

    def whole(self, name: str) -> str:
        """A field as a whole number (text such as 12.5 or 1e3 is not one)."""
        kind = self._type(name)
        if name not in self.fields:
            return "NULL::BIGINT"
        if kind in INTEGER_TYPES:
            return f"CAST({quote(name)} AS BIGINT)"
        if kind == "VARCHAR":
            text = self.text(name)
            return (
                f"CASE WHEN regexp_full_match({text}, '{WHOLE_TEXT}') "
                f"THEN CAST({text} AS BIGINT) END"
            )
        column = quote(name)
        return f"CASE WHEN {column} = round({column}) THEN TRY_CAST({column} AS BIGINT) END"

    def number(self, name: str) -> str:
        """A field as a (finite) number."""
        kind = self._type(name)
        if name not in self.fields:
            return "NULL::DOUBLE"
        if kind == "VARCHAR":
            text = self.text(name)
            return (
                f"CASE WHEN regexp_full_match({text}, '{NUMBER_TEXT}') "
                f"THEN CAST({text} AS DOUBLE) END"
            )
        return f"TRY_CAST({quote(name)} AS DOUBLE)"

    def moment(self, name: str) -> str:
        """A field as a UTC timestamp (text without an offset is read as UTC)."""
        if name not in self.fields:
            return "NULL::TIMESTAMPTZ"
        if self._type(name) == "VARCHAR":
            return f"TRY_CAST({self.text(name)} AS TIMESTAMPTZ)"
        return f"TRY_CAST({quote(name)} AS TIMESTAMPTZ)"


def _normal(name: str) -> str:
    return name.strip().lower()


def _resolve_columns(
    columns: Sequence[str], spec: KindSpec, mapping: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """File column -> field for mapped and known columns, and the extra columns."""
    unknown_sources = [c for c in mapping if c not in columns]
    if unknown_sources:
        raise ValidationFailed(
            f"the mapping names column(s) {unknown_sources} that the file does not have "
            f"(its columns: {list(columns)})",
            field="map",
        )
    known = set(spec.fields)
    targets: dict[str, str] = {}
    extras: list[str] = []
    for column in columns:
        if column in mapping:
            target = mapping[column]
            if not target:
                continue  # skipped on purpose
            if target not in known and (spec.extras is None or not ATTRIBUTE_NAME.match(target)):
                raise ValidationFailed(
                    f"--map {column}={target}: {target!r} is not a field of {spec.kind} "
                    f"imports (fields: {', '.join(spec.fields)})",
                    field="map",
                )
        else:
            lowered = _normal(column)
            target = lowered if lowered in known else spec.aliases.get(lowered, column)
        if target in known:
            targets[column] = target
        elif spec.extras is None:
            raise ValidationFailed(
                f"column {column!r} is not a field of {spec.kind} imports (fields: "
                f"{', '.join(spec.fields)}); map it with --map '{column}=field' or skip it "
                f"with --map '{column}='",
                field="map",
            )
        elif not ATTRIBUTE_NAME.match(target):
            raise ValidationFailed(
                f"column {column!r} would become the {spec.extras[:-1]} {target!r}, which is "
                f"not a valid name (letters, digits, _ . -); map it with --map "
                f"'{column}=name' or skip it with --map '{column}='",
                field="map",
            )
        else:
            targets[column] = target
            extras.append(target)
    seen: dict[str, str] = {}
    for column, target in targets.items():
        if target in seen:
            raise ValidationFailed(
                f"columns {seen[target]!r} and {column!r} both map to {target!r}", field="map"
            )
        seen[target] = column
    for group in spec.required:
        if not any(name in seen for name in group):
            wanted = " or ".join(group)
            raise ValidationFailed(
                f"a {spec.kind} file needs a column for {wanted} (its columns: "
                f"{list(columns)}); map one with --map 'column={group[0]}'",
                field="file",
            )
    return targets, extras


def _read_error(path: Path, exc: Exception) -> ValidationFailed:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ValidationFailed(f"cannot read {path.name}: {first}", field="file")


def _exists(path: Path) -> None:
    if not path.is_file():
        raise ValidationFailed(f"{path} does not exist", field="file")


def _csv(path: Path) -> str:
    # Values are read as text and checked by the importers; rows the parser cannot split
    # into the header's columns are kept aside with the reason.
    options = (
        "all_varchar = true, header = true, quote = '\"', escape = '\"', store_rejects = true, "
        "rejects_table = 'raw_rejects', rejects_scan = 'raw_scans'"
    )
    return f"read_csv({literal(str(path))}, {options})"


def check_columns(con: Any, path: Path, spec: KindSpec, mapping: Mapping[str, str]) -> None:
    """Check a file's columns against the kind and the mapping without reading its rows."""
    fmt = file_format(path)
    _exists(path)
    reading = _csv(path) if fmt == "csv" else f"read_parquet({literal(str(path))})"
    try:
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reading}").fetchall()]  # noqa: S608
    except duckdb.Error as exc:
        raise _read_error(path, exc) from exc
    _resolve_columns(columns, spec, mapping)


def open_source(con: Any, path: Path, spec: KindSpec, mapping: Mapping[str, str]) -> Source:
    """Stage ``path`` in ``con``: read it, number its rows, record unreadable rows in
    ``rejects``, map its columns and infer the types of extra columns."""
    con.execute("CREATE TABLE rejects (line BIGINT, field VARCHAR, reason VARCHAR)")
    fmt = file_format(path)
    _exists(path)
    try:
        if fmt == "csv":
            con.execute(f"CREATE TABLE raw AS SELECT * FROM {_csv(path)}")  # noqa: S608
            columns = [r[0] for r in con.execute("DESCRIBE raw").fetchall()]
            line = _csv_line_numbers(con)
        else:
            parquet = f"read_parquet({literal(str(path))}, file_row_number = true)"
            con.execute(f"CREATE VIEW raw AS SELECT * FROM {parquet}")  # noqa: S608
            columns = [r[0] for r in con.execute("DESCRIBE raw").fetchall()]
            columns = [c for c in columns if c != "file_row_number"]
            line = "file_row_number + 1"
    except duckdb.Error as exc:
        raise _read_error(path, exc) from exc
    targets, extras = _resolve_columns(columns, spec, mapping)
    types = _extra_types(con, fmt, {c: t for c, t in targets.items() if t in extras})
    select = [f"{line} AS line"]
    table = "r." if fmt == "csv" else ""
    for column, target in targets.items():
        expression = table + quote(column)
        if target in extras:
            expression = _typed(expression, types[column], fmt)
        select.append(f"{expression} AS {quote(target)}")
    source = "(SELECT rowid AS __tactful_pos, * FROM raw) r" if fmt == "csv" else "raw"
    if fmt == "csv" and line.endswith("coalesce(s.shift, 0)"):
        source += " ASOF LEFT JOIN shifts s ON r.__tactful_pos >= s.from_row"
    con.execute(f"CREATE VIEW read AS SELECT {', '.join(select)} FROM {source}")  # noqa: S608
    good = int(con.execute("SELECT count(*) FROM raw").fetchone()[0])
    bad = int(con.execute("SELECT count(*) FROM rejects").fetchone()[0])
    described = {r[0]: r[1] for r in con.execute("DESCRIBE read").fetchall()}
    _reject_unstorable_text(con, [c for c, kind in described.items() if kind == "VARCHAR"])
    return Source(
        con,
        frozenset(set(targets.values()) - set(extras)),
        tuple(extras),
        good + bad,
        described,
    )


def _reject_unstorable_text(con: Any, text_columns: Sequence[str]) -> None:
    """Rows with a NUL character in a text field (no database of ours can store one) are
    rejected with the field; ``src`` is ``read`` without them."""
    found = " UNION ALL ".join(
        f"SELECT line, {literal(c)} AS field FROM read WHERE contains({quote(c)}, chr(0))"  # noqa: S608
        for c in text_columns
        if c != "line"
    )
    if not found:
        con.execute("CREATE VIEW src AS SELECT * FROM read")
        return
    con.execute(f"CREATE TABLE unstorable AS {found}")
    reason = literal(storable.NUL_REASON)
    con.execute(f"INSERT INTO rejects SELECT line, field, {reason} FROM unstorable")  # noqa: S608
    con.execute(
        "CREATE VIEW src AS SELECT * FROM read WHERE line NOT IN (SELECT line FROM unstorable)"
    )


def _csv_line_numbers(con: Any) -> str:
    """The row-number expression for CSV rows, and the parser's rejects recorded.

    ``raw`` keeps the file's order, so a row's number is its position plus the number of
    rows the parser rejected before it.
    """
    reasons = " ".join(f"WHEN '{kind}' THEN '{text}'" for kind, text in PARSE_ERRORS.items())
    message = f"string_agg(DISTINCT CASE error_type {reasons} ELSE error_message END, '; ')"
    con.execute(
        "INSERT INTO rejects SELECT line - 1, NULL, "  # noqa: S608
        f"'not a CSV row of the header''s columns: ' || {message} FROM raw_rejects GROUP BY line"
    )
    if not con.execute("SELECT count(*) FROM rejects").fetchone()[0]:
        return "r.__tactful_pos + 1"
    # the n-th rejected row (1-based, row number d) moves every later row by n
    con.execute(
        "CREATE TABLE shifts AS SELECT d - n AS from_row, max(n) AS shift FROM ("
        "SELECT line AS d, row_number() OVER (ORDER BY line) AS n FROM rejects) GROUP BY ALL"
    )
    return "r.__tactful_pos + 1 + coalesce(s.shift, 0)"


def _extra_types(con: Any, fmt: str, columns: Mapping[str, str]) -> dict[str, str]:
    """The type each extra column is read as (CSV text is inferred from all its values)."""
    if not columns:
        return {}
    if fmt == "parquet":
        described = {r[0]: r[1] for r in con.execute("DESCRIBE raw").fetchall()}
        return {c: _plain_type(described[c]) for c in columns}
    checks = []
    for column in columns:
        value = f"nullif(trim({quote(column)}), '')"
        checks += [
            f"count({value})",
            f"count(*) FILTER (WHERE regexp_matches({value}, '{INTEGER}'))",
            f"count(*) FILTER (WHERE regexp_matches({value}, '{NUMBER}'))",
            f"count(*) FILTER (WHERE lower({value}) IN ('true', 'false'))",
            f"count(*) FILTER (WHERE regexp_matches({value}, '{DATE_TEXT}') "
            f"AND TRY_CAST({value} AS DATE) IS NOT NULL)",
            f"count(*) FILTER (WHERE regexp_matches({value}, '{DATETIME_TEXT}') "
            f"AND TRY_CAST({value} AS TIMESTAMPTZ) IS NOT NULL)",
        ]
    counts = con.execute(f"SELECT {', '.join(checks)} FROM raw").fetchone()  # noqa: S608
    found: dict[str, str] = {}
    for index, column in enumerate(columns):
        present, *matches = counts[index * 6 : index * 6 + 6]
        kinds = ("BIGINT", "DOUBLE", "BOOLEAN", "DATE", "TIMESTAMP WITH TIME ZONE")
        found[column] = next(
            (kind for kind, n in zip(kinds, matches, strict=True) if present and n == present),
            "VARCHAR",
        )
    return found


def _plain_type(duckdb_type: str) -> str:
    upper = duckdb_type.upper()
    if upper in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"):
        return "BIGINT"
    if upper in ("FLOAT", "DOUBLE") or upper.startswith("DECIMAL"):
        return "DOUBLE"
    if upper.startswith("TIMESTAMP"):
        return "TIMESTAMP WITH TIME ZONE"
    if upper in ("BOOLEAN", "DATE"):
        return upper
    return "VARCHAR"


def _typed(expression: str, kind: str, fmt: str) -> str:
    if kind == "VARCHAR":
        return f"nullif(trim(CAST({expression} AS VARCHAR)), '')"
    if kind == "BOOLEAN" and fmt == "csv":
        return f"lower(trim({expression})) = 'true'"
    if fmt == "csv":
        return f"CAST(nullif(trim({expression}), '') AS {kind})"
    return f"CAST({expression} AS {kind})"


def insert(
    con: Any, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, pa.DataType]
) -> None:
    """Append Python columns to a DuckDB table (in the table's column order)."""
    data = pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})
    if not data.num_rows:
        return
    con.register("python_rows", data)
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM python_rows")  # noqa: S608
    finally:
        con.unregister("python_rows")


def add_rejects(con: Any, rows: Sequence[tuple[int, str | None, str]]) -> None:
    """Record rejected rows found outside SQL: ``(line, field, reason)``."""
    insert(
        con,
        "rejects",
        {
            "line": [r[0] for r in rows],
            "field": [r[1] for r in rows],
            "reason": [r[2] for r in rows],
        },
        {"line": pa.int64(), "field": pa.string(), "reason": pa.string()},
    )


def rejected_count(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM rejects").fetchone()[0])


def write_errors(con: Any, path: Path) -> int:
    """Write the rejected rows (``line,field,reason``, by line) to ``path``; no file when
    nothing was rejected (a stale one from an earlier run is removed)."""
    count = rejected_count(con)
    if count == 0:
        path.unlink(missing_ok=True)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    target = literal(str(path))
    con.execute(
        "COPY (SELECT line, field, reason FROM rejects ORDER BY line, field) "  # noqa: S608
        f"TO {target} (HEADER, DELIMITER ',')"
    )
    return count


def batches(con: Any, sql: str, *, size: int) -> Iterator[pa.Table]:
    """The result of ``sql`` as Arrow tables of about ``size`` rows.

    The result streams from a cursor of its own: the caller may run other statements on
    ``con`` between batches (a statement on the same cursor would end the stream early).
    """
    cursor = con.cursor()
    try:
        reader = cursor.execute(sql).to_arrow_reader(size)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield pa.Table.from_batches([batch])
    finally:
        cursor.close()
