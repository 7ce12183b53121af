"""Member queries filled in from templates answer exactly as the query compiled at that
moment, on DuckDB and PostgreSQL; a template is made once and reused; a changed table or a
query that depends on the moment in another way than by fixed offsets is compiled anew."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tactful.core.warehouse import Warehouse
from tactful.metrics import warehouse as mw
from tactful.segments import service, templates
from tactful.segments.compiler import Compiler
from tactful.segments.definition import parse
from tests.segments.data import NOW, duckdb_with_history, load_with_metrics
from tests.segments.test_cross_backend import DEFINITIONS, compiler_for
from tests.warehouses import open_warehouse

WORKSPACE = 9301
# moments the templates are filled in for: the data's, later, earlier, odd fractions
MOMENTS = (
    NOW,
    NOW + timedelta(days=40, hours=5, minutes=17, seconds=3),
    NOW - timedelta(days=200, hours=13),
    NOW + timedelta(days=366, microseconds=999_999),
)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    opened = open_warehouse(request.param, request, tmp_path)
    load_with_metrics(opened, WORKSPACE)
    yield opened
    opened.close()


def _compiler_at(warehouse: Warehouse) -> Callable[[datetime], Compiler]:
    return lambda moment: compiler_for(warehouse, WORKSPACE, moment)


def _compiled_ids(warehouse: Warehouse, expr: ibis.Table) -> list[int]:
    return sorted(warehouse.con.to_pyarrow(expr)["customer_id"].to_pylist())


def test_every_definition_answers_as_compiled_at_each_moment(warehouse: Warehouse) -> None:
    at = _compiler_at(warehouse)
    for name, raw in DEFINITIONS.items():
        node = parse(raw)
        for moment in MOMENTS:
            expected = _compiled_ids(warehouse, at(moment.replace(microsecond=0)).members(node))
            got = service.evaluate_members(warehouse, at, node, moment)
            assert sorted(got) == expected, (name, moment)
        key = at(NOW).identity(node)
        assert isinstance(templates._TEMPLATES[warehouse][1][key], templates.Template), name


def test_template_is_made_once_and_reused(warehouse: Warehouse) -> None:
    at = _compiler_at(warehouse)
    node = parse(DEFINITIONS["bought_90d"])
    later = NOW + timedelta(days=60)
    at_now = _compiled_ids(warehouse, at(NOW).members(node))
    at_later = _compiled_ids(warehouse, at(later).members(node))
    assert [c for c in at_now if c < 100] == [1, 4, 5, 6, 9]
    assert at_later != at_now  # the window moved past some purchases
    builds: list[datetime] = []

    def build_members(moment: datetime) -> ibis.Table:
        builds.append(moment)
        return at(moment).members(node)

    def evaluate(moment: datetime) -> list[int]:
        key = at(NOW).identity(node)
        return sorted(templates.member_ids(warehouse, key=key, build=build_members, now=moment))

    assert evaluate(NOW) == at_now
    # compiled at the moment and at the two sentinels
    assert builds == [NOW, *templates.SENTINELS]
    assert evaluate(later) == at_later
    assert evaluate(NOW) == at_now
    assert len(builds) == 3  # nothing compiled again

    # a table created through the warehouse makes every template stale
    warehouse.replace_table("unrelated", pa.table({"x": [1]}))
    assert evaluate(later) == at_later
    assert builds[3:] == [later, *templates.SENTINELS]


def test_query_not_shifting_with_the_moment_is_compiled_each_time(warehouse: Warehouse) -> None:
    """Customers created since the first of the month: the literal is not a fixed offset
    from the moment, so no template is kept and every evaluation compiles."""
    profiles = warehouse.table(mw.PROFILES)
    builds: list[datetime] = []

    def build_members(moment: datetime) -> ibis.Table:
        builds.append(moment)
        first_day = moment.replace(day=1, hour=0, minute=0, second=0)
        chosen = profiles.filter(
            profiles.workspace_id == WORKSPACE,
            profiles.created_at >= ibis.literal(first_day, type="timestamp('UTC')"),
        )
        return chosen.select("customer_id")

    for count, moment in enumerate(MOMENTS, start=1):
        sql = templates.member_sql(warehouse, key="month", build=build_members, now=moment)
        assert sql == warehouse.con.compile(build_members(moment.replace(microsecond=0)))
        assert len(builds) == 2 * count + 2  # the first evaluation also tried the sentinels
    assert templates._TEMPLATES[warehouse][1]["month"] is None


@pytest.fixture(scope="module")
def loaded_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """One loaded DuckDB warehouse for all of the hypothesis test's examples."""
    opened = duckdb_with_history(tmp_path_factory.mktemp("templates"), WORKSPACE)
    yield opened
    opened.close()


@settings(max_examples=40, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
    ),
    name=st.sampled_from(sorted(DEFINITIONS)),
)
def test_filled_in_sql_is_the_compiled_sql(
    loaded_duckdb: Warehouse, moment: datetime, name: str
) -> None:
    """At any moment, the text filled in from a template is the text Ibis compiles."""
    at = _compiler_at(loaded_duckdb)
    node = parse(DEFINITIONS[name])
    key = at(moment).identity(node)
    templates.member_sql(loaded_duckdb, key=key, build=lambda m: at(m).members(node), now=NOW)
    filled = templates.member_sql(
        loaded_duckdb, key=key, build=lambda m: at(m).members(node), now=moment
    )
    assert filled == loaded_duckdb.con.compile(at(moment.replace(microsecond=0)).members(node))
