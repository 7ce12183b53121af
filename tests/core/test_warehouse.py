"""The warehouse factory and idempotent Arrow appends on DuckDB, PostgreSQL and Spark."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import ibis
import pyarrow as pa
import pytest

from tactful.core.warehouse import Warehouse
from tactful.testing.postgres import TempPostgres

_names = itertools.count()
SCHEMA = ibis.schema({"event_id": "string", "seq": "int64", "amount": "int64", "note": "string"})


@pytest.fixture(
    params=[
        "duckdb",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("spark", marks=pytest.mark.spark),
    ]
)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        warehouse = Warehouse(f"duckdb://{tmp_path / 'w.duckdb'}", data_dir=tmp_path)
        yield warehouse
        warehouse.close()
    elif request.param == "postgres":
        server: TempPostgres = request.getfixturevalue("pg_server")
        url = server.create_database(f"wh{next(_names)}")
        warehouse = Warehouse(url.replace("postgresql://", "postgres://"), data_dir=tmp_path)
        yield warehouse
        warehouse.close()
    else:
        yield request.getfixturevalue("spark_warehouse")


def _batch(ids: list[str], seqs: list[int]) -> pa.Table:
    return pa.table({"event_id": ids, "seq": seqs, "amount": [s * 100 for s in seqs]})


def test_append_new_is_idempotent(warehouse: Warehouse) -> None:
    name = f"events_{next(_names)}"
    warehouse.ensure_table(name, SCHEMA)
    warehouse.ensure_table(name, SCHEMA)  # a second call changes nothing

    assert warehouse.append_new(name, _batch(["a", "b", "a"], [1, 2, 3]), key=["event_id"]) == 2
    assert warehouse.append_new(name, _batch(["a", "b"], [1, 2]), key=["event_id"]) == 0
    assert (
        warehouse.append_new(name, _batch(["b", "c"], [2, 4]), key=["event_id"], since_column="seq")
        == 1
    )
    rows = warehouse.con.to_pyarrow(warehouse.table(name).order_by("event_id")).to_pylist()
    assert rows == [
        {"event_id": "a", "seq": 1, "amount": 100, "note": None},
        {"event_id": "b", "seq": 2, "amount": 200, "note": None},
        {"event_id": "c", "seq": 4, "amount": 400, "note": None},
    ]


def test_unknown_columns_are_refused_and_nothing_is_written(warehouse: Warehouse) -> None:
    name = f"events_{next(_names)}"
    warehouse.ensure_table(name, SCHEMA)
    bad = pa.table({"event_id": ["x"], "seq": [1], "colour": ["red"]})
    with pytest.raises(ValueError, match="colour"):
        warehouse.append_new(name, bad, key=["event_id"])
    assert warehouse.con.execute(warehouse.table(name).count()) == 0


def test_replace_table(warehouse: Warehouse) -> None:
    name = f"metrics_{next(_names)}"
    warehouse.replace_table(name, pa.table({"customer_id": [1, 2], "score": [0.5, 0.25]}))
    warehouse.replace_table(name, pa.table({"customer_id": [3], "score": [1.0]}))
    assert warehouse.con.to_pyarrow(warehouse.table(name)).to_pylist() == [
        {"customer_id": 3, "score": 1.0}
    ]
