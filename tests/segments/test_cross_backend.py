"""The same history in DuckDB, PostgreSQL and Spark: identical metrics and identical
memberships for every condition type and the boolean combinators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tactful.core import clock
from tactful.core.warehouse import Warehouse
from tactful.metrics import service as metrics_service
from tactful.segments.compiler import Compiler
from tactful.segments.definition import parse
from tests.segments.data import BRAND, NOW, load_with_metrics
from tests.warehouses import open_warehouse

WORKSPACE = 9101  # Spark's warehouse is shared by the whole run: keep to our own workspace


def attr(name: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"type": "attribute", "attribute": name, "operator": operator, "value": value}


def metric(name: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"type": "metric", "metric": name, "operator": operator, "value": value}


TYPES = {"score": "number", "vip": "boolean", "tags": "list"}
REFERENCED = {501: {"all": [attr("gender", "eq", "f")]}}
DEFINITIONS: dict[str, dict[str, Any]] = {
    "gender_f": attr("gender", "eq", "f"),
    "gender_not_m": attr("gender", "ne", "m"),
    "age_30_40": attr("age", "between", [30, 40]),
    "city_in": attr("city", "in", ["Kazan", "Saint Petersburg"]),
    "city_starts": attr("city", "starts_with", "Mos"),
    "born_before": attr("birthday", "before", "1980-01-01"),
    "signed_up_recently": attr("created_at", "within_last_days", 900),
    "has_email": attr("has_email", "is_true"),
    "score_gt_5": attr("score", "gt", 5),
    "score_not_set": attr("score", "is_not_set"),
    "vip": attr("vip", "is_true"),
    "tags_garden": attr("tags", "contains", "garden"),
    "tags_not_garden": attr("tags", "not_contains", "garden"),
    "no_sales": {"all": [metric("receipts_count", "eq", 0), metric("returns_count", "gt", 0)]},
    "revenue_5000": metric("revenue", "gte", 5000),
    "trend_down": metric("avg_check_trend", "lt", 0),
    "recent": metric("days_since_last_purchase", "lte", 15),
    "overdue": metric("overdue_ratio", "gt", 1.5),
    "interval": metric("typical_interval_days", "between", [20, 120]),
    "prospect": metric("lifecycle_stage", "eq", "prospect"),
    "active": metric("lifecycle_stage", "in", ["active", "new", "reactivated"]),
    "lapsed": metric("lifecycle_stage", "eq", "lapsed"),
    "rfm_top": metric("rfm_recency", "gte", 4),
    "rfm_cell": metric("rfm_cell", "starts_with", "5"),
    "fav_s2": metric("favourite_store", "eq", "S2"),
    "migrated": metric("store_migrated", "is_true"),
    "top_lighting": metric("top_categories", "contains", "lighting"),
    "top_garden": metric("top_category", "eq", "garden"),
    "bonus_users": metric("bonus_usage_share", "gt", 0),
    "best_email": metric("best_channel", "eq", "email"),
    "best_push": metric("best_channel", "eq", "push"),
    "evening": metric("best_send_hour", "eq", 23),
    "email_opened": metric("email_opened", "gte", 1),
    "first_purchase_old": metric("first_purchase_at", "more_than_days_ago", 365),
    "viewed_twice": {
        "type": "event",
        "event": "Product Viewed",
        "window": {"days": 30},
        "operator": "gte",
        "value": 2,
    },
    "fiskars_sum": {
        "type": "event",
        "event": "Product Viewed",
        "aggregate": "sum",
        "property": "price",
        "where": [{"property": "brand", "operator": "eq", "value": "Fiskars"}],
        "operator": "gte",
        "value": 500,
    },
    "avg_price": {
        "type": "event",
        "event": "Product Viewed",
        "aggregate": "avg",
        "property": "price",
        "operator": "between",
        "value": [150, 250],
    },
    "cheap_view": {
        "type": "event",
        "event": "Product Viewed",
        "aggregate": "min",
        "property": "price",
        "where": [{"property": "price", "operator": "gt", "value": 50}],
        "operator": "lte",
        "value": 100,
    },
    "no_views": {"type": "event", "event": "Product Viewed", "operator": "eq", "value": 0},
    "bought_90d": {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 1},
    # zero fails "gte 1" (customers without rows need not be joined) but passes "lt 1"
    "not_bought_90d": {
        "not": {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 1}
    },
    "no_purchase_90d": {"type": "purchase", "window": {"days": 90}, "operator": "lt", "value": 1},
    "bought_absolute": {
        "type": "purchase",
        "window": {"start": "2025-04-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
        "operator": "gte",
        "value": 1,
    },
    "garden_amount": {
        "type": "purchase",
        "category_ids": ["garden"],
        "measure": "amount",
        "operator": "gte",
        "value": 3000,
    },
    "s2_twice": {"type": "purchase", "store_ids": ["S2"], "operator": "gte", "value": 2},
    "online_units": {
        "type": "purchase",
        "channel": "online",
        "measure": "quantity",
        "operator": "gte",
        "value": 3,
    },
    "product_p1": {"type": "purchase", "product_ids": ["P1"], "operator": "gte", "value": 1},
    "opened_campaign_7": {
        "type": "message",
        "action": "opened",
        "campaign_id": 7,
        "window": {"days": 30},
    },
    "unsubscribed_promotions": {"type": "message", "action": "unsubscribed", "topic": "promotions"},
    "push_delivered_twice": {
        "type": "message",
        "action": "received",
        "channel": "push",
        "operator": "gte",
        "value": 2,
    },
    "consent_email": {"type": "consent", "channel": "email", "brand_id": BRAND},
    "reachable_email": {"type": "reachable", "channel": "email", "brand_id": BRAND},
    "contact_sms": {"type": "reachable", "channel": "sms", "brand_id": BRAND, "via": "contact"},
    "not_reachable_sms": {"not": {"type": "reachable", "channel": "sms", "brand_id": BRAND}},
    "in_segment": {"type": "segment", "segment_id": 501},
    "not_in_segment": {"type": "segment", "segment_id": 501, "member": False},
    "combined": {
        "all": [
            attr("gender", "eq", "f"),
            {"any": [attr("city", "eq", "Kazan"), {"type": "purchase", "window": {"days": 90}}]},
        ]
    },
    "negated_any": {"not": {"any": [attr("city", "eq", "Moscow"), metric("revenue", "gt", 0)]}},
    # the member query reads history for the women alone (test_candidates)
    "women_not_bought_90d": {
        "all": [
            {"not": {"type": "purchase", "window": {"days": 90}, "operator": "gte", "value": 1}},
            attr("gender", "eq", "f"),
        ]
    },
}

# Definitions also evaluated alone, through the member query.
DIRECT = (
    "combined",
    "trend_down",
    "no_sales",
    "score_not_set",
    "tags_not_garden",
    "prospect",
    "bought_90d",
    "not_bought_90d",
    "no_purchase_90d",
    "women_not_bought_90d",
)

# Hand-checked answers for the hand-made customers (ids below 100).
EXPECTED = {
    "gender_f": [1, 3, 5, 7],
    "age_30_40": [1, 4],
    "score_gt_5": [1],
    "score_not_set": [3, 4, 5, 6, 7, 8, 9],
    "vip": [1],
    "tags_garden": [1],
    "no_sales": [3],
    "trend_down": [1, 4],
    "recent": [1, 9],
    "prospect": [2, 3, 7],
    "migrated": [6],
    "top_lighting": [5, 8],
    "best_email": [1],
    "best_push": [7],
    "evening": [7],
    "viewed_twice": [1],
    "fiskars_sum": [1],
    "avg_price": [1],
    "bought_90d": [1, 4, 5, 6, 9],
    "not_bought_90d": [2, 3, 7, 8],
    "no_purchase_90d": [2, 3, 7, 8],
    "s2_twice": [6],
    "online_units": [5],
    "opened_campaign_7": [1],
    "unsubscribed_promotions": [7],
    "push_delivered_twice": [7],
    "consent_email": [1, 6],
    "reachable_email": [1],
    "contact_sms": [1, 2],
    "not_reachable_sms": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "in_segment": [1, 3, 5, 7],
    "not_in_segment": [2, 4, 6, 8, 9],
    "combined": [1, 5],
    "negated_any": [2],
    "women_not_bought_90d": [3, 7],
}


def _evaluate(warehouse: Warehouse) -> dict[str, Any]:
    load_with_metrics(warehouse, WORKSPACE)

    def compiler() -> Compiler:
        return compiler_for(warehouse, WORKSPACE, NOW)

    compiled = compiler().compile({name: parse(raw) for name, raw in DEFINITIONS.items()})
    flags = warehouse.con.to_pyarrow(compiled.table).to_pylist()
    members = {
        name: sorted(row["customer_id"] for row in flags if row[name]) for name in DEFINITIONS
    }
    # the member query of one definition (top-level conjuncts as filters) agrees
    direct = {
        name: sorted(
            warehouse.con.to_pyarrow(compiler().members(parse(DEFINITIONS[name])))[
                "customer_id"
            ].to_pylist()
        )
        for name in DIRECT
    }
    stored = warehouse.con.to_pyarrow(
        metrics_service.metrics_table(
            warehouse,
            workspace_id=WORKSPACE,
            now=NOW,
            names=["days_since_last_purchase", "lifecycle_stage", "rfm_cell", "overdue_ratio"],
        )
    ).to_pylist()
    return {
        "members": members,
        "direct": direct,
        "metrics": {r["customer_id"]: _normal(r) for r in stored},
    }


def compiler_for(warehouse: Warehouse, workspace_id: int, now: datetime) -> Compiler:
    """A compiler for the test history: its custom attribute types, REFERENCED's segments."""
    referenced = {k: parse(v) for k, v in REFERENCED.items()}
    return Compiler(
        warehouse=warehouse,
        source=metrics_service,
        workspace_id=workspace_id,
        now=now,
        attribute_types=TYPES,
        definition_of=referenced.get,
    )


def _normal(row: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 9)  # engines may differ in the last bits of a float
        if isinstance(value, datetime):
            return clock.ensure_utc(value).isoformat()
        return value

    return {key: plain(value) for key, value in row.items()}


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for kind in ("duckdb", "postgres", "spark"):
        warehouse = open_warehouse(kind, request, tmp_path_factory.mktemp(kind))
        try:
            found[kind] = _evaluate(warehouse)
        finally:
            if kind != "spark":
                warehouse.close()
    return found


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.slow
def test_memberships_are_identical_on_duckdb_postgres_and_spark(
    results: dict[str, dict[str, Any]],
) -> None:
    duck = results["duckdb"]["members"]
    for name in DEFINITIONS:
        assert results["postgres"]["members"][name] == duck[name], name
        assert results["spark"]["members"][name] == duck[name], name
    for kind in ("duckdb", "postgres", "spark"):
        assert results[kind]["direct"] == {name: duck[name] for name in DIRECT}, kind
    # every definition selects someone and leaves someone out: no trivially equal answers
    everyone = set(duck["gender_f"]) | set(duck["gender_not_m"]) | {2, 4, 6, 8}
    for name, ids in duck.items():
        assert ids, name
        assert set(ids) != everyone, name


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.slow
def test_metrics_are_identical_on_duckdb_postgres_and_spark(
    results: dict[str, dict[str, Any]],
) -> None:
    duck = results["duckdb"]["metrics"]
    assert len(duck) > 30
    for kind in ("postgres", "spark"):
        other = results[kind]["metrics"]
        assert sorted(other) == sorted(duck)
        for customer_id, row in duck.items():
            assert other[customer_id] == row, (kind, customer_id)


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_checked_memberships(results: dict[str, dict[str, Any]], name: str) -> None:
    handmade = [i for i in results["duckdb"]["members"][name] if i < 100]
    assert handmade == EXPECTED[name]


@pytest.mark.postgres
@pytest.mark.spark
@pytest.mark.slow
def test_hand_checked_metrics(results: dict[str, dict[str, Any]]) -> None:
    one = results["duckdb"]["metrics"][1]
    assert {
        k: one[k]
        for k in (
            "receipts_count",
            "returns_count",
            "visits_count",
            "revenue",
            "revenue_365d",
            "avg_check",
            "avg_check_90d",
            "avg_check_prev_90d",
            "avg_check_trend",
            "purchase_frequency",
            "typical_interval_days",
            "last_gap_days",
            "favourite_store",
            "top_category",
            "top_category_2",
            "bonus_usage_share",
            "email_delivered",
            "email_opened",
            "best_channel",
            "best_send_hour",
            "days_since_last_purchase",
            "lifecycle_stage",
        )
    } == {
        "receipts_count": 4,
        "returns_count": 0,
        "visits_count": 4,
        "revenue": 11000,
        "revenue_365d": 11000,
        "avg_check": 2750,
        "avg_check_90d": 1500,
        "avg_check_prev_90d": 4000,
        "avg_check_trend": -0.625,
        "purchase_frequency": 4,
        "typical_interval_days": 50.0,
        "last_gap_days": 30.0,
        "favourite_store": "S1",
        "top_category": "garden",
        "top_category_2": None,
        "bonus_usage_share": 0.25,
        "email_delivered": 1,
        "email_opened": 1,
        "best_channel": "email",
        "best_send_hour": 12,
        "days_since_last_purchase": 10,
        "lifecycle_stage": "active",
    }
    returns_only = results["duckdb"]["metrics"][3]
    assert (
        returns_only["receipts_count"],
        returns_only["returns_count"],
        returns_only["revenue"],
        returns_only["avg_check"],
        returns_only["lifecycle_stage"],
    ) == (0, 1, -500, None, "prospect")
    migrated = results["duckdb"]["metrics"][6]
    assert (migrated["favourite_store"], migrated["previous_favourite_store"]) == ("S2", "S1")
    assert migrated["store_migrated"] is True
    merged = results["duckdb"]["metrics"]
    assert 55 not in merged
    assert merged[5]["receipts_count"] == 1
