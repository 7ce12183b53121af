"""A member query reads history only for the customers who pass the definition's top-level
conditions on profiles and metrics; its answer is the same as the full flag query's for any
mix of such conditions and history conditions (negated ones included)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import ibis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tactful.core.warehouse import Warehouse
from tactful.segments.compiler import Compiler
from tactful.segments.definition import parse
from tests.segments.data import NOW, duckdb_with_history
from tests.segments.test_cross_backend import DEFINITIONS, attr, compiler_for, metric

WORKSPACE = 9401
SUBQUERY = re.compile(r"\sIN \(\s*SELECT")
# conditions on the profile and the metrics alone (a referenced segment of such included)
DIRECT = [
    attr("gender", "eq", "f"),
    attr("age", "between", [20, 50]),
    attr("city", "in", ["Kazan", "Moscow"]),
    metric("revenue", "gte", 1000),
    metric("days_since_last_purchase", "lte", 60),
    {"type": "segment", "segment_id": 501},
    {"any": [attr("gender", "eq", "m"), metric("avg_check_trend", "lt", 0)]},
]
# conditions that join an aggregate (history, custom attributes, reachability)
JOINED = [
    DEFINITIONS["bought_90d"],
    DEFINITIONS["no_purchase_90d"],
    DEFINITIONS["viewed_twice"],
    DEFINITIONS["garden_amount"],
    DEFINITIONS["opened_campaign_7"],
    DEFINITIONS["score_gt_5"],
    DEFINITIONS["consent_email"],
    {"not": DEFINITIONS["s2_twice"]},
    {"any": [attr("city", "eq", "Kazan"), DEFINITIONS["bought_90d"]]},
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    opened = duckdb_with_history(tmp_path_factory.mktemp("candidates"), WORKSPACE)
    yield opened
    opened.close()


def _compiler(warehouse: Warehouse) -> Compiler:
    return compiler_for(warehouse, WORKSPACE, NOW)


def _ids(warehouse: Warehouse, expr: ibis.Table) -> list[int]:
    return sorted(warehouse.con.to_pyarrow(expr)["customer_id"].to_pylist())


def _flagged(warehouse: Warehouse, definition: dict[str, Any]) -> list[int]:
    compiled = _compiler(warehouse).compile({"d": parse(definition)})
    rows = warehouse.con.to_pyarrow(compiled.table).to_pylist()
    return sorted(row["customer_id"] for row in rows if row["d"])


@settings(max_examples=40, deadline=None)
@given(
    direct=st.lists(st.sampled_from(DIRECT), min_size=0, max_size=2),
    joined=st.lists(st.sampled_from(JOINED), min_size=1, max_size=2),
    order=st.randoms(use_true_random=False),
)
def test_members_equal_the_flag_query_for_any_mix(
    warehouse: Warehouse,
    direct: list[dict[str, Any]],
    joined: list[dict[str, Any]],
    order: Any,
) -> None:
    parts = [*direct, *joined]
    order.shuffle(parts)
    definition = {"all": parts}
    assert _ids(warehouse, _compiler(warehouse).members(parse(definition))) == _flagged(
        warehouse, definition
    )


def test_history_is_read_for_the_candidates_only(warehouse: Warehouse) -> None:
    definition = {"all": [attr("gender", "eq", "f"), DEFINITIONS["bought_90d"]]}
    members = _compiler(warehouse).members(parse(definition))
    sql = ibis.to_sql(members, dialect="duckdb")
    # the receipts are narrowed to the customers of a subquery that filters on gender
    found = SUBQUERY.search(sql)
    assert found is not None
    assert len(SUBQUERY.findall(sql)) == 1
    assert '"receipts"' in sql[: found.start()]
    assert "\"gender\" = 'f'" in sql[found.end() :]
    # the women who bought in 90 days (hand-made customers: see test_cross_backend)
    assert [i for i in _ids(warehouse, members) if i < 100] == [1, 5]


@pytest.mark.parametrize(
    "definition",
    [
        DEFINITIONS["bought_90d"],  # no direct condition: nobody to narrow to
        {"all": [attr("gender", "eq", "f"), metric("revenue", "gte", 1000)]},  # no history
        {"any": [attr("gender", "eq", "f"), DEFINITIONS["bought_90d"]]},  # not a conjunction
    ],
)
def test_no_candidates_without_both_kinds_of_conjunct(
    warehouse: Warehouse, definition: dict[str, Any]
) -> None:
    sql = ibis.to_sql(_compiler(warehouse).members(parse(definition)), dialect="duckdb")
    assert SUBQUERY.search(sql) is None
    assert _ids(warehouse, _compiler(warehouse).members(parse(definition))) == _flagged(
        warehouse, definition
    )
