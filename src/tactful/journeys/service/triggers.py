"""Who enters which journey, and when: events as they are resolved, segment entries and
exits, loyalty tier changes, date attributes (a monitor), and API calls. The same resolved
events resume customers waiting for them and convert goals; segment exits take customers out
of journeys that must not keep them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.journeys import store
from tactful.journeys.graph import (
    DateTrigger,
    EventTrigger,
    SegmentTrigger,
    TierTrigger,
    WaitForEventStep,
    matches,
)
from tactful.journeys.models import CRITERIA, LIVE, LIVE_STATUSES, WAITING, Journey
from tactful.journeys.service import steps
from tactful.journeys.service.engine import Entrant, EntryOutcome, Run, enter
from tactful.journeys.service.inbox import (
    after_entry,
    event_context,
    event_name,
    trigger_properties,
)

GOAL_LOOKBACK = timedelta(days=90)  # the longest a goal may convert a finished walk


@dataclass(frozen=True)
class TriggerOutcome:
    """What a trigger did."""

    entered: int
    refused: int
    resumed: int = 0
    converted: int = 0
    exited: int = 0


def _count(outcomes: Sequence[EntryOutcome]) -> tuple[int, int]:
    entered = sum(o.entered for o in outcomes)
    return entered, len(outcomes) - entered


# -- events ----------------------------------------------------------------------------------


def on_events(
    runtime: Runtime, session: Session, *, workspace_id: int, seq_from: int, seq_to: int
) -> TriggerOutcome:
    """A resolved batch of live events: customers enter event-triggered journeys, then the
    batch resumes those waiting for these events and converts goals."""
    rows = events.inbox_range(session, workspace_id=workspace_id, seq_from=seq_from, seq_to=seq_to)
    if not rows:
        return TriggerOutcome(0, 0)
    run = Run(runtime, session)
    outcomes: list[EntryOutcome] = []
    for journey in store.live_journeys(session, "event", workspace_id):
        assert journey.live_version is not None
        trigger = run.graph(journey.id, journey.live_version).trigger
        assert isinstance(trigger, EventTrigger)
        entrants = [
            Entrant(
                customer_id=int(row.customer_id or 0),
                entry_key=f"event:{row.message_id}",
                context={"event": event_context(row)},
                trigger_seq=row.seq,
            )
            for row in rows
            if matches(trigger, name=event_name(row), properties=row.properties)
        ]
        if entrants:
            outcomes.extend(enter(run, journey, entrants))
    resumed, converted, exited = _react(run, workspace_id, rows)
    entered, refused = _count(outcomes)
    return TriggerOutcome(entered, refused, resumed, converted, exited)


def _react(run: Run, workspace_id: int, rows: Sequence[Any]) -> tuple[int, int, int]:
    """Goals reached and awaited events arrived: convert, take out, resume."""
    by_customer: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_customer[int(row.customer_id)].append(row)
    candidates = store.customers_instances(
        run.session, workspace_id, sorted(by_customer), run.now - GOAL_LOOKBACK
    )
    resume = []
    converted = exited = 0
    for instance in candidates:
        graph = run.graph(instance.journey_id, instance.version)
        goal = graph.exit.goal
        trigger = trigger_properties(instance)
        for row in by_customer[instance.customer_id]:
            if not after_entry(instance, row):
                continue
            name = event_name(row)
            if goal is not None and any(
                matches(m, name=name, properties=row.properties, trigger=trigger)
                for m in goal.events
            ):
                if instance.status in LIVE_STATUSES:
                    instance.converted_at = row.occurred_at
                    run.exit(
                        instance,
                        "goal",
                        {"event": name, "message_id": row.message_id},
                        kind=CRITERIA,
                    )
                    exited += 1
                    converted += 1
                elif instance.finished_at is not None and (
                    instance.finished_at >= run.now - goal.within
                ):
                    instance.converted_at = row.occurred_at
                    instance.updated_at = run.now
                    converted += 1
                break
            if instance.status == WAITING and instance.wait_event == name:
                assert instance.step_key is not None
                step = graph.step(instance.step_key)
                if isinstance(step, WaitForEventStep) and matches(
                    step.event, name=name, properties=row.properties, trigger=trigger
                ):
                    run.resumed[instance.id] = ("event", {"message_id": row.message_id})
                    resume.append(instance)
                    break
    run.run(resume)
    return len(resume), converted, exited


# -- segments, tiers -------------------------------------------------------------------------


def on_segment(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    segment_id: int,
    refresh: int,
    entered: Sequence[int],
    exited: Sequence[int],
) -> TriggerOutcome:
    """A segment's refresh: customers enter journeys triggered by entering (or leaving) it,
    and leave journeys whose exit criteria name it."""
    run = Run(runtime, session)
    outcomes: list[EntryOutcome] = []
    for journey in store.live_journeys(session, "segment", workspace_id):
        assert journey.live_version is not None
        trigger = run.graph(journey.id, journey.live_version).trigger
        assert isinstance(trigger, SegmentTrigger)
        if trigger.segment_id != segment_id:
            continue
        ids = entered if trigger.on == "enter" else exited
        context: dict[str, Any] = {
            "event": {
                "name": "Segment Entered" if trigger.on == "enter" else "Segment Exited",
                "properties": {"segment_id": segment_id, "refresh": refresh},
                "items": [],
            }
        }
        outcomes.extend(
            enter(
                run,
                journey,
                [
                    Entrant(int(c), f"segment:{segment_id}:{refresh}:{trigger.on}", context)
                    for c in ids
                ],
            )
        )
    left = 0
    if exited:
        for instance in store.customers_instances(run.session, workspace_id, list(exited), run.now):
            if instance.status not in LIVE_STATUSES:
                continue
            if run.graph(instance.journey_id, instance.version).exit.left_segment == segment_id:
                run.exit(instance, "left_segment", {"segment_id": segment_id}, kind=CRITERIA)
                left += 1
        run.flush()
    entered_count, refused = _count(outcomes)
    return TriggerOutcome(entered_count, refused, exited=left)


def on_tier_change(
    runtime: Runtime, session: Session, *, payload: dict[str, Any]
) -> TriggerOutcome:
    """A loyalty tier change: the customer enters journeys triggered by it."""
    run = Run(runtime, session)
    outcomes: list[EntryOutcome] = []
    workspace_id = int(payload["workspace_id"])
    properties = {
        k: payload.get(k)
        for k in ("tier", "tier_name", "previous_tier", "direction", "reason", "program_id")
    }
    for journey in store.live_journeys(session, "tier_changed", workspace_id):
        assert journey.live_version is not None
        trigger = run.graph(journey.id, journey.live_version).trigger
        assert isinstance(trigger, TierTrigger)
        if trigger.to and payload.get("tier") not in trigger.to:
            continue
        if trigger.direction is not None and payload.get("direction") != trigger.direction:
            continue
        key = (
            f"tier:{payload.get('account_id')}:{payload.get('previous_tier')}>"
            f"{payload.get('tier')}:{payload.get('at')}"
        )
        context = {"event": {"name": "Loyalty Tier Changed", "properties": properties, "items": []}}
        outcomes.extend(enter(run, journey, [Entrant(int(payload["customer_id"]), key, context)]))
    entered, refused = _count(outcomes)
    return TriggerOutcome(entered, refused)


# -- dates -----------------------------------------------------------------------------------


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _suffix(target: date, yearly: bool) -> list[str]:
    if not yearly:
        return [target.isoformat()]
    found = [target.strftime("%m-%d")]
    if (target.month, target.day) == (2, 28) and not _leap(target.year):
        found.append("02-29")  # a 29 February date is celebrated on the 28th
    return found


def date_journeys(session: Session) -> list[Journey]:
    """Live journeys triggered by a date attribute (what the date monitor scans)."""
    return store.live_journeys(session, "date")


def scan_dates(runtime: Runtime, session: Session, *, journey_id: int) -> TriggerOutcome:
    """Customers whose date (less ``days_before``) is today in their time zone, and whose
    local time has reached the trigger's time, enter (once per date)."""
    journey = session.get(Journey, journey_id)
    if journey is None or journey.status != LIVE or journey.live_version is None:
        return TriggerOutcome(0, 0)
    run = Run(runtime, session)
    trigger = run.graph(journey.id, journey.live_version).trigger
    if not isinstance(trigger, DateTrigger):
        return TriggerOutcome(0, 0)
    fallback = steps.workspace_timezone(run, journey)
    # every calendar day some time zone is in now (UTC-12 … UTC+14)
    days = {(run.now + timedelta(hours=h)).date() for h in (-12, 0, 14)}
    offset = timedelta(days=trigger.days_before)
    suffixes = sorted({s for d in days for s in _suffix(d + offset, trigger.yearly)})
    entrants = []
    for customer_id, value, tz in store.dated_customers(
        session, journey.workspace_id, trigger.attribute, suffixes, trigger.yearly
    ):
        local = run.now.astimezone(steps.zone(tz, fallback))
        target = local.date() + offset
        found = value[5:10] if trigger.yearly else value[:10]
        if found not in _suffix(target, trigger.yearly):
            continue
        if local.time().replace(tzinfo=None) < trigger.at:
            continue
        entrants.append(
            Entrant(
                customer_id,
                f"date:{trigger.attribute}:{target.isoformat()}",
                {
                    "event": {
                        "name": "Date Reached",
                        "properties": {
                            "attribute": trigger.attribute,
                            "value": value,
                            "date": target.isoformat(),
                            "days_before": trigger.days_before,
                        },
                        "items": [],
                    }
                },
            )
        )
    entered, refused = _count(enter(run, journey, entrants))
    return TriggerOutcome(entered, refused)


# -- the API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiEntry:
    """One entry asked for over the API."""

    customer_id: int
    key: str | None = None
    data: dict[str, Any] | None = None


def enter_from_api(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    journey_id: int,
    entries: Sequence[ApiEntry],
) -> list[EntryOutcome]:
    """Customers enter a live journey on request (``key`` makes a repeated call harmless);
    unknown customers are refused one by one, the others enter."""
    journey = store.journey(session, workspace_id, journey_id)
    if journey is None:
        raise NotFound(f"journey {journey_id} does not exist", field="journey_id")
    if journey.status != LIVE:
        raise Conflict(f"journey {journey_id} is {journey.status}, not live", field="journey_id")
    if not entries:
        raise ValidationFailed("give at least one entry", field="entries")
    known = customers.customers_by_ids(
        session, workspace_id=workspace_id, customer_ids=[e.customer_id for e in entries]
    )
    outcomes: list[EntryOutcome] = []
    entrants: list[Entrant] = []
    for entry in entries:
        customer = known.get(entry.customer_id)
        if customer is None or customer.merged_into_id is not None:
            reason = "unknown_customer" if customer is None else "merged_customer"
            outcomes.append(EntryOutcome(entry.customer_id, False, reason))
            continue
        entrants.append(
            Entrant(
                entry.customer_id,
                f"api:{entry.key or uuid.uuid4().hex}",
                {
                    "event": {"name": "API Entry", "properties": entry.data or {}, "items": []},
                    "data": entry.data or {},
                },
            )
        )
    run = Run(runtime, session)
    by_customer = {o.customer_id: o for o in enter(run, journey, entrants)}
    by_customer.update({o.customer_id: o for o in outcomes})
    return [by_customer[e.customer_id] for e in entries]
