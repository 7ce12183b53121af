"""The compiled query carries only the columns its conditions read: a narrower query is
quicker to compile and to run (the answers themselves are compared across engines in
``test_cross_backend``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import ibis

from tactful.core.warehouse import Warehouse
from tactful.metrics import service as metrics_service
from tactful.segments.compiler import Compiler
from tactful.segments.definition import parse

NOW = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
DEFINITION = {
    "all": [
        {"type": "attribute", "attribute": "gender", "operator": "eq", "value": "f"},
        {"type": "attribute", "attribute": "age", "operator": "gte", "value": 25},
        {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 2},
        {
            "type": "metric",
            "metric": "days_since_last_purchase",
            "operator": "between",
            "value": [7, 60],
        },
    ]
}


def _compiler(tmp_path: Path) -> Compiler:
    warehouse = Warehouse(f"duckdb://{tmp_path / 'warehouse.duckdb'}", data_dir=tmp_path)
    return Compiler(
        warehouse=warehouse,
        source=metrics_service,
        workspace_id=1,
        now=NOW,
        attribute_types={},
        definition_of=lambda _segment_id: None,
    )


def test_members_read_only_the_columns_the_conditions_use(tmp_path: Path) -> None:
    sql = ibis.to_sql(_compiler(tmp_path).members(parse(DEFINITION)), dialect="duckdb")
    for used in ('"gender"', '"birthday"', '"last_purchase_at"', '"kind"'):
        assert used in sql
    # other profile columns, receipt columns no condition reads, and the day count the
    # range on last_purchase_at replaces
    for unused in ('"city"', '"locale"', '"attributes"', '"store_id"', '"signed_amount"'):
        assert unused not in sql
    assert "days_since_last_purchase" not in sql
    assert "EPOCH" not in sql


def test_previews_still_show_the_day_count(tmp_path: Path) -> None:
    compiled = _compiler(tmp_path).compile({"segment": parse(DEFINITION)}, with_values=True)
    sql = ibis.to_sql(compiled.table, dialect="duckdb")
    assert "days_since_last_purchase" in sql
    assert compiled.values == {
        "value_0": "definition.all[0]",
        "value_1": "definition.all[1]",
        "value_2": "definition.all[2]",
        "value_3": "definition.all[3]",
    }
