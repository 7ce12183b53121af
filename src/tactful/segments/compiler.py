"""One definition → one warehouse query (Ibis), the same on DuckDB, PostgreSQL and Spark.

The query starts from the workspace's customers (``customer_profiles``), left-joins the
metrics when a metric is used, and one per-customer aggregate for each condition that needs
history (events, purchases, messages), custom attributes or reachability. Each condition is
a boolean column made two-valued (a missing value is *false*), so ``not`` is exact; ``all``
/ ``any`` / ``not`` combine them. A referenced segment is compiled inline from its current
definition.
"""

from __future__ import annotations

import functools
import math
import operator as op
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.datatypes as dt

from tactful.core.warehouse import Warehouse
from tactful.events.warehouse import EVENTS, RECEIPT_LINES, RECEIPTS, canonical
from tactful.segments.definition import (
    MESSAGE_ACTIONS,
    AllNode,
    AnyNode,
    AttributeCondition,
    ConsentCondition,
    EventCondition,
    MessageCondition,
    MetricCondition,
    NotNode,
    PurchaseCondition,
    ReachableCondition,
    SegmentCondition,
    Window,
    walk,
)
from tactful.segments.sources import MetricInfo, MetricsSource
from tactful.segments.validation import MAX_DEPTH, STANDARD_ATTRIBUTES, attribute_type, coerce

TOP_CATEGORY_COLUMNS = ("top_category", "top_category_2", "top_category_3")
PROFILE_COLUMNS = tuple(name for name in STANDARD_ATTRIBUTES if name != "age")
UTC_TS = dt.Timestamp(timezone="UTC")


def _ts(value: datetime) -> ibis.TimestampScalar:
    return ibis.literal(value, type=UTC_TS)


@dataclass(frozen=True)
class Compiled:
    """A compiled query: one row per customer with one boolean column per definition, and
    the values each condition looked at (for previews)."""

    table: ibis.Table
    flags: tuple[str, ...]
    values: dict[str, str]  # column -> path of the condition it belongs to


class Compiler:
    """Compiles definitions of one workspace at one moment (one compilation per instance)."""

    def __init__(
        self,
        *,
        warehouse: Warehouse,
        source: MetricsSource,
        workspace_id: int,
        now: datetime,
        attribute_types: dict[str, str],
        definition_of: Callable[[int], Any | None],
    ) -> None:
        self.warehouse = warehouse
        self.source = source
        self.workspace_id = workspace_id
        self.now = now
        self.attribute_types = attribute_types
        self.definition_of = definition_of
        self._joins: list[tuple[str, ibis.Table]] = []
        self._values: dict[str, ibis.Value] = {}
        self._base: ibis.Table | None = None
        self._metrics: ibis.Table | None = None
        # the customers who can be members, when history is read for them alone (members)
        self._candidates: ibis.Table | None = None
        self._profile_columns: set[str] = set()
        self._with_values = True

    # -- entry points -------------------------------------------------------------------------

    def compile(self, definitions: dict[str, Any], *, with_values: bool = False) -> Compiled:
        """One query flagging, per customer, membership of each named definition."""
        self._prepare(definitions, with_values=with_values)
        base = self._profile_base()
        predicates = {
            name: self._predicate(node, "definition", 0) for name, node in definitions.items()
        }
        table = self._with_joins(base)
        columns: list[Any] = [table.customer_id]
        columns += [expr.name(name) for name, expr in predicates.items()]
        labels: dict[str, str] = {}
        if with_values:
            for index, (path, expr) in enumerate(self._values.items()):
                columns.append(expr.name(f"value_{index}"))
                labels[f"value_{index}"] = path
        return Compiled(table.select(*columns), tuple(definitions), labels)

    def members(self, definition: Any) -> ibis.Table:
        """The customer ids of one definition's members (its top-level conjuncts become
        separate filters).

        Top-level conjuncts on the profile and the metrics alone are compiled first; the
        history aggregates of the others (events, purchases, messages) then read only the
        rows of customers who pass them, since nobody else can be a member. Aggregating a
        few thousand candidates' history instead of every customer's is most of the cost of
        a narrow segment."""
        self._prepare({"member": definition}, with_values=False)
        base = self._profile_base()
        if isinstance(definition, AllNode):
            parts = [(f"definition.all[{i}]", child) for i, child in enumerate(definition.all)]
        else:
            parts = [("definition", definition)]
        direct = [(path, child) for path, child in parts if self._direct(child)]
        rest = [(path, child) for path, child in parts if not self._direct(child)]
        conditions = [self._predicate(child, path, 0, two_valued=False) for path, child in direct]
        if conditions and rest:
            self._candidates = self._with_joins(base).filter(*conditions).select("customer_id")
        conditions += [self._predicate(child, path, 0, two_valued=False) for path, child in rest]
        table = self._with_joins(base)
        return table.filter(*conditions).select(table.customer_id)

    def identity(self, definition: Any) -> tuple[Hashable, ...]:
        """What the query of ``definition`` depends on besides the moment: the workspace,
        the definition, those of the segments it names (as far as they are compiled) and
        the custom attributes' types."""
        nested: list[tuple[int, str | None]] = []
        for _path, leaf in self._leaves(definition, 0):
            if isinstance(leaf, SegmentCondition):
                found = self.definition_of(leaf.segment_id)
                text = None if found is None else found.model_dump_json(by_alias=True)
                nested.append((leaf.segment_id, text))
        return (
            self.workspace_id,
            definition.model_dump_json(by_alias=True),
            tuple(nested),
            tuple(sorted(self.attribute_types.items())),
        )

    def _direct(self, node: Any) -> bool:
        """Whether ``node`` reads only profile columns and metrics (no joined aggregate)."""
        return all(
            isinstance(leaf, AllNode | AnyNode | NotNode | SegmentCondition | MetricCondition)
            or (isinstance(leaf, AttributeCondition) and leaf.attribute in STANDARD_ATTRIBUTES)
            for _path, leaf in self._leaves(node, 0)
        )

    def _with_joins(self, base: ibis.Table) -> ibis.Table:
        table = base
        for key, joined in self._joins:
            table = table.left_join(joined, table.customer_id == joined[key])
        return table

    # -- building blocks ----------------------------------------------------------------------

    def _prepare(self, definitions: dict[str, Any], *, with_values: bool) -> None:
        """Collect what the conditions read, so the query carries only those columns (a
        narrower query is also quicker to compile)."""
        self._with_values = with_values
        metric_names: set[str] = set()
        columns: set[str] = set()
        for node in definitions.values():
            for _path, leaf in self._leaves(node, 0):
                if isinstance(leaf, MetricCondition):
                    metric_names.add(leaf.metric)
                    day_range = self._day_range(leaf)
                    if day_range is not None:
                        columns.add(day_range[0])
                    if day_range is None or with_values:
                        columns.add(leaf.metric)
                elif isinstance(leaf, AttributeCondition):
                    if leaf.attribute == "age":
                        self._profile_columns.add("birthday")
                    elif leaf.attribute in STANDARD_ATTRIBUTES:
                        self._profile_columns.add(leaf.attribute)
        if metric_names:
            columns.discard("top_categories")
            if "top_categories" in metric_names:
                columns.update(TOP_CATEGORY_COLUMNS)
            table = self.source.metrics_table(
                self.warehouse,
                workspace_id=self.workspace_id,
                now=self.now,
                names=sorted(columns),
            )
            self._metrics = table.select(
                m_customer_id=table.customer_id, **{f"m_{c}": table[c] for c in sorted(columns)}
            )
            self._joins.append(("m_customer_id", self._metrics))

    def _leaves(self, node: Any, depth: int) -> list[tuple[str, Any]]:
        found = []
        for path, child in walk(node):
            if isinstance(child, SegmentCondition) and depth < MAX_DEPTH:
                nested = self.definition_of(child.segment_id)
                if nested is not None:
                    found.extend(self._leaves(nested, depth + 1))
            found.append((path, child))
        return found

    def _profile_base(self) -> ibis.Table:
        profiles = self.source.profiles_table(self.warehouse, workspace_id=self.workspace_id)
        self._base = profiles.select("customer_id", *sorted(self._profile_columns))
        return self._base

    def _add_join(self, table: ibis.Table) -> str:
        index = len(self._joins)
        key = f"k{index}"
        self._joins.append((key, table.rename({key: "customer_id"})))
        return key

    def _history(
        self,
        name: str,
        window: Window | None,
        columns: Sequence[str],
        where: Callable[[ibis.Table], list[ibis.BooleanValue]] = lambda _raw: [],
    ) -> ibis.Table:
        """A history table in a window with the columns asked for, merged customers mapped
        to their survivor. The raw rows are narrowed to the workspace, the window, the
        conditions ``where`` gives on the raw table, and the columns first, so only those
        are mapped (and the query stays small to compile)."""
        table = self.warehouse.table(name)
        at = table.occurred_at
        # anonymous rows (no customer yet) have no survivor either: dropped before mapping
        kept = [
            table.workspace_id == self.workspace_id,
            table.customer_id.notnull(),
            at <= _ts(self.now),
        ]
        if window is not None and window.days is not None:
            kept.append(at > _ts(self.now - timedelta(days=window.days)))
        elif window is not None:
            assert window.start is not None
            kept.append(at >= _ts(window.start))
            if window.end is not None:
                kept.append(at < _ts(window.end))
        kept += where(table)
        table = table.filter(*kept).select("workspace_id", "customer_id", *columns)
        mapped = canonical(self.warehouse, table)
        if self._candidates is None:
            return mapped
        return mapped.filter(mapped.customer_id.isin(self._candidates.customer_id))

    # -- predicates ---------------------------------------------------------------------------

    def _predicate(
        self, node: Any, path: str, depth: int, *, two_valued: bool = True
    ) -> ibis.BooleanValue:
        if isinstance(node, AllNode):
            parts = [self._predicate(c, f"{path}.all[{i}]", depth) for i, c in enumerate(node.all)]
            return functools.reduce(op.and_, parts)
        if isinstance(node, AnyNode):
            parts = [self._predicate(c, f"{path}.any[{i}]", depth) for i, c in enumerate(node.any)]
            return functools.reduce(op.or_, parts)
        if isinstance(node, NotNode):
            return ~self._predicate(node.not_, f"{path}.not", depth)
        if isinstance(node, SegmentCondition):
            nested = self.definition_of(node.segment_id)
            if nested is None or depth >= MAX_DEPTH:
                inside: ibis.BooleanValue = ibis.literal(False)
            else:
                inside = self._predicate(nested, f"segment[{node.segment_id}]", depth + 1)
            return inside if node.member else ~inside
        value, condition = self._leaf(node, path)
        if value is not None and depth == 0:
            self._values[path] = value
        # A top-level conjunct of a filter may stay three-valued (unknown drops the row just
        # like false), which lets the engine turn left joins into inner joins.
        return condition.fill_null(False) if two_valued else condition

    def _leaf(self, node: Any, path: str) -> tuple[ibis.Value | None, ibis.BooleanValue]:
        if isinstance(node, AttributeCondition):
            return self._attribute(node)
        if isinstance(node, MetricCondition):
            return self._metric(node)
        if isinstance(node, EventCondition):
            return self._event(node)
        if isinstance(node, PurchaseCondition):
            return self._purchase(node)
        if isinstance(node, MessageCondition):
            return self._message(node)
        if isinstance(node, ConsentCondition | ReachableCondition):
            return self._reach(node)
        raise TypeError(f"cannot compile {type(node).__name__} at {path}")

    def _attribute(self, node: AttributeCondition) -> tuple[ibis.Value, ibis.BooleanValue]:
        assert self._base is not None
        kind = attribute_type(node.attribute, self.attribute_types) or "string"
        if node.attribute == "age":
            birthday = self._base.birthday
            # today's parts taken from a date literal in the query, not Python integers, so
            # the query depends on the moment through moment literals only (see templates)
            today = ibis.literal(self.now.date())
            before_birthday = (birthday.month() > today.month()) | (
                (birthday.month() == today.month()) & (birthday.day() > today.day())
            )
            column: ibis.Value = (
                today.year() - birthday.year() - ibis.ifelse(before_birthday, 1, 0)
            ).cast("int64")
            return column, compare(column, kind, node.operator, node.value, self.now)
        if node.attribute in STANDARD_ATTRIBUTES:
            column = self._base[node.attribute]
            return column, compare(column, kind, node.operator, node.value, self.now)
        attributes = self.source.attributes_table(self.warehouse, workspace_id=self.workspace_id)
        mine = attributes.filter(attributes.name == node.attribute)
        field = {
            "number": mine.number_value,
            "boolean": mine.bool_value,
            "timestamp": mine.time_value,
        }.get(kind, mine.text_value)
        if node.operator in ("is_set", "is_not_set"):
            present = mine.select("customer_id").distinct().mutate(hit=ibis.literal(True))
            key = self._add_join(present)
            hit = self._joined(key, "hit")
            return hit, hit.notnull() if node.operator == "is_set" else hit.isnull()
        negated = node.operator in ("not_contains",)
        test_op = "contains" if negated else node.operator
        element_kind = "string" if kind == "list" else kind
        if kind == "list":
            test_op = "eq"
        matching = mine.filter(compare(field, element_kind, test_op, node.value, self.now))
        hits = matching.group_by("customer_id").aggregate(hit=matching.count())
        key = self._add_join(hits)
        hit = self._joined(key, "hit")
        if negated:
            return hit, hit.isnull()
        return hit, hit.notnull()

    def _joined(self, key: str, column: str) -> ibis.Value:
        # columns of a joined table are referenced through the join's right side
        for join_key, joined in self._joins:
            if join_key == key:
                return joined[column]
        raise KeyError(key)

    def _metric(self, node: MetricCondition) -> tuple[ibis.Value | None, ibis.BooleanValue]:
        assert self._metrics is not None
        metrics = self._metrics
        info = self._metric_spec(node.metric)
        if node.metric == "top_categories":
            columns = [metrics[f"m_{c}"] for c in TOP_CATEGORY_COLUMNS]
            shown = columns[0]
            if node.operator in ("is_set", "is_not_set"):
                present = columns[0].notnull()
                return shown, present if node.operator == "is_set" else ~present
            wanted = coerce("string", "eq", node.value)
            found = functools.reduce(op.or_, [(c == wanted).fill_null(False) for c in columns])
            return shown, found if node.operator == "contains" else ~found
        day_range = self._day_range(node)
        if day_range is not None:
            # a range on the stored moment: no per-row day arithmetic to filter on
            stamp, (low, high) = day_range
            within = self.source.days_since_within(
                metrics[f"m_{stamp}"], now=self.now, low=low, high=high
            )
            return (metrics[f"m_{node.metric}"] if self._with_values else None), within
        column = metrics[f"m_{node.metric}"]
        if info.default is not None:
            column = column.fill_null(info.default)
        return column, compare(column, info.type, node.operator, node.value, self.now)

    def _metric_spec(self, name: str) -> MetricInfo:
        return next(m for m in self.source.metric_specs() if m.name == name)

    def _day_range(self, node: MetricCondition) -> tuple[str, tuple[int | None, int | None]] | None:
        """The stored moment and whole-day bounds a whole-day metric condition filters on as
        a range, or None when it compares the metric itself."""
        stamp = self.source.counted_from(node.metric)
        info = self._metric_spec(node.metric)
        if stamp is None or info.default is not None:
            return None
        bounds = _day_bounds(node.operator, coerce(info.type, node.operator, node.value))
        return None if bounds is None else (stamp, bounds)

    def _aggregate_condition(
        self, table: ibis.Table, value: ibis.Value, node: Any, zero: bool
    ) -> tuple[ibis.Value, ibis.BooleanValue]:
        key = self._add_join(table)
        column = self._joined(key, "agg")
        if not zero:
            return column, compare(column, "number", node.operator, node.value, self.now)
        counted = column.fill_null(0)  # a customer without rows counts zero
        if _zero_passes(node.operator, coerce("number", node.operator, node.value)):
            return counted, compare(counted, "number", node.operator, node.value, self.now)
        # Zero fails the test, so customers without rows fail it either way; leaving their
        # missing value unknown (false once made two-valued) lets the engine join only the
        # customers that have rows instead of all of them.
        return counted, compare(column, "number", node.operator, node.value, self.now)

    def _event(self, node: EventCondition) -> tuple[ibis.Value, ibis.BooleanValue]:
        events = self._history(
            EVENTS, node.window, ("properties",), lambda raw: [raw.name == node.event]
        )
        for condition in node.where:
            text = self.source.json_text(self.warehouse, events.properties, condition.property)
            kind = _value_kind(condition.value, condition.operator)
            column = text.try_cast("float64") if kind == "number" else text
            events = events.filter(
                compare(column, kind, condition.operator, condition.value, self.now).fill_null(
                    False
                )
            )
        if node.aggregate == "count":
            grouped = events.group_by("customer_id").aggregate(agg=events.count())
        else:
            assert node.property is not None
            number = self.source.json_text(
                self.warehouse, events.properties, node.property
            ).try_cast("float64")
            reducer = {
                "sum": number.sum(),
                "avg": number.mean(),
                "min": number.min(),
                "max": number.max(),
            }[node.aggregate]
            grouped = events.mutate(number=number).group_by("customer_id").aggregate(agg=reducer)
        return self._aggregate_condition(
            grouped, grouped.agg, node, zero=node.aggregate in ("count", "sum")
        )

    def _purchase(self, node: PurchaseCondition) -> tuple[ibis.Value, ibis.BooleanValue]:
        by_line = bool(node.product_ids or node.category_ids)
        # one row per receipt: no distinct needed; returns count nothing (zero when none)
        receipts_sold = node.measure == "count" and not by_line

        def wanted(raw: ibis.Table) -> list[ibis.BooleanValue]:
            found = [raw.kind == "sale"] if receipts_sold else []
            if node.product_ids:
                found.append(raw.product_id.isin(node.product_ids))
            if node.category_ids:
                found.append(raw.category_id.isin(node.category_ids))
            if node.store_ids:
                found.append(raw.store_id.isin(node.store_ids))
            if node.channel is not None:
                found.append(raw.channel == node.channel)
            return found

        columns = {
            "count": ("kind", "receipt_id") if by_line else (),
            "amount": ("signed_amount",),
        }.get(node.measure, ("kind", "quantity"))
        table = self._history(RECEIPT_LINES if by_line else RECEIPTS, node.window, columns, wanted)
        if receipts_sold:
            value = table.count()
        elif node.measure == "count":
            value = ibis.ifelse(table.kind == "sale", table.receipt_id, ibis.null("string"))
            value = value.nunique()
        elif node.measure == "amount":
            value = table.signed_amount.sum()
        else:
            value = ibis.ifelse(table.kind == "sale", table.quantity, -table.quantity).sum()
        grouped = table.group_by("customer_id").aggregate(agg=value)
        return self._aggregate_condition(grouped, grouped.agg, node, zero=True)

    def _message(self, node: MessageCondition) -> tuple[ibis.Value, ibis.BooleanValue]:
        action = MESSAGE_ACTIONS[node.action]
        events = self._history(
            EVENTS, node.window, ("properties",), lambda raw: [raw.name == action]
        )
        for key in ("campaign_id", "journey_id", "topic", "channel"):
            wanted = getattr(node, key)
            if wanted is not None:
                text = self.source.json_text(self.warehouse, events.properties, key)
                events = events.filter(text == wanted)
        grouped = events.group_by("customer_id").aggregate(agg=events.count())
        return self._aggregate_condition(grouped, grouped.agg, node, zero=True)

    def _reach(
        self, node: ConsentCondition | ReachableCondition
    ) -> tuple[ibis.Value, ibis.BooleanValue]:
        reach = self.source.reach_table(self.warehouse, workspace_id=self.workspace_id)
        if isinstance(node, ConsentCondition):
            flag, wanted = reach.consent, node.granted
        else:
            flag = reach.reachable if node.via == "marketing" else reach.has_contact
            wanted = node.reachable
        hits = (
            reach.filter(reach.brand_id == node.brand_id, reach.channel == node.channel, flag)
            .select("customer_id")
            .distinct()
            .mutate(hit=ibis.literal(True))
        )
        key = self._add_join(hits)
        hit = self._joined(key, "hit")
        present = hit.notnull()
        return present, present if wanted else ~present


def _value_kind(value: Any, operator: str) -> str:
    """How an event property is compared: as a number when the value is numeric."""
    sample = value[0] if isinstance(value, list) and value else value
    if operator in ("is_true", "is_false"):
        return "boolean"
    if isinstance(sample, int | float) and not isinstance(sample, bool):
        return "number"
    return "string"


def _zero_passes(operator: str, value: Any) -> bool:
    """Whether 0 meets ``<operator> value`` (True when unsure)."""
    tests: dict[str, Callable[[], bool]] = {
        "eq": lambda: value == 0,
        "gt": lambda: value < 0,
        "gte": lambda: value <= 0,
        "lt": lambda: value > 0,
        "lte": lambda: value >= 0,
        "between": lambda: value[0] <= 0 <= value[1],
        "in": lambda: 0 in value,
    }
    return tests[operator]() if operator in tests else True


def _day_bounds(operator: str, value: Any) -> tuple[int | None, int | None] | None:
    """``(low, high)`` whole-day bounds equal to ``days <operator> value`` for a whole
    number of days, or None when the operator is not a range."""
    bounds: dict[str, Callable[[], tuple[int | None, int | None]]] = {
        "gte": lambda: (math.ceil(value), None),
        "gt": lambda: (math.floor(value) + 1, None),
        "lte": lambda: (None, math.floor(value)),
        "lt": lambda: (None, math.ceil(value) - 1),
        "between": lambda: (math.ceil(value[0]), math.floor(value[1])),
    }
    if operator == "eq" and float(value).is_integer():
        return int(value), int(value)
    return bounds[operator]() if operator in bounds else None


def _integral(value: Any) -> Any:
    """Whole numbers as ints (an integer column then compares without a decimal cast)."""
    if isinstance(value, list | tuple):
        return type(value)(_integral(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def compare(column: Any, kind: str, operator: str, raw: Any, now: datetime) -> ibis.BooleanValue:
    """``column <operator> value`` for a value type (values were checked by validation)."""
    if operator == "is_set":
        return column.notnull()
    if operator == "is_not_set":
        return column.isnull()
    if kind == "boolean":
        if column.type().is_string():
            return column == ("true" if operator == "is_true" else "false")
        return column if operator == "is_true" else ~column
    value = coerce(kind, operator, raw)
    if kind == "number" and column.type().is_integer():
        value = _integral(value)
    if kind in ("timestamp", "date"):
        return _compare_time(column, kind, operator, value, now)
    if kind == "string" and column.type().is_string():
        return _compare_text(column, operator, value)
    comparisons: dict[str, Callable[[], Any]] = {
        "eq": lambda: column == value,
        "ne": lambda: column != value,
        "gt": lambda: column > value,
        "gte": lambda: column >= value,
        "lt": lambda: column < value,
        "lte": lambda: column <= value,
        "between": lambda: column.between(value[0], value[1]),
        "in": lambda: column.isin(value),
        "not_in": lambda: ~column.isin(value),
    }
    if operator not in comparisons:
        return _compare_text(column.cast("string"), operator, str(value))
    result: ibis.BooleanValue = comparisons[operator]()
    return result


def _compare_text(column: Any, operator: str, value: Any) -> ibis.BooleanValue:
    comparisons: dict[str, Callable[[], Any]] = {
        "eq": lambda: column == value,
        "ne": lambda: column != value,
        "in": lambda: column.isin(value),
        "not_in": lambda: ~column.isin(value),
        "contains": lambda: column.contains(value),
        "not_contains": lambda: ~column.contains(value),
        "starts_with": lambda: column.startswith(value),
    }
    result: ibis.BooleanValue = comparisons[operator]()
    return result


def _compare_time(
    column: Any, kind: str, operator: str, value: Any, now: datetime
) -> ibis.BooleanValue:
    def literal(moment: datetime) -> Any:
        return ibis.literal(moment.date()) if kind == "date" else _ts(moment)

    if operator == "within_last_days":
        return (column > literal(now - timedelta(days=value))) & (column <= literal(now))
    if operator == "more_than_days_ago":
        return column <= literal(now - timedelta(days=value))
    if operator == "before":
        return column < literal(value)
    if operator == "after":
        return column > literal(value)
    low, high = value
    return (column >= literal(low)) & (column <= literal(high))
