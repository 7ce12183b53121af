"""Checking a parsed definition against the workspace: names exist, operators fit the type,
values fit the operator, windows are not in the future, referenced segments exist and no
reference leads back (a cycle). Every problem is reported with the path of its node."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tactful.core import clock
from tactful.core.errors import ValidationFailed
from tactful.segments.definition import (
    AttributeCondition,
    ConsentCondition,
    EventCondition,
    MessageCondition,
    MetricCondition,
    PurchaseCondition,
    ReachableCondition,
    SegmentCondition,
    Window,
    walk,
)
from tactful.segments.sources import MetricInfo

# Profile fields every workspace has (columns of the warehouse's customer_profiles).
STANDARD_ATTRIBUTES = {
    "gender": "string",
    "birthday": "date",
    "age": "number",
    "city": "string",
    "locale": "string",
    "timezone": "string",
    "anonymous": "boolean",
    "is_test": "boolean",
    "has_email": "boolean",
    "has_phone": "boolean",
    "created_at": "timestamp",
    "last_seen_at": "timestamp",
}
# Catalog types of custom attributes as segments compare them.
CUSTOM_TYPES = {
    "boolean": "boolean",
    "number": "number",
    "list": "list",
    "date": "timestamp",
    "datetime": "timestamp",
    "string": "string",
    "object": "string",
}
_SET = {"is_set", "is_not_set"}
OPERATORS: dict[str, set[str]] = {
    "string": {"eq", "ne", "in", "not_in", "contains", "not_contains", "starts_with", *_SET},
    "number": {"eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", *_SET},
    "boolean": {"is_true", "is_false", *_SET},
    "timestamp": {"before", "after", "between", "within_last_days", "more_than_days_ago", *_SET},
    "date": {"before", "after", "between", "within_last_days", "more_than_days_ago", *_SET},
    "list": {"contains", "not_contains", *_SET},
}
AGGREGATE_OPERATORS = {"eq", "ne", "gt", "gte", "lt", "lte", "between"}
MAX_DEPTH = 20


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expects a number, got {value!r}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expects a non-empty text, got {value!r}")
    return value


def _moment(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return clock.ensure_utc(parsed)
    raise ValueError(f"expects a date or time in ISO 8601 (2026-03-01T00:00:00Z), got {value!r}")


def _days(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 36500:
        raise ValueError(f"expects a whole number of days above 0, got {value!r}")
    return value


def _pair(value: Any, convert: Callable[[Any], Any]) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expects two values [from, to]")
    low, high = convert(value[0]), convert(value[1])
    if low > high:
        raise ValueError("expects [from, to] with from ≤ to")
    return low, high


def coerce(kind: str, operator: str, value: Any, allowed: tuple[str, ...] = ()) -> Any:
    """The value an operator on a type compares with, or ValueError naming what is wrong."""
    if operator in _SET or operator in ("is_true", "is_false"):
        if value is not None:
            raise ValueError(f"{operator} takes no value")
        return None
    if kind in ("timestamp", "date"):
        if operator in ("within_last_days", "more_than_days_ago"):
            return _days(value)
        if operator == "between":
            return _pair(value, _moment)
        return _moment(value)
    if operator == "between":
        return _pair(value, _number)
    if operator in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise ValueError("expects a list of 1 to 1000 values")
        convert = _number if kind == "number" else _text
        values = [convert(v) for v in value]
        if allowed:
            _check_allowed(values, allowed)
        return values
    result = _number(value) if kind == "number" else _text(value)
    if allowed and operator in ("eq", "ne"):
        _check_allowed([result], allowed)
    return result


def _check_allowed(values: list[Any], allowed: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {list(allowed)}")


@dataclass
class Context:
    """What a definition is checked against."""

    attribute_types: Mapping[str, str]  # custom attributes (catalog types)
    metrics: Mapping[str, MetricInfo]
    events: Mapping[str, Mapping[str, str]]  # event name -> property -> catalog type
    brand_ids: set[int]
    definition_of: Callable[[int], Any | None]  # another segment's current definition
    segment_id: int | None = None  # the segment being defined (None while creating)
    now: datetime = field(default_factory=clock.now)


def attribute_type(name: str, custom: Mapping[str, str]) -> str | None:
    """The type segments compare an attribute as (None when unknown)."""
    if name in STANDARD_ATTRIBUTES:
        return STANDARD_ATTRIBUTES[name]
    if name in custom:
        return CUSTOM_TYPES.get(custom[name], "string")
    return None


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append({"field": path, "reason": reason})


def _comparison(
    errors: _Errors, path: str, kind: str, operator: str, value: Any, allowed: tuple[str, ...] = ()
) -> None:
    operators = OPERATORS[kind]
    if operator not in operators:
        errors.add(
            f"{path}.operator",
            f"{operator!r} does not apply to a {kind}; use one of {sorted(operators)}",
        )
        return
    try:
        coerce(kind, operator, value, allowed)
    except ValueError as exc:
        errors.add(f"{path}.value", f"{operator} {exc}")


def _aggregate(errors: _Errors, path: str, operator: str, value: Any) -> None:
    if operator not in AGGREGATE_OPERATORS:
        errors.add(
            f"{path}.operator",
            f"{operator!r} does not apply to a count or sum; use one of "
            f"{sorted(AGGREGATE_OPERATORS)}",
        )
        return
    try:
        coerce("number", operator, value)
    except ValueError as exc:
        errors.add(f"{path}.value", f"{operator} {exc}")


def _window(errors: _Errors, path: str, window: Window | None, now: datetime) -> None:
    if window is None or window.start is None:
        return
    if window.start > now:
        errors.add(f"{path}.window.start", "the window starts in the future")


def _property_type(name: str, properties: Mapping[str, str]) -> str:
    return CUSTOM_TYPES.get(properties.get(name, "string"), "string")


def _event(errors: _Errors, path: str, node: EventCondition, ctx: Context) -> None:
    properties = ctx.events.get(node.event)
    if properties is None:
        errors.add(f"{path}.event", f"no event {node.event!r} has been seen in this workspace")
        return
    if node.property is not None:
        if node.property not in properties:
            errors.add(
                f"{path}.property", f"event {node.event!r} has no property {node.property!r}"
            )
        elif _property_type(node.property, properties) != "number":
            errors.add(f"{path}.property", f"{node.aggregate} needs a numeric property")
    for index, condition in enumerate(node.where):
        where = f"{path}.where[{index}]"
        if condition.property not in properties:
            errors.add(
                f"{where}.property",
                f"event {node.event!r} has no property {condition.property!r}",
            )
            continue
        kind = _property_type(condition.property, properties)
        _comparison(errors, where, kind, condition.operator, condition.value)
    _window(errors, path, node.window, ctx.now)
    _aggregate(errors, path, node.operator, node.value)


def _references(errors: _Errors, path: str, node: SegmentCondition, ctx: Context) -> None:
    if ctx.segment_id is not None and node.segment_id == ctx.segment_id:
        errors.add(f"{path}.segment_id", "a segment cannot contain itself")
        return
    definition = ctx.definition_of(node.segment_id)
    if definition is None:
        errors.add(f"{path}.segment_id", f"segment {node.segment_id} does not exist")
        return
    # follow the referenced segments' own references: reaching this segment is a cycle
    trail = [node.segment_id]
    stack = [(definition, trail)]
    seen: set[int] = set()
    while stack:
        current, route = stack.pop()
        for _p, child in walk(current):
            if not isinstance(child, SegmentCondition):
                continue
            target = child.segment_id
            if ctx.segment_id is not None and target == ctx.segment_id:
                chain = " → ".join(str(i) for i in [ctx.segment_id, *route, target])
                errors.add(f"{path}.segment_id", f"the reference makes a cycle: {chain}")
                return
            if target in seen or len(route) > MAX_DEPTH:
                continue
            seen.add(target)
            nested = ctx.definition_of(target)
            if nested is not None:
                stack.append((nested, [*route, target]))


def check(definition: Any, ctx: Context) -> list[dict[str, str]]:
    """Every problem of a parsed definition, each with the path of its node."""
    errors = _Errors()
    for path, node in walk(definition):
        if path.count("[") + path.count(".not") > MAX_DEPTH:
            errors.add(path, f"definitions nest at most {MAX_DEPTH} levels")
            break
        if isinstance(node, AttributeCondition):
            kind = attribute_type(node.attribute, ctx.attribute_types)
            if kind is None:
                errors.add(f"{path}.attribute", f"unknown attribute {node.attribute!r}")
                continue
            allowed = ("f", "m") if node.attribute == "gender" else ()
            _comparison(errors, path, kind, node.operator, node.value, allowed)
        elif isinstance(node, MetricCondition):
            metric = ctx.metrics.get(node.metric)
            if metric is None:
                errors.add(f"{path}.metric", f"unknown metric {node.metric!r}")
                continue
            _comparison(errors, path, metric.type, node.operator, node.value, metric.values)
        elif isinstance(node, EventCondition):
            _event(errors, path, node, ctx)
        elif isinstance(node, PurchaseCondition | MessageCondition):
            _window(errors, path, node.window, ctx.now)
            _aggregate(errors, path, node.operator, node.value)
        elif isinstance(node, ConsentCondition | ReachableCondition):
            if node.brand_id not in ctx.brand_ids:
                errors.add(f"{path}.brand_id", f"brand {node.brand_id} does not exist")
        elif isinstance(node, SegmentCondition):
            _references(errors, path, node, ctx)
    return errors.items


def validate(definition: Any, ctx: Context) -> None:
    """Raise a 422 listing every problem of the definition (nothing is saved)."""
    problems = check(definition, ctx)
    if problems:
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in problems[:5]), errors=problems
        )
