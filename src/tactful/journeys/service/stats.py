"""What a journey did: entered, where customers stand now, how they left, the messages each
step sent by status, split variants and conversions; and each customer's walks in their
timeline."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.customers.service import TimelineItem
from tactful.journeys import store
from tactful.journeys.graph import parse_graph
from tactful.journeys.models import COMPLETED, CRITERIA, EXITED, FAILED_STEP, LIVE_STATUSES
from tactful.journeys.service.journeys import get_journey

STEP_SOURCE = re.compile(r"^journey:\d+:v(\d+):step:(.+)$")


@dataclass
class StepStats:
    """One step: customers on it now, how often it was completed and with what outcome,
    its messages by delivery status, and its split variants."""

    key: str
    type: str | None
    now: int = 0
    completed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)


@dataclass
class JourneyStats:
    """A journey's counts (all versions together; ``versions`` splits entries)."""

    journey_id: int
    entered: int
    active: int
    completed: int
    exited: dict[str, int]
    conversions: int
    conversion_rate: float
    messages: dict[str, int]
    versions: dict[int, dict[str, int]]
    steps: list[StepStats]


def journey_stats(session: Session, *, workspace_id: int, journey_id: int) -> JourneyStats:
    """Entered, in each step now, exited by reason, messages by status, conversions."""
    journey = get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    live = (
        store.version(session, journey.id, journey.live_version)
        if journey.live_version is not None
        else None
    )
    graph = parse_graph(live.graph if live is not None else journey.draft)
    steps: dict[str, StepStats] = {s.key: StepStats(s.key, s.type) for s in graph.steps}

    def step(key: str) -> StepStats:
        return steps.setdefault(key, StepStats(key, None))

    entered = active = completed = conversions = 0
    exited: Counter[str] = Counter()
    versions: dict[int, dict[str, int]] = defaultdict(lambda: {"entered": 0, "active": 0})
    for version, status, key, reason, count, converted in store.instance_counts(
        session, journey.id
    ):
        entered += count
        conversions += converted
        versions[version]["entered"] += count
        if status in LIVE_STATUSES:
            active += count
            versions[version]["active"] += count
            if key is not None:
                step(key).now += count
        elif status == COMPLETED:
            completed += count
        elif status == EXITED:
            exited[reason or "unknown"] += count
    for key, kind, outcome, count in store.step_counts(session, journey.id):
        found = step(key)
        found.outcomes[outcome] = found.outcomes.get(outcome, 0) + count
        if kind not in (CRITERIA, FAILED_STEP):
            found.completed += count
        if outcome.startswith("variant:"):
            name = outcome.removeprefix("variant:")
            found.variants[name] = found.variants.get(name, 0) + count
        elif outcome == "exit:holdout":
            found.variants["holdout"] = found.variants.get("holdout", 0) + count
    messages: Counter[str] = Counter()
    for source, status, count in store.delivery_counts(session, workspace_id, journey.id):
        messages[status] += count
        match = STEP_SOURCE.match(source)
        if match:
            found = step(match.group(2))
            found.messages[status] = found.messages.get(status, 0) + count
    return JourneyStats(
        journey_id=journey.id,
        entered=entered,
        active=active,
        completed=completed,
        exited=dict(exited),
        conversions=conversions,
        conversion_rate=round(conversions / entered, 4) if entered else 0.0,
        messages=dict(messages),
        versions=dict(versions),
        steps=list(steps.values()),
    )


def timeline_instances(
    runtime: Runtime,
    session: Session,
    workspace_id: int,
    customer_ids: list[int],
    before: datetime | None,
    limit: int,
) -> list[TimelineItem]:
    """A customer's journeys in their timeline: each entry, and each walk's end."""
    del runtime
    items = []
    for instance, name in store.customer_history(session, workspace_id, customer_ids, limit):
        details: dict[str, Any] = {
            "journey_id": instance.journey_id,
            "version": instance.version,
            "instance_id": instance.id,
            "status": instance.status,
            "step": instance.step_key,
        }
        items.append(
            TimelineItem(
                at=instance.entered_at,
                kind="journey",
                title=f"Entered journey “{name}”",
                details=details,
                source="journeys",
            )
        )
        if instance.finished_at is not None:
            how = "Completed" if instance.status == COMPLETED else f"Left ({instance.exit_reason})"
            items.append(
                TimelineItem(
                    at=instance.finished_at,
                    kind="journey",
                    title=f"{how} journey “{name}”",
                    details={**details, "exit_reason": instance.exit_reason},
                    source="journeys",
                )
            )
    if before is not None:
        items = [i for i in items if i.at < before]
    return sorted(items, key=lambda i: i.at, reverse=True)[:limit]
