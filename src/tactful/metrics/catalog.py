"""Every per-customer metric: its name, type, meaning, window and formula.

*Stored* metrics are columns of the warehouse table ``customer_metrics``, recomputed for a
customer whenever their history changes and for everyone by the daily rebuild. *Derived*
metrics depend on "now" and are computed at query time from stored columns, so they are
never stale. The same table feeds ``docs/segments.md`` and the segment validator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Channels with engagement metrics, cheapest first: ties in "best channel" go to the cheaper.
MESSAGE_CHANNELS = ("push", "email", "telegram", "viber", "sms")

RECENT_DAYS = 90  # the window of the recent average check
YEAR_DAYS = 365
NEW_DAYS = 30  # a first purchase this recent makes a customer "new"
DEFAULT_INTERVAL_DAYS = 60.0  # the assumed interval of a customer with fewer than two visits
LIFECYCLE_STAGES = ("prospect", "new", "active", "at_risk", "lapsed", "reactivated")


@dataclass(frozen=True)
class MetricSpec:
    """One metric as segment builders, the validator and the docs see it."""

    name: str
    type: str  # number, string, boolean, timestamp or list
    meaning: str
    window: str
    formula: str
    derived: bool = False
    values: tuple[str, ...] = ()  # the possible values of an enumerated string metric
    # what a customer without any history has (counters read 0, not unknown)
    default: int | str | None = None


def _engagement() -> list[MetricSpec]:
    specs = []
    for channel in MESSAGE_CHANNELS:
        for action, event in (
            ("delivered", "Message Delivered"),
            ("opened", "Message Opened"),
            ("clicked", "Message Clicked"),
        ):
            specs.append(
                MetricSpec(
                    f"{channel}_{action}",
                    "number",
                    f"{channel} messages {action}",
                    "last 365 days",
                    f'distinct delivery_id of "{event}" events with channel = "{channel}"',
                )
            )
    return specs


_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "receipts_count",
        "number",
        "sale receipts",
        "all history",
        'count of receipts with kind = "sale"',
    ),
    MetricSpec(
        "returns_count",
        "number",
        "return receipts",
        "all history",
        'count of receipts with kind = "return"',
    ),
    MetricSpec(
        "visits_count",
        "number",
        "store visits (sale receipts in one store, each within 1 hour of the previous one)",
        "all history",
        "count of distinct (store, visit) pairs of sale receipts",
    ),
    MetricSpec(
        "revenue",
        "number",
        "net revenue, minor units",
        "all history",
        "sum of signed_amount (returns count negative)",
    ),
    MetricSpec(
        "revenue_365d",
        "number",
        "net revenue, minor units",
        "last 365 days",
        "sum of signed_amount of receipts in the window",
    ),
    MetricSpec(
        "receipts_365d",
        "number",
        "sale receipts",
        "last 365 days",
        "count of sale receipts in the window",
    ),
    MetricSpec(
        "avg_check",
        "number",
        "average sale receipt, minor units",
        "all history",
        "floor(sum of sale amounts / receipts_count)",
    ),
    MetricSpec(
        "avg_check_90d",
        "number",
        "average sale receipt, minor units",
        "last 90 days",
        "floor(sum of sale amounts / sale receipts), in the window",
    ),
    MetricSpec(
        "avg_check_prev_90d",
        "number",
        "average sale receipt, minor units",
        "91–180 days ago",
        "floor(sum of sale amounts / sale receipts), in the window",
    ),
    MetricSpec(
        "avg_check_trend",
        "number",
        "growth (positive) or decline (negative) of the average check",
        "last 90 days against the 90 days before",
        "(avg_check_90d − avg_check_prev_90d) / avg_check_prev_90d; empty when either "
        "window has no sale",
    ),
    MetricSpec(
        "purchase_frequency",
        "number",
        "visits a year",
        "last 365 days",
        "count of visits that started in the window",
    ),
    MetricSpec(
        "typical_interval_days",
        "number",
        "the customer's own typical interval between purchases, days",
        "all history",
        "median of the gaps between consecutive visit starts; empty with fewer than two visits",
    ),
    MetricSpec(
        "last_gap_days",
        "number",
        "the gap before the latest visit, days",
        "all history",
        "latest visit start − the visit start before it",
    ),
    MetricSpec(
        "first_purchase_at", "timestamp", "first sale", "all history", "min(occurred_at) of sales"
    ),
    MetricSpec(
        "last_purchase_at", "timestamp", "latest sale", "all history", "max(occurred_at) of sales"
    ),
    MetricSpec(
        "days_since_last_purchase",
        "number",
        "whole days since the latest sale",
        "now",
        "floor((now − last_purchase_at) / 1 day)",
        derived=True,
    ),
    MetricSpec(
        "days_since_first_purchase",
        "number",
        "whole days since the first sale",
        "now",
        "floor((now − first_purchase_at) / 1 day)",
        derived=True,
    ),
    MetricSpec(
        "overdue_ratio",
        "number",
        "how overdue the next purchase is (2.5 = waited 2.5× the usual interval)",
        "now",
        "days_since_last_purchase / typical_interval_days",
        derived=True,
    ),
    MetricSpec(
        "favourite_store",
        "string",
        "the store visited most",
        "last 365 days",
        "the store with most visits; ties: the latest visit, then the lowest store id",
    ),
    MetricSpec(
        "previous_favourite_store",
        "string",
        "the store visited most a year earlier",
        "366–730 days ago",
        "as favourite_store, in the earlier window",
    ),
    MetricSpec(
        "store_migrated",
        "boolean",
        "the favourite store changed",
        "last 365 days against the year before",
        "favourite_store ≠ previous_favourite_store (both known)",
    ),
    MetricSpec(
        "top_category",
        "string",
        "the category bought for the most money",
        "last 365 days",
        "category_id with the largest sum of sale line amounts; ties: lowest id",
    ),
    MetricSpec(
        "top_categories",
        "list",
        "the three categories bought for the most money",
        "last 365 days",
        "the first three category_ids by sum of sale line amounts",
    ),
    MetricSpec(
        "bonus_usage_share",
        "number",
        "share of sale receipts partly paid with bonus points (0–1)",
        "all history",
        "sale receipts with bonus_spent > 0 / receipts_count",
    ),
    MetricSpec("bonus_spent", "number", "bonus points spent", "all history", "sum of bonus_spent"),
    MetricSpec(
        "bonus_accrued", "number", "bonus points earned", "all history", "sum of bonus_accrued"
    ),
    MetricSpec(
        "rfm_recency",
        "number",
        "recency score 1–5 (5 = most recent fifth of buyers)",
        "now, among the workspace's buyers",
        "1 + 5 × (rank of last_purchase_at, oldest first, from 0) div buyers",
        derived=True,
    ),
    MetricSpec(
        "rfm_frequency",
        "number",
        "frequency score 1–5",
        "last 365 days, among the workspace's buyers",
        "1 + 5 × (rank of purchase_frequency, lowest first, from 0) div buyers",
        derived=True,
    ),
    MetricSpec(
        "rfm_monetary",
        "number",
        "monetary score 1–5",
        "last 365 days, among the workspace's buyers",
        "1 + 5 × (rank of revenue_365d, lowest first, from 0) div buyers",
        derived=True,
    ),
    MetricSpec(
        "rfm_cell",
        "string",
        'the RFM cell, e.g. "545"',
        "as the three scores",
        "rfm_recency, rfm_frequency and rfm_monetary as digits",
        derived=True,
    ),
    MetricSpec(
        "lifecycle_stage",
        "string",
        "where the customer is in their life with the brand",
        "now",
        "prospect: no sale; new: first sale ≤ 30 days ago; reactivated: the gap before the "
        "latest visit exceeded the lapse threshold and the latest sale is within the active "
        "threshold; active: days_since_last_purchase ≤ max(1.5 × interval, 30); at_risk: "
        "≤ max(3 × interval, 90); lapsed: beyond. interval = typical_interval_days, or 60 "
        "with fewer than two visits",
        derived=True,
        values=LIFECYCLE_STAGES,
    ),
    *_engagement(),
    MetricSpec(
        "best_channel",
        "string",
        "the channel the customer responds to best",
        "last 365 days",
        "the channel with delivered > 0 and the highest (opened or clicked deliveries + 1) / "
        "(delivered + 2) — a uniform prior, so one lucky click does not outweigh a record; "
        "ties go to the cheaper channel (push, email, telegram, viber, sms)",
        values=MESSAGE_CHANNELS,
    ),
    MetricSpec(
        "best_send_hour",
        "number",
        "the hour (0–23, the customer's time zone) at which they open and click most",
        "last 365 days",
        "the most frequent local hour of Message Opened/Clicked events; ties: the earliest hour",
    ),
)

# Counters read as 0 (not empty) for customers without history.
ZERO_DEFAULT = frozenset(
    {
        "receipts_count",
        "returns_count",
        "visits_count",
        "revenue",
        "revenue_365d",
        "receipts_365d",
        "purchase_frequency",
        "bonus_spent",
        "bonus_accrued",
        *(f"{c}_{a}" for c in MESSAGE_CHANNELS for a in ("delivered", "opened", "clicked")),
    }
)
DEFAULTS: dict[str, int | str] = {**dict.fromkeys(ZERO_DEFAULT, 0), "lifecycle_stage": "prospect"}
METRICS: tuple[MetricSpec, ...] = tuple(
    replace(spec, default=DEFAULTS.get(spec.name)) for spec in _SPECS
)
