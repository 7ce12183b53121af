"""A definition in plain language, for people and for the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tactful.segments.definition import (
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
)

_OPERATORS = {
    "eq": "is",
    "ne": "is not",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "is_set": "is known",
    "is_not_set": "is unknown",
    "is_true": "is yes",
    "is_false": "is no",
    "before": "is before",
    "after": "is after",
    "within_last_days": "was in the last",
    "more_than_days_ago": "was more than",
}
_COUNTS = {
    "eq": "exactly",
    "ne": "not",
    "gt": "more than",
    "gte": "at least",
    "lt": "fewer than",
    "lte": "at most",
}


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, str):
        return f"“{value}”"
    return str(value)


def _comparison(subject: str, operator: str, value: Any) -> str:
    if operator == "between":
        return f"{subject} is between {_value(value[0])} and {_value(value[1])}"
    if operator == "within_last_days":
        return f"{subject} was in the last {value} days"
    if operator == "more_than_days_ago":
        return f"{subject} was more than {value} days ago"
    words = _OPERATORS.get(operator, operator)
    return f"{subject} {words}" + ("" if value is None else f" {_value(value)}")


def _count(noun: str, operator: str, value: Any) -> str:
    if operator == "between":
        return f"between {_value(value[0])} and {_value(value[1])} {noun}"
    return f"{_COUNTS.get(operator, operator)} {_value(value)} {noun}"


def _window(window: Window | None) -> str:
    if window is None:
        return "ever"
    if window.days is not None:
        return f"in the last {window.days} days"
    assert window.start is not None
    start = window.start.isoformat()
    return f"since {start}" if window.end is None else f"from {start} to {window.end.isoformat()}"


def render(node: Any, segment_name: Callable[[int], str] | None = None, depth: int = 0) -> str:
    """The definition as one readable sentence (nested groups in brackets)."""
    name_of = segment_name or (lambda i: f"segment {i}")

    def group(parts: list[Any], joiner: str) -> str:
        text = f" {joiner} ".join(render(p, name_of, depth + 1) for p in parts)
        return f"({text})" if depth and len(parts) > 1 else text

    if isinstance(node, AllNode):
        return group(node.all, "and")
    if isinstance(node, AnyNode):
        return group(node.any, "or")
    if isinstance(node, NotNode):
        return f"not {render(node.not_, name_of, depth + 1)}"
    if isinstance(node, AttributeCondition):
        return _comparison(node.attribute.replace("_", " "), node.operator, node.value)
    if isinstance(node, MetricCondition):
        return _comparison(node.metric.replace("_", " "), node.operator, node.value)
    if isinstance(node, EventCondition):
        what = (
            f"“{node.event}” events"
            if node.aggregate == "count"
            else f"{node.aggregate} of {node.property} over “{node.event}” events"
        )
        where = " and ".join(_comparison(f.property, f.operator, f.value) for f in node.where)
        filters = f" where {where}" if where else ""
        if node.aggregate == "count":
            return f"did {_count(what, node.operator, node.value)}{filters} {_window(node.window)}"
        return f"{_comparison(what + filters, node.operator, node.value)} {_window(node.window)}"
    if isinstance(node, PurchaseCondition):
        scope = []
        for label, values in (
            ("products", node.product_ids),
            ("categories", node.category_ids),
            ("stores", node.store_ids),
        ):
            if values:
                scope.append(f"{label} {_value(values)}")
        if node.channel:
            scope.append(f"{node.channel}")
        of = f" of {' in '.join(scope)}" if scope else ""
        noun = {"count": "purchases", "amount": "spent (minor units)", "quantity": "units"}[
            node.measure
        ]
        return f"made {_count(noun, node.operator, node.value)}{of} {_window(node.window)}"
    if isinstance(node, MessageCondition):
        about = [
            f"{label} {_value(value)}"
            for label, value in (
                ("campaign", node.campaign_id),
                ("journey", node.journey_id),
                ("topic", node.topic),
                ("channel", node.channel),
            )
            if value is not None
        ]
        by = f" ({', '.join(about)})" if about else ""
        noun = "unsubscribes" if node.action == "unsubscribed" else f"messages {node.action}"
        return f"has {_count(noun, node.operator, node.value)}{by} {_window(node.window)}"
    if isinstance(node, ConsentCondition):
        state = "gave" if node.granted else "did not give"
        return f"{state} marketing consent for {node.channel} to brand {node.brand_id}"
    if isinstance(node, ReachableCondition):
        how = "for marketing" if node.via == "marketing" else "by a usable contact"
        state = "is" if node.reachable else "is not"
        return f"{state} reachable on {node.channel} {how} (brand {node.brand_id})"
    if isinstance(node, SegmentCondition):
        state = "is" if node.member else "is not"
        return f"{state} in {name_of(node.segment_id)}"
    raise TypeError(f"cannot render {type(node).__name__}")
