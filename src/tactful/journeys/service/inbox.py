"""Reading the events a journey reacts to: names as journeys match them, the order of events
and entries, goals, and the triggering event as templates see it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.journeys import store
from tactful.journeys.graph import PURCHASE_EVENT, Graph, matches
from tactful.journeys.models import JourneyInstance


def event_name(event: Any) -> str:
    """The name a journey matches an inbox row by (``$purchase`` for a sale receipt)."""
    if event.type == "purchase":
        return PURCHASE_EVENT if event.name == "sale" else f"{PURCHASE_EVENT}:{event.name}"
    return str(event.name or "")


def after_entry(instance: JourneyInstance, event: Any) -> bool:
    """Whether an inbox row came after the instance's entry (only those resume or convert)."""
    if instance.trigger_seq is not None:
        return int(event.seq) > instance.trigger_seq
    return clock.ensure_utc(event.occurred_at) >= instance.entered_at


def trigger_properties(instance: JourneyInstance) -> dict[str, Any]:
    """The properties of the event that let the instance in."""
    event = instance.context.get("event") or {}
    properties = event.get("properties") or {}
    return dict(properties) if isinstance(properties, dict) else {}


def items_of(name: str, properties: dict[str, Any]) -> list[Any]:
    """A cart's or receipt's items: Segment's ``products``, a receipt's ``lines``, or the one
    product an event is about."""
    for key in ("products", "lines", "items"):
        found = properties.get(key)
        if isinstance(found, list):
            return [item for item in found if isinstance(item, dict)]
    if "product_id" in properties and name != PURCHASE_EVENT:
        return [dict(properties)]
    return []


def event_context(event: Any) -> dict[str, Any]:
    """An inbox row as ``event`` in a template (``event.items`` are its items)."""
    name = event_name(event)
    properties = dict(event.properties or {})
    return {
        "name": name,
        "message_id": event.message_id,
        "occurred_at": clock.ensure_utc(event.occurred_at).isoformat(),
        "properties": properties,
        "items": items_of(name, properties),
    }


def goal_events(
    session: Session, graph: Graph, instances: Sequence[JourneyInstance], now: datetime
) -> list[tuple[JourneyInstance, Any]]:
    """Instances whose goal event arrived after they entered (looked up in the inbox)."""
    goal = graph.exit.goal
    if goal is None or not instances:
        return []
    rows = store.inbox_events(
        session,
        instances[0].workspace_id,
        sorted({i.customer_id for i in instances}),
        sorted({m.event for m in goal.events}),
        min(i.entered_at for i in instances),
    )
    by_customer: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if row.customer_id is not None and clock.ensure_utc(row.occurred_at) <= now:
            by_customer[row.customer_id].append(row)
    found = []
    for instance in instances:
        trigger = trigger_properties(instance)
        for row in by_customer.get(instance.customer_id, ()):
            name = event_name(row)
            if after_entry(instance, row) and any(
                matches(m, name=name, properties=row.properties, trigger=trigger)
                for m in goal.events
            ):
                found.append((instance, row))
                break
    return found
