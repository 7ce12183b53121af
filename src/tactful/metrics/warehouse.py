"""The metrics tables in the warehouse and the Ibis expressions that compute them.

Tables (one row per customer unless said otherwise):

- ``customer_profiles``: standard profile fields copied from the database, the custom
  attributes as JSON text, and the customer's UTC offset;
- ``customer_attributes``: custom attributes as typed rows (one per list element), so
  segments compare them without JSON functions, which differ between engines;
- ``customer_reach``: per brand and channel, whether a usable contact exists, whether
  marketing consent was given, and both (reachable);
- ``customer_metrics``: the stored metrics of :mod:`tactful.metrics.catalog`.

Every expression here runs unchanged on DuckDB, PostgreSQL and Spark: integer averages are
cast to float first (PostgreSQL returns NUMERIC otherwise), floor division only ever sees
non-negative operands, and JSON properties go through :func:`json_text`.
"""

from __future__ import annotations

import functools
import operator
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import pyarrow as pa

from tactful.core import clock
from tactful.core.warehouse import Warehouse
from tactful.events.warehouse import (
    CUSTOMER_ALIASES,
    EVENTS,
    RECEIPT_LINES,
    RECEIPTS,
    canonical,
    ensure_tables,
    visit_starts,
)
from tactful.metrics.catalog import (
    DEFAULT_INTERVAL_DAYS,
    MESSAGE_CHANNELS,
    NEW_DAYS,
    RECENT_DAYS,
    YEAR_DAYS,
    ZERO_DEFAULT,
)

# One writer at a time per process: concurrent delete-and-insert transactions on one DuckDB
# table would conflict.
_WRITE_LOCK = threading.Lock()

PROFILES = "customer_profiles"
ATTRIBUTES = "customer_attributes"
REACH = "customer_reach"
METRICS = "customer_metrics"
DAY = 86_400
TS = "timestamp('UTC')"

PROFILE_SCHEMA = ibis.schema(
    {
        "workspace_id": "int64",
        "customer_id": "int64",
        "anonymous": "boolean",
        "is_test": "boolean",
        "gender": "string",
        "birthday": "date",
        "city": "string",
        "locale": "string",
        "timezone": "string",
        "utc_offset_minutes": "int64",
        "has_email": "boolean",
        "has_phone": "boolean",
        "attributes": "string",
        "created_at": TS,
        "updated_at": TS,
        "last_seen_at": TS,
    }
)
ATTRIBUTE_SCHEMA = ibis.schema(
    {
        "workspace_id": "int64",
        "customer_id": "int64",
        "name": "string",
        "text_value": "string",
        "number_value": "float64",
        "bool_value": "boolean",
        "time_value": TS,
    }
)
REACH_SCHEMA = ibis.schema(
    {
        "workspace_id": "int64",
        "customer_id": "int64",
        "brand_id": "int64",
        "channel": "string",
        "has_contact": "boolean",
        "consent": "boolean",
        "reachable": "boolean",
    }
)
_ENGAGEMENT_COLUMNS = {
    f"{channel}_{action}": "int64"
    for channel in MESSAGE_CHANNELS
    for action in ("delivered", "opened", "clicked")
}
METRICS_SCHEMA = ibis.schema(
    {
        "workspace_id": "int64",
        "customer_id": "int64",
        "computed_at": TS,
        "receipts_count": "int64",
        "returns_count": "int64",
        "visits_count": "int64",
        "revenue": "int64",
        "revenue_365d": "int64",
        "receipts_365d": "int64",
        "avg_check": "int64",
        "avg_check_90d": "int64",
        "avg_check_prev_90d": "int64",
        "avg_check_trend": "float64",
        "purchase_frequency": "int64",
        "typical_interval_days": "float64",
        "last_gap_days": "float64",
        "first_purchase_at": TS,
        "last_purchase_at": TS,
        "favourite_store": "string",
        "previous_favourite_store": "string",
        "store_migrated": "boolean",
        "top_category": "string",
        "top_category_2": "string",
        "top_category_3": "string",
        "bonus_usage_share": "float64",
        "bonus_spent": "int64",
        "bonus_accrued": "int64",
        **_ENGAGEMENT_COLUMNS,
        "best_channel": "string",
        "best_send_hour": "int64",
    }
)
SCHEMAS = {
    PROFILES: PROFILE_SCHEMA,
    ATTRIBUTES: ATTRIBUTE_SCHEMA,
    REACH: REACH_SCHEMA,
    METRICS: METRICS_SCHEMA,
}


_ENSURED: weakref.WeakSet[Warehouse] = weakref.WeakSet()


def ensure_metric_tables(warehouse: Warehouse) -> None:
    """Create the event tables and the metrics tables if they are missing (checked once per
    warehouse object: listing tables costs a round trip every time)."""
    if warehouse in _ENSURED:
        return
    ensure_tables(warehouse)
    for name, schema in SCHEMAS.items():
        warehouse.ensure_table(name, schema)
    _ENSURED.add(warehouse)


# -- engine differences ---------------------------------------------------------------------


@ibis.udf.scalar.builtin  # type: ignore[untyped-decorator]
def json_extract_string(json: str, path: str) -> str:  # type: ignore[empty-body]
    """DuckDB: the text of a JSON value at a path."""


@ibis.udf.scalar.builtin  # type: ignore[untyped-decorator]
def json_extract_path_text(json: dt.JSON, key: str) -> str:  # type: ignore[empty-body]
    """PostgreSQL: the text of a JSON value under a top-level key."""


@ibis.udf.scalar.builtin  # type: ignore[untyped-decorator]
def get_json_object(json: str, path: str) -> str:  # type: ignore[empty-body]
    """Spark: the text of a JSON value at a path."""


def json_text(warehouse: Warehouse, column: ibis.Value, key: str) -> ibis.StringValue:
    """The text of a top-level key of a JSON text column (numbers as written, true/false).

    Ibis's own JSON accessors return NULL for non-string values on DuckDB and need a Python
    UDF on Spark, so each engine's native function is named here instead.
    """
    if warehouse.kind == "duckdb":
        return json_extract_string(column, f"$.{key}")
    if warehouse.kind == "postgres":
        return json_extract_path_text(column.cast("json"), key)
    return get_json_object(column, f"$.{key}")


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(value: datetime) -> ibis.TimestampScalar:
    return ibis.literal(value, type=dt.Timestamp(timezone="UTC"))


@ibis.udf.scalar.builtin(  # type: ignore[untyped-decorator]
    name="getvariable", signature=((dt.string,), dt.Timestamp(timezone="UTC"))
)
def _getvariable(variable: str) -> datetime:  # type: ignore[empty-body]
    """DuckDB: the value of a variable set with ``SET VARIABLE``."""


class _Moments:
    """The moments the metrics count from: ``now`` and so many days before it.

    With ``now`` they are literals. Without, they are DuckDB variables that :meth:`assign`
    sets before each run, so a query compiled once serves every minute (compiling the
    refresh query holds the interpreter for a third of a second or more)."""

    def __init__(self, now: datetime | None) -> None:
        self.now = now
        self.used: set[int] = set()  # the variables' days before now

    def ago(self, days: int = 0) -> ibis.TimestampScalar:
        if self.now is not None:
            return _ts(self.now - timedelta(days=days))
        self.used.add(days)
        return _getvariable(f"tactful_metrics_{days}d")

    def assign(self, con: Any, now: datetime) -> None:
        """Set the variables this query reads, as of ``now`` (in UTC)."""
        for days in sorted(self.used):
            moment = (now - timedelta(days=days)).astimezone(UTC).isoformat()
            con.raw_sql(f"SET VARIABLE tactful_metrics_{days}d = TIMESTAMPTZ '{moment}'")


def _epoch(value: ibis.TimestampValue) -> ibis.IntegerValue:
    """Whole seconds since 1970, rounded down, the same on every engine. From 1970 that is
    the floor of the epoch (Spark's epoch drops the fraction that DuckDB and PostgreSQL
    keep); before, Spark's epoch rounds towards zero, so the moment is truncated to the
    second first. DuckDB truncates a moment with time zone at ~0.2 s per million values,
    so that is kept to the moments that need it."""
    since = value.epoch_seconds().floor().cast("int64")
    truncated = value.truncate("s").epoch_seconds().cast("int64")
    return ibis.ifelse(value >= _ts(UNIX_EPOCH), since, truncated)


def _days_between(later: ibis.TimestampValue, earlier: ibis.TimestampValue) -> ibis.FloatingValue:
    return (_epoch(later) - _epoch(earlier)).cast("float64") / DAY


def _int_avg(total: ibis.IntegerValue, count: ibis.IntegerValue) -> ibis.IntegerValue:
    # floor of a non-negative quotient: the same on every engine
    return ibis.ifelse(count > 0, total // ibis.ifelse(count > 0, count, 1), ibis.null("int64"))


# -- the stored metrics ---------------------------------------------------------------------


def _scope(table: ibis.Table, workspace_id: int, customers: ibis.Table | None) -> ibis.Table:
    table = table.filter(table.workspace_id == workspace_id, table.customer_id.notnull())
    if customers is not None:
        table = table.filter(table.customer_id.isin(customers.customer_id))
    return table


def _narrowed(
    warehouse: Warehouse, name: str, workspace_id: int, customers: ibis.Table | None
) -> ibis.Table:
    """A table's rows of a workspace; of ``customers`` and whoever was merged into them,
    when given (so the engine never maps the whole history to find a few customers)."""
    raw = warehouse.table(name)
    raw = raw.filter(raw.workspace_id == workspace_id)
    if customers is None:
        return raw
    aliases = warehouse.table(CUSTOMER_ALIASES)
    merged = aliases.filter(
        aliases.workspace_id == workspace_id,
        aliases.canonical_id.isin(customers.customer_id),
    ).select("customer_id")
    wanted = customers.select("customer_id").union(merged)
    return raw.filter(raw.customer_id.isin(wanted.customer_id))


def _receipt_metrics(receipts: ibis.Table, at: _Moments) -> ibis.Table:
    sale = receipts.kind == "sale"
    year = receipts.occurred_at > at.ago(YEAR_DAYS)
    recent = receipts.occurred_at > at.ago(RECENT_DAYS)
    previous = ~recent & (receipts.occurred_at > at.ago(2 * RECENT_DAYS))

    def count(cond: ibis.BooleanValue) -> ibis.IntegerValue:
        return ibis.ifelse(cond, 1, 0).sum()

    def total(cond: ibis.BooleanValue, column: ibis.IntegerValue) -> ibis.IntegerValue:
        return ibis.ifelse(cond, column, 0).sum()

    sums = receipts.group_by("customer_id").aggregate(
        receipts_count=count(sale),
        returns_count=count(receipts.kind == "return"),
        revenue=receipts.signed_amount.sum(),
        revenue_365d=total(year, receipts.signed_amount),
        receipts_365d=count(sale & year),
        sales_amount=total(sale, receipts.amount),
        recent_amount=total(sale & recent, receipts.amount),
        recent_count=count(sale & recent),
        previous_amount=total(sale & previous, receipts.amount),
        previous_count=count(sale & previous),
        first_purchase_at=ibis.ifelse(sale, receipts.occurred_at, ibis.null(TS)).min(),
        last_purchase_at=ibis.ifelse(sale, receipts.occurred_at, ibis.null(TS)).max(),
        bonus_receipts=count(sale & (receipts.bonus_spent > 0)),
        bonus_spent=receipts.bonus_spent.sum(),
        bonus_accrued=receipts.bonus_accrued.sum(),
    )
    recent_avg = _int_avg(sums.recent_amount, sums.recent_count)
    previous_avg = _int_avg(sums.previous_amount, sums.previous_count)
    return sums.select(
        "customer_id",
        "receipts_count",
        "returns_count",
        "revenue",
        "revenue_365d",
        "receipts_365d",
        avg_check=_int_avg(sums.sales_amount, sums.receipts_count),
        avg_check_90d=recent_avg,
        avg_check_prev_90d=previous_avg,
        avg_check_trend=ibis.ifelse(
            previous_avg > 0,
            (recent_avg - previous_avg).cast("float64") / previous_avg.cast("float64"),
            ibis.null("float64"),
        ),
        first_purchase_at=sums.first_purchase_at,
        last_purchase_at=sums.last_purchase_at,
        bonus_usage_share=ibis.ifelse(
            sums.receipts_count > 0,
            sums.bonus_receipts.cast("float64") / sums.receipts_count.cast("float64"),
            ibis.null("float64"),
        ),
        bonus_spent=sums.bonus_spent,
        bonus_accrued=sums.bonus_accrued,
    )


def _favourite(
    starts: ibis.Table, low: ibis.TimestampScalar, high: ibis.TimestampScalar, name: str
) -> ibis.Table:
    window = starts.filter(starts.started_at > low, starts.started_at <= high)
    per_store = window.group_by(["customer_id", "store_id"]).aggregate(
        visits=window.count(), latest=window.started_at.max()
    )
    ranked = per_store.mutate(
        rank=ibis.row_number().over(
            group_by="customer_id",
            order_by=[ibis.desc("visits"), ibis.desc("latest"), "store_id"],
        )
    )
    return ranked.filter(ranked["rank"] == 0).select("customer_id", **{name: ranked.store_id})


def _visit_metrics(receipts: ibis.Table, at: _Moments) -> ibis.Table:
    starts = visit_starts(receipts.filter(receipts.kind == "sale"))
    ordered = starts.mutate(
        previous=starts.started_at.lag().over(
            group_by="customer_id", order_by=["started_at", "store_id"]
        ),
        position=ibis.row_number().over(
            group_by="customer_id", order_by=[ibis.desc("started_at"), ibis.desc("store_id")]
        ),
    )
    gap = ibis.ifelse(
        ordered.previous.isnull(),
        ibis.null("float64"),
        _days_between(ordered.started_at, ordered.previous),
    )
    with_gap = ordered.mutate(gap=gap)
    stats = with_gap.group_by("customer_id").aggregate(
        visits_count=with_gap.count(),
        purchase_frequency=ibis.ifelse(with_gap.started_at > at.ago(YEAR_DAYS), 1, 0).sum(),
        typical_interval_days=with_gap.gap.median(),
        last_gap_days=ibis.ifelse(with_gap.position == 0, with_gap.gap, ibis.null("float64")).max(),
    )
    year_ago = at.ago(YEAR_DAYS)
    recent = _favourite(starts, year_ago, at.ago(), "favourite_store")
    before = _favourite(starts, at.ago(2 * YEAR_DAYS), year_ago, "previous_store")
    joined = stats.left_join(recent, "customer_id").left_join(before, "customer_id")
    return joined.select(
        stats.customer_id,
        stats.visits_count,
        stats.purchase_frequency,
        stats.typical_interval_days,
        stats.last_gap_days,
        favourite_store=recent.favourite_store,
        previous_favourite_store=before.previous_store,
        store_migrated=ibis.ifelse(
            recent.favourite_store.notnull() & before.previous_store.notnull(),
            recent.favourite_store != before.previous_store,
            False,
        ),
    )


def _category_metrics(lines: ibis.Table, at: _Moments) -> ibis.Table:
    window = lines.filter(
        lines.kind == "sale", lines.category_id.notnull(), lines.occurred_at > at.ago(YEAR_DAYS)
    )
    per_category = window.group_by(["customer_id", "category_id"]).aggregate(
        spent=window.amount.sum()
    )
    ranked = per_category.mutate(
        rank=ibis.row_number().over(
            group_by="customer_id", order_by=[ibis.desc("spent"), "category_id"]
        )
    )
    top = ranked.filter(ranked["rank"] < 3)

    def nth(n: int) -> ibis.StringValue:
        return ibis.ifelse(top["rank"] == n, top.category_id, ibis.null("string")).max()

    return top.group_by("customer_id").aggregate(
        top_category=nth(0), top_category_2=nth(1), top_category_3=nth(2)
    )


def _engagement_metrics(
    warehouse: Warehouse, events: ibis.Table, profiles: ibis.Table, at: _Moments
) -> ibis.Table:
    names = ("Message Delivered", "Message Opened", "Message Clicked")
    window = events.filter(events.name.isin(names), events.occurred_at > at.ago(YEAR_DAYS))
    messages = window.mutate(
        message_channel=json_text(warehouse, window.properties, "channel"),
        delivery=json_text(warehouse, window.properties, "delivery_id"),
    )
    aggregates: dict[str, Any] = {}
    rates = {}
    for channel in MESSAGE_CHANNELS:
        on_channel = messages.message_channel == channel
        for action, name in zip(("delivered", "opened", "clicked"), names, strict=True):
            aggregates[f"{channel}_{action}"] = ibis.ifelse(
                on_channel & (messages.name == name), messages.delivery, ibis.null("string")
            ).nunique()
        aggregates[f"{channel}_responses"] = ibis.ifelse(
            on_channel & messages.name.isin(names[1:]), messages.delivery, ibis.null("string")
        ).nunique()
    counts = messages.group_by("customer_id").aggregate(**aggregates)
    for channel in MESSAGE_CHANNELS:
        delivered = counts[f"{channel}_delivered"]
        rates[channel] = ibis.ifelse(
            delivered > 0,
            (counts[f"{channel}_responses"].cast("float64") + 1.0)
            / (delivered.cast("float64") + 2.0),
            -1.0,
        )
    best_rate = ibis.greatest(*rates.values())
    best = ibis.cases(
        *((rates[c] == best_rate, c) for c in MESSAGE_CHANNELS), else_=ibis.null("string")
    )
    engagement = counts.select(
        "customer_id",
        *_ENGAGEMENT_COLUMNS,
        best_channel=ibis.ifelse(best_rate > 0, best, ibis.null("string")),
    )
    # The local hour of opens and clicks, with the profile's UTC offset (UTC when unknown).
    reactions = messages.filter(messages.name.isin(names[1:]))
    offsets = profiles.select("customer_id", "utc_offset_minutes")
    local = reactions.left_join(offsets, "customer_id").select(
        reactions.customer_id,
        hour=(
            (
                reactions.occurred_at.hour() * 60
                + reactions.occurred_at.minute()
                + offsets.utc_offset_minutes.fill_null(0)
                + 1440
            )
            % 1440
        )
        // 60,
    )
    per_hour = local.group_by(["customer_id", "hour"]).aggregate(n=local.count())
    ranked = per_hour.mutate(
        rank=ibis.row_number().over(group_by="customer_id", order_by=[ibis.desc("n"), "hour"])
    )
    hours = ranked.filter(ranked["rank"] == 0).select("customer_id", best_send_hour="hour")
    joined = engagement.left_join(hours, "customer_id")
    return joined.select(
        engagement.customer_id,
        *(engagement[c] for c in _ENGAGEMENT_COLUMNS),
        engagement.best_channel,
        best_send_hour=hours.best_send_hour.cast("int64"),
    )


def compute_metrics(
    warehouse: Warehouse,
    *,
    workspace_id: int,
    now: datetime,
    customers: ibis.Table | None = None,
    sources: dict[str, str] | None = None,
) -> ibis.Table:
    """The stored metrics of a workspace's customers (of ``customers`` only, when given), as
    one expression in the column order of ``customer_metrics``. ``sources`` reads history
    from other tables of the same shape (the narrowed copies of :func:`refresh_customers`)."""
    return _metrics_query(warehouse, workspace_id, _Moments(now), customers, sources)


def _metrics_query(
    warehouse: Warehouse,
    workspace_id: int,
    at: _Moments,
    customers: ibis.Table | None,
    sources: dict[str, str] | None,
) -> ibis.Table:
    ensure_metric_tables(warehouse)
    names = {RECEIPTS: RECEIPTS, RECEIPT_LINES: RECEIPT_LINES, EVENTS: EVENTS, PROFILES: PROFILES}
    names.update(sources or {})

    def history(name: str) -> ibis.Table:
        raw = _narrowed(warehouse, names[name], workspace_id, customers)
        return _scope(canonical(warehouse, raw), workspace_id, customers)

    # Windows only have lower bounds: ingestion refuses events from the future, and history
    # that arrives during this minute must count (see refresh_customers).
    receipts = history(RECEIPTS)
    lines = history(RECEIPT_LINES)
    events = history(EVENTS)
    profiles = _scope(warehouse.table(names[PROFILES]), workspace_id, customers)

    money = _receipt_metrics(receipts, at)
    visit = _visit_metrics(receipts, at)
    category = _category_metrics(lines, at)
    engagement = _engagement_metrics(warehouse, events, profiles, at)
    everyone = money.select("customer_id").union(engagement.select("customer_id")).distinct()
    joined = (
        everyone.left_join(money, "customer_id")
        .left_join(visit, "customer_id")
        .left_join(category, "customer_id")
        .left_join(engagement, "customer_id")
    )
    sources = {
        **{c: money[c] for c in money.columns},
        **{c: visit[c] for c in visit.columns},
        **{c: category[c] for c in category.columns},
        **{c: engagement[c] for c in engagement.columns},
    }
    columns = []
    for name, dtype in METRICS_SCHEMA.items():
        if name == "workspace_id":
            value: ibis.Value = ibis.literal(workspace_id, type="int64")
        elif name == "customer_id":
            value = everyone.customer_id
        elif name == "computed_at":
            value = at.ago()
        else:
            value = sources[name]
            if name in ZERO_DEFAULT:
                value = value.fill_null(0)
        columns.append(value.cast(dtype).name(name))
    return joined.select(*columns)


# -- derived metrics (computed when read) ---------------------------------------------------

# whole-day metrics counted from a stored moment (as ``with_derived`` computes them)
COUNTED_FROM = {
    "days_since_last_purchase": "last_purchase_at",
    "days_since_first_purchase": "first_purchase_at",
}


def days_since_within(
    stamp: ibis.TimestampValue, *, now: datetime, low: int | None, high: int | None
) -> ibis.BooleanValue:
    """``low <= whole days since stamp <= high`` (either bound may be open), counted as
    ``with_derived`` counts them, written as a range on the stored moment itself, which
    every engine filters on its min/max statistics instead of computing the days per row.

    With N the whole seconds of ``now``: days = floor((N - floor_s(stamp)) / DAY), so
    days >= low <=> stamp < N - low*DAY + 1 s, and days <= high <=> stamp >= N -
    (high + 1)*DAY + 1 s. A missing moment stays unknown, as the days would.
    """
    base = now.replace(microsecond=0)
    parts = []
    if low is not None:
        parts.append(stamp < _ts(base - timedelta(seconds=low * DAY - 1)))
    if high is not None:
        parts.append(stamp >= _ts(base - timedelta(seconds=(high + 1) * DAY - 1)))
    assert parts, "at least one bound"
    return functools.reduce(operator.and_, parts)


def with_derived(metrics: ibis.Table, *, now: datetime, names: Sequence[str]) -> ibis.Table:
    """``metrics`` plus the derived metrics asked for, relative to ``now``."""
    wanted = set(names)
    now_ts = _ts(now)

    def days_since(stamp: ibis.TimestampValue) -> ibis.IntegerValue:
        # whole days; both sides in whole seconds, so the floor is the same on every engine.
        # Built only for the metrics asked for: every expression costs compile time.
        return ((_epoch(now_ts) - _epoch(stamp)) // DAY).cast("int64")

    extra: dict[str, ibis.Value] = {}
    if wanted & {"days_since_last_purchase", "overdue_ratio", "lifecycle_stage"}:
        since_last = days_since(metrics.last_purchase_at)
        extra["days_since_last_purchase"] = since_last
    if wanted & {"days_since_first_purchase", "lifecycle_stage"}:
        since_first = days_since(metrics.first_purchase_at)
    if "days_since_first_purchase" in wanted:
        extra["days_since_first_purchase"] = since_first
    if "overdue_ratio" in wanted:
        extra["overdue_ratio"] = ibis.ifelse(
            metrics.typical_interval_days > 0,
            since_last.cast("float64") / metrics.typical_interval_days,
            ibis.null("float64"),
        )
    if "lifecycle_stage" in wanted:
        interval = metrics.typical_interval_days.fill_null(DEFAULT_INTERVAL_DAYS)
        active = ibis.greatest(interval * 1.5, 30.0)
        lapse = ibis.greatest(interval * 3.0, 90.0)
        days = since_last.cast("float64")
        extra["lifecycle_stage"] = ibis.cases(
            (metrics.last_purchase_at.isnull(), "prospect"),
            (since_first <= NEW_DAYS, "new"),
            ((metrics.last_gap_days > lapse) & (days <= active), "reactivated"),
            (days <= active, "active"),
            (days <= lapse, "at_risk"),
            else_="lapsed",
        )
    if wanted & {"rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_cell"}:
        buyers = metrics.last_purchase_at.notnull()
        # Non-buyers sort first in every ranking and are subtracted out, so ranks count
        # among buyers only (0-based; ties share the lowest rank on every engine).
        total = ibis.ifelse(buyers, 1, 0).sum().over(group_by="workspace_id")
        absent = ibis.ifelse(buyers, 0, 1).sum().over(group_by="workspace_id")

        def score(order: ibis.Value) -> ibis.IntegerValue:
            rank = ibis.rank().over(group_by="workspace_id", order_by=order)
            position = rank - absent
            return ibis.ifelse(
                buyers, (1 + (position * 5) // total).cast("int64"), ibis.null("int64")
            )

        recency = score(ibis.ifelse(buyers, _epoch(metrics.last_purchase_at), -1))
        frequency = score(ibis.ifelse(buyers, metrics.purchase_frequency.fill_null(0), -1))
        monetary = score(
            ibis.ifelse(buyers, metrics.revenue_365d.fill_null(0), ibis.literal(-(2**62)))
        )
        extra.update(rfm_recency=recency, rfm_frequency=frequency, rfm_monetary=monetary)
        extra["rfm_cell"] = ibis.ifelse(
            buyers,
            recency.cast("string") + frequency.cast("string") + monetary.cast("string"),
            ibis.null("string"),
        )
    return metrics.mutate(**extra) if extra else metrics


# -- writing rows ---------------------------------------------------------------------------

IDS_TABLE = "tactful_metric_ids"
# The columns of the history the metrics read (what refresh_customers copies out).
_READ = {
    RECEIPTS: (
        "workspace_id",
        "customer_id",
        "store_id",
        "kind",
        "occurred_at",
        "amount",
        "signed_amount",
        "bonus_accrued",
        "bonus_spent",
    ),
    RECEIPT_LINES: ("workspace_id", "customer_id", "kind", "category_id", "amount", "occurred_at"),
    EVENTS: ("workspace_id", "customer_id", "name", "occurred_at", "properties"),
}
_COPIES = {name: f"tactful_refresh_{name}" for name in _READ}


@dataclass(frozen=True)
class _RefreshPlan:
    """A workspace's refresh on DuckDB, compiled once: the copies' queries and the metric
    query, counting from the moments ``at`` sets."""

    at: _Moments
    copies: tuple[tuple[str, str], ...]  # (temporary table, the query that fills it)
    query: str


# per warehouse and workspace: compiling costs about a second, running for a few thousand
# customers far less
_PLANS: weakref.WeakKeyDictionary[Warehouse, dict[int, _RefreshPlan]] = weakref.WeakKeyDictionary()


def stale_profiles(
    warehouse: Warehouse, *, workspace_id: int, updated: Sequence[tuple[int, datetime]]
) -> list[int]:
    """Of ``(customer, updated_at)`` pairs, the customers whose profile copy is missing or
    older than ``updated_at``."""
    if not updated:
        return []
    ensure_metric_tables(warehouse)
    profiles = warehouse.table(PROFILES)
    wanted = ibis.memtable(pa.table({"customer_id": pa.array([c for c, _ in updated], pa.int64())}))
    copied = {
        int(r["customer_id"]): r["updated_at"]
        for r in warehouse.con.to_pyarrow(
            profiles.filter(
                profiles.workspace_id == workspace_id,
                profiles.customer_id.isin(wanted.customer_id),
            ).select("customer_id", "updated_at")
        ).to_pylist()
    }
    return [
        customer
        for customer, at in updated
        if copied.get(customer) is None or clock.ensure_utc(copied[customer]) < clock.ensure_utc(at)
    ]


def refresh_customers(
    warehouse: Warehouse, *, workspace_id: int, customer_ids: pa.Array, now: datetime
) -> datetime:
    """Recompute and replace the stored metrics of some customers, as of the start of the
    current minute (returned). On DuckDB the queries are compiled once per workspace and
    count from variables set for each run (see ``_Moments``)."""
    anchor = now.replace(second=0, microsecond=0)
    ids = customer_ids.cast(pa.int64())
    if warehouse.kind != "duckdb":
        chosen = ibis.memtable(pa.table({"customer_id": ids}))
        rows: ibis.Table | pa.Table = compute_metrics(
            warehouse, workspace_id=workspace_id, now=anchor, customers=chosen
        )
        if warehouse.kind == "postgres":
            # the delete below runs in one transaction with the insert: materialise first
            rows = warehouse.con.to_pyarrow(rows)
        replace_rows(warehouse, METRICS, workspace_id=workspace_id, customer_ids=ids, rows=rows)
        return anchor
    con: Any = warehouse.con
    with _WRITE_LOCK:
        plans = _PLANS.setdefault(warehouse, {})
        con.create_table(IDS_TABLE, pa.table({"customer_id": ids}), temp=True, overwrite=True)
        plan = plans.get(workspace_id)
        at = plan.at if plan is not None else _Moments(None)
        copies = plan.copies if plan is not None else _copy_queries(warehouse, workspace_id, at)
        # Copy the customers' history out once (one scan per table), then compute on the
        # copies: the metric query reads receipts several times.
        at.assign(con, anchor)
        for copy, query in copies:
            con.raw_sql(f"CREATE OR REPLACE TEMP TABLE {copy} AS {query}")
        if plan is None:  # compiled against the copies, which exist now
            chosen = con.table(IDS_TABLE)
            expr = _metrics_query(warehouse, workspace_id, at, chosen, _COPIES)
            plan = plans[workspace_id] = _RefreshPlan(
                at, copies, str(ibis.to_sql(expr, dialect="duckdb"))
            )
            at.assign(con, anchor)  # with the moments the metric query added
        con.raw_sql("BEGIN")
        try:
            con.raw_sql(
                f"DELETE FROM {METRICS} WHERE workspace_id = {int(workspace_id)} "  # noqa: S608
                f"AND customer_id IN (SELECT customer_id FROM {IDS_TABLE})"
            )
            con.raw_sql(f"INSERT INTO {METRICS} {plan.query}")
            con.raw_sql("COMMIT")
        except BaseException:
            con.raw_sql("ROLLBACK")
            raise
    return anchor


def _copy_queries(
    warehouse: Warehouse, workspace_id: int, at: _Moments
) -> tuple[tuple[str, str], ...]:
    """The queries that copy out the history of the customers in ``IDS_TABLE``."""
    chosen = warehouse.con.table(IDS_TABLE)
    queries = []
    for name, copy in _COPIES.items():
        rows = _narrowed(warehouse, name, workspace_id, chosen).select(*_READ[name])
        if name == RECEIPT_LINES:  # lines only feed the categories of the last year
            rows = rows.filter(rows.kind == "sale", rows.occurred_at > at.ago(YEAR_DAYS))
        queries.append((copy, str(ibis.to_sql(rows, dialect="duckdb"))))
    return tuple(queries)


def replace_rows(
    warehouse: Warehouse,
    name: str,
    *,
    workspace_id: int,
    customer_ids: pa.Array | None,
    rows: ibis.Table | pa.Table,
) -> None:
    """Replace a workspace's rows (of ``customer_ids`` only, when given) with ``rows``.

    DuckDB and PostgreSQL delete and insert in one transaction; Spark tables cannot delete
    rows, so there the table is rewritten.
    """
    con: Any = warehouse.con
    target = warehouse.table(name)
    if warehouse.kind == "pyspark":
        keep = target.filter(target.workspace_id != workspace_id)
        if customer_ids is not None:
            ids = ibis.memtable(pa.table({"customer_id": customer_ids}))
            keep = target.filter(
                (target.workspace_id != workspace_id) | ~target.customer_id.isin(ids.customer_id)
            )
        kept = con.to_pyarrow(keep)
        fresh = rows if isinstance(rows, pa.Table) else con.to_pyarrow(rows)
        schema = target.schema()
        combined = pa.concat_tables([kept, fresh.cast(kept.schema)])
        con.drop_table(name, force=True)
        con.create_table(name, schema=schema)
        if combined.num_rows:
            warehouse.insert_arrow(name, combined)
        return
    temp = f"tactful_ids_{name}"
    with _WRITE_LOCK:
        if customer_ids is not None:
            con.create_table(
                temp,
                pa.table({"customer_id": customer_ids.cast(pa.int64())}),
                temp=True,
                overwrite=True,
            )
            condition = f"AND customer_id IN (SELECT customer_id FROM {temp})"  # noqa: S608
        else:
            condition = ""
        con.raw_sql("BEGIN")
        try:
            con.raw_sql(f"DELETE FROM {name} WHERE workspace_id = {int(workspace_id)} {condition}")  # noqa: S608
            if isinstance(rows, pa.Table):
                if rows.num_rows:
                    con.insert(name, rows.cast(target.schema().to_pyarrow()))
            else:
                con.insert(name, rows)
            con.raw_sql("COMMIT")
        except BaseException:
            con.raw_sql("ROLLBACK")
            raise
