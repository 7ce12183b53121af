"""What each kind of step does to a group of instances standing on it.

Every function gets the run, the version's graph, the step and the group, and leaves each
instance moved on (``run.move``), waiting (``run.wait``) or gone (``run.exit``). Side
effects are written in the run's transaction: deliveries through ``messaging.send`` (the
contact policy decides each one), profile changes, webhook jobs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from tactful.core.errors import NotFound, TactfulError
from tactful.customers import service as customers
from tactful.events.models import InboxEvent
from tactful.journeys import store
from tactful.journeys.graph import (
    BranchStep,
    CallTaskStep,
    ExitStep,
    Graph,
    SendStep,
    SplitStep,
    UpdateAttributeStep,
    WaitForEventStep,
    WaitStep,
    WaitUntilStep,
    WebhookStep,
    matches,
    property_value,
)
from tactful.journeys.models import FAILED_STEP, Journey, JourneyInstance
from tactful.journeys.service.inbox import after_entry, event_name, trigger_properties
from tactful.messaging import service as messaging
from tactful.messaging.schemas import SendRequest
from tactful.policy.schemas import ChannelStep
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy

if TYPE_CHECKING:
    from tactful.journeys.service.engine import Run

WEBHOOK_JOB = "journeys.webhook"
WEBHOOK_PURPOSE = "journeys.webhook"


def run_step(run: Run, graph: Graph, step: Any, group: list[JourneyInstance]) -> None:
    """Run one step for every instance of the group."""
    if isinstance(step, WaitStep):
        _wait(run, step, group)
    elif isinstance(step, WaitUntilStep):
        _wait_until(run, step, group)
    elif isinstance(step, WaitForEventStep):
        _wait_for_event(run, step, group)
    elif isinstance(step, BranchStep):
        _branch(run, step, group)
    elif isinstance(step, SplitStep):
        _split(run, step, group)
    elif isinstance(step, SendStep):
        _send(
            run,
            step,
            group,
            steps=tuple(
                ChannelStep(c.channel, timeout=c.timeout, wait_for=c.wait_for)
                for c in step.channels
            ),
            expires=step.expires_after,
            priority=step.priority,
        )
    elif isinstance(step, CallTaskStep):
        _send(run, step, group, steps=(ChannelStep("call"),), expires=None, priority=0)
    elif isinstance(step, UpdateAttributeStep):
        _update_attribute(run, step, group)
    elif isinstance(step, WebhookStep):
        _webhook(run, step, group)
    elif isinstance(step, ExitStep):
        for instance in group:
            run.exit(instance, step.reason, kind="exit")
    else:  # pragma: no cover - the graph's union lists every kind
        raise TypeError(f"unknown step {type(step).__name__}")


# -- time ----------------------------------------------------------------------------------


def zone(name: str | None, fallback: str) -> ZoneInfo:
    """A time zone by name, the fallback when it is unknown."""
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def workspace_timezone(run: Run, journey: Journey) -> str:
    return tenancy.get_workspace(run.session, journey.workspace_id).timezone


def local_day_start(run: Run, timezone: str) -> datetime:
    """Midnight of today in a time zone, as UTC."""
    local = run.now.astimezone(zone(timezone, "UTC"))
    return datetime.combine(local.date(), time(0), tzinfo=local.tzinfo).astimezone(UTC)


def customer_zones(run: Run, group: list[JourneyInstance]) -> dict[int, ZoneInfo]:
    fallback = workspace_timezone(run, run.journey(group[0].journey_id))
    names = store.timezones(run.session, [i.customer_id for i in group])
    return {i.customer_id: zone(names.get(i.customer_id), fallback) for i in group}


def next_moment(step: WaitUntilStep, tz: ZoneInfo, now: datetime) -> datetime:
    """The first moment at or after ``now`` the step waits for (a past date: itself)."""
    if step.date is not None:
        return datetime.combine(step.date, step.time or time(0), tzinfo=tz).astimezone(UTC)
    assert step.time is not None
    today = now.astimezone(tz).date()
    for days in range(8):
        day = today + timedelta(days=days)
        if step.weekdays and day.isoweekday() not in step.weekdays:
            continue
        moment = datetime.combine(day, step.time, tzinfo=tz).astimezone(UTC)
        if moment >= now:
            return moment
    raise AssertionError("a weekday recurs within a week")


# -- waits -----------------------------------------------------------------------------------


def _resumed(run: Run, instance: JourneyInstance) -> tuple[str, dict[str, Any] | None] | None:
    return run.resumed.get(instance.id)


def _wait(run: Run, step: WaitStep, group: list[JourneyInstance]) -> None:
    for instance in group:
        if _resumed(run, instance):
            run.move(instance, "wait", "waited", step.next)
        else:
            run.wait(instance, run.now + step.duration)


def _wait_until(run: Run, step: WaitUntilStep, group: list[JourneyInstance]) -> None:
    arriving = [i for i in group if not _resumed(run, i)]
    for instance in group:
        if _resumed(run, instance):
            run.move(instance, "wait_until", "waited", step.next)
    if not arriving:
        return
    zones = customer_zones(run, arriving)
    for instance in arriving:
        moment = next_moment(step, zones[instance.customer_id], run.now)
        if moment <= run.now:
            run.move(instance, "wait_until", "passed", step.next)
        else:
            run.wait(instance, moment)


def _wait_for_event(run: Run, step: WaitForEventStep, group: list[JourneyInstance]) -> None:
    arriving: list[JourneyInstance] = []
    for instance in group:
        cause = _resumed(run, instance)
        if cause is None:
            arriving.append(instance)
        elif cause[0] == "event":
            run.move(instance, "wait_for_event", "event", step.on_event, cause[1])
        else:
            run.move(instance, "wait_for_event", "timeout", step.on_timeout)
    # the event may have come already (a batch processed out of order): look back
    older = [i for i in arriving if i.id not in run.entered_now]
    happened: dict[int, InboxEvent] = {}
    if older:
        rows = store.inbox_events(
            run.session,
            older[0].workspace_id,
            sorted({i.customer_id for i in older}),
            [step.event.event],
            min(i.entered_at for i in older),
        )
        for instance in older:
            for row in rows:
                if (
                    row.customer_id == instance.customer_id
                    and after_entry(instance, row)
                    and matches(
                        step.event,
                        name=event_name(row),
                        properties=row.properties,
                        trigger=trigger_properties(instance),
                    )
                ):
                    happened[instance.id] = row
                    break
    assert step.timeout is not None  # publishing refuses a wait for an event without one
    for instance in arriving:
        earlier = happened.get(instance.id)
        if earlier is not None:
            run.move(
                instance,
                "wait_for_event",
                "event",
                step.on_event,
                {"message_id": earlier.message_id},
            )
        else:
            run.wait(instance, run.now + step.timeout, step.event.event)


# -- decisions ---------------------------------------------------------------------------------


def _branch(run: Run, step: BranchStep, group: list[JourneyInstance]) -> None:
    remaining = list(group)
    chosen: list[tuple[list[JourneyInstance], str, str | None]] = []
    try:
        if run.runtime is None:
            raise RuntimeError("branches need the warehouse (run them from a job)")
        for n, branch in enumerate(step.branches):
            if not remaining:
                break
            matched = segments.matching(
                run.runtime,
                run.session,
                workspace_id=remaining[0].workspace_id,
                definition=branch.condition,
                customer_ids=sorted({i.customer_id for i in remaining}),
            )
            hit = [i for i in remaining if i.customer_id in matched]
            remaining = [i for i in remaining if i.customer_id not in matched]
            chosen.append((hit, f"branch:{branch.label or n}", branch.next))
    except Exception as exc:  # the warehouse is down or busy: nothing moved, try later
        for instance in group:
            run.retry_later(instance, f"branch {step.key!r}: {type(exc).__name__}: {exc}")
        return
    chosen.append((remaining, "otherwise", step.otherwise))
    for instances, outcome, target in chosen:
        for instance in instances:
            run.move(instance, "branch", outcome, target)


def bucket(journey_id: int, step_key: str, customer_id: int) -> int:
    """A customer's stable position 0–99 for a split (the same in every version)."""
    digest = hashlib.blake2b(f"{journey_id}:{step_key}:{customer_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % 100


def variant_of(step: SplitStep, position: int) -> tuple[str, str | None]:
    """The variant (and its next step) a position falls in; ``holdout`` first."""
    if position < step.holdout:
        return "holdout", None
    edge = step.holdout
    for variant in step.variants:
        edge += variant.weight
        if position < edge:
            return variant.key, variant.next
    last = step.variants[-1]
    return last.key, last.next


def _split(run: Run, step: SplitStep, group: list[JourneyInstance]) -> None:
    for instance in group:
        name, target = variant_of(step, bucket(instance.journey_id, step.key, instance.customer_id))
        variants = dict(instance.context.get("variants") or {})
        variants[step.key] = name
        instance.context = {**instance.context, "variants": variants}
        if name == "holdout":
            run.exit(instance, "holdout", {"variant": name}, kind="split")
        else:
            run.move(instance, "split", f"variant:{name}", target, {"variant": name})


# -- effects -------------------------------------------------------------------------------


def message_context(run: Run, instance: JourneyInstance, step_key: str) -> dict[str, Any]:
    """What a template sees: the triggering event (``event.items`` is a cart's items), the
    journey, and data given at entry."""
    journey = run.journey(instance.journey_id)
    return {
        **(instance.context.get("data") or {}),
        "event": instance.context.get("event") or {},
        "journey": {
            "id": journey.id,
            "name": journey.name,
            "version": instance.version,
            "step": step_key,
            "variants": instance.context.get("variants") or {},
        },
    }


def _send(
    run: Run,
    step: SendStep | CallTaskStep,
    group: list[JourneyInstance],
    *,
    steps: tuple[ChannelStep, ...],
    expires: timedelta | None,
    priority: int,
) -> None:
    kind = "send" if isinstance(step, SendStep) else "call_task"
    journey = run.journey(group[0].journey_id)
    assert step.template_id is not None  # publishing refuses a send without a message
    # one policy call per dedupe key: a group shares one when it entered and moved alike
    batches: dict[str, list[JourneyInstance]] = defaultdict(list)
    for instance in group:
        key = f"journey:{journey.id}:{step.key}:e{instance.entry_no}:v{instance.visit}"
        batches[key].append(instance)
    for dedupe_key, members in batches.items():
        requests = [
            SendRequest(
                workspace_id=journey.workspace_id,
                brand_id=journey.brand_id,
                customer_id=instance.customer_id,
                template_id=step.template_id,
                message_class=step.message_class,
                source=f"journey:{journey.id}:v{instance.version}:step:{step.key}",
                steps=steps,
                context=message_context(run, instance, step.key),
                topic=step.topic,
                dedupe_key=dedupe_key,
                dedupe_window=timedelta(days=400),
                priority=priority,
                expires_at=run.now + expires if expires else None,
                reference={"journey_id": journey.id, "step": step.key},
            )
            for instance in members
        ]
        try:
            outcomes = messaging.send(run.session, requests, now=run.now)
        except TactfulError as exc:  # the template went away: refused before anything is written
            for instance in members:
                run.exit(instance, "error", {"error": exc.message}, kind=FAILED_STEP)
            continue
        for instance, outcome in zip(members, outcomes, strict=True):
            run.move(
                instance,
                kind,
                outcome.outcome,
                step.next,
                {
                    "delivery_id": outcome.delivery_id,
                    "reason": outcome.reason,
                    "channel": outcome.channel,
                },
            )


def _update_attribute(run: Run, step: UpdateAttributeStep, group: list[JourneyInstance]) -> None:
    journey = run.journey(group[0].journey_id)
    workspace = tenancy.get_workspace(run.session, journey.workspace_id)
    for instance in group:
        value = (
            property_value(trigger_properties(instance), step.value_from)
            if step.value_from
            else step.value
        )
        try:
            customers.update_profile(
                run.session,
                workspace=workspace,
                customer_id=instance.customer_id,
                traits={step.attribute: value},
                source="journey",
                actor=f"journey:{journey.id}",
            )
        except NotFound:
            run.exit(instance, "customer_gone", kind="update_attribute")
            continue
        run.move(instance, "update_attribute", "updated", step.next, {step.attribute: value})


def _webhook(run: Run, step: WebhookStep, group: list[JourneyInstance]) -> None:
    journey = run.journey(group[0].journey_id)
    for instance in group:
        key = f"journey-{instance.id}-{instance.visit}"
        body = orjson.dumps(
            {
                "idempotency_key": key,
                "journey": {"id": journey.id, "name": journey.name, "version": instance.version},
                "step": step.key,
                "instance_id": instance.id,
                "customer_id": instance.customer_id,
                "entered_at": instance.entered_at.isoformat(),
                "event": instance.context.get("event") or {},
                "variants": instance.context.get("variants") or {},
                "data": step.data,
                "sent_at": run.now.isoformat(),
            }
        ).decode()
        run.webhooks.append(
            (
                f"{WEBHOOK_JOB}:{instance.id}:{instance.visit}",
                {"url": step.url, "body": body, "idempotency_key": key, "instance_id": instance.id},
            )
        )
        run.move(instance, "webhook", "queued", step.next, {"url": step.url})
