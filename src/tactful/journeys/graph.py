"""The journey graph: a trigger, steps joined by the keys of their next steps, exit criteria,
re-entry rules and entry caps — a typed tree stored as JSON.

Shapes are checked here (a draft may still be incomplete: a send step without a template, a
wait for an event without a time-out); :mod:`tactful.journeys.validation` refuses what
cannot run when the journey is published, naming the step.
"""

from __future__ import annotations

import datetime as dt
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tactful.core.errors import ValidationFailed

PURCHASE_EVENT = "$purchase"  # a sale receipt (POS or online), not a tracked event
KEY = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
MAX_STEPS = 200
MAX_WAIT = timedelta(days=366)
OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "exists",
    "not_exists",
)
CHANNELS = ("email", "sms", "push", "viber", "telegram", "webhook")
StepKey = Annotated[str, Field(pattern=KEY, examples=["send_reminder"])]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- matching events -----------------------------------------------------------------------


class PropertyFilter(_Strict):
    """A condition on an event property (``a.b`` reaches into nested objects)."""

    property: str = Field(min_length=1, max_length=200)
    operator: Literal[
        "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "exists", "not_exists"
    ] = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_shape(self) -> PropertyFilter:
        if self.operator in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"{self.operator} compares with a list of values")
        if self.operator in ("gt", "gte", "lt", "lte") and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float)
        ):
            raise ValueError(f"{self.operator} compares with a number")
        return self


class _EventFilter(_Strict):
    event: str = Field(min_length=1, max_length=200, examples=["Order Completed"])
    where: list[PropertyFilter] = Field(default_factory=list, max_length=20)


class EventMatch(_EventFilter):
    """An event by name (``$purchase`` for a sale receipt) whose properties pass ``where`` and
    equal the triggering event's properties named in ``same_as_trigger`` (the same cart)."""

    same_as_trigger: list[str] = Field(default_factory=list, max_length=5, examples=[["cart_id"]])


# -- triggers ------------------------------------------------------------------------------


class EventTrigger(_EventFilter):
    """A tracked event (or ``$purchase``) whose properties pass ``where``."""

    type: Literal["event"]


class SegmentTrigger(_Strict):
    """Entering (or leaving) a segment at its refresh."""

    type: Literal["segment"]
    segment_id: int
    on: Literal["enter", "exit"] = "enter"


class DateTrigger(_Strict):
    """A date attribute (``birthday`` or a custom date attribute): ``days_before`` it, at
    ``at`` in the customer's time zone; every year when ``yearly``."""

    type: Literal["date"]
    attribute: str = Field(default="birthday", min_length=1, max_length=100)
    days_before: int = Field(default=0, ge=0, le=365)
    at: dt.time = dt.time(10, 0)
    yearly: bool = True


class TierTrigger(_Strict):
    """A loyalty tier change (to one of ``to`` when given; up or down when given)."""

    type: Literal["tier_changed"]
    to: list[str] = Field(default_factory=list, max_length=20)
    direction: Literal["up", "down"] | None = None


class ApiTrigger(_Strict):
    """Entries come from ``POST /v1/journeys/{id}/entries`` only."""

    type: Literal["api"]


Trigger = Annotated[
    EventTrigger | SegmentTrigger | DateTrigger | TierTrigger | ApiTrigger,
    Field(discriminator="type"),
]


# -- steps ---------------------------------------------------------------------------------


class _Step(_Strict):
    key: StepKey
    title: str | None = Field(default=None, max_length=200)


class _Linear(_Step):
    # None ends the journey (the instance completes)
    next: StepKey | None = None


class WaitStep(_Linear):
    """Wait a fixed time (ISO 8601 duration such as ``PT2H`` or ``P3D``, or seconds)."""

    type: Literal["wait"]
    duration: timedelta

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0) or value > MAX_WAIT:
            raise ValueError("a wait lasts more than zero and at most 366 days")
        return value


class WaitUntilStep(_Linear):
    """Wait until a time of day (on given weekdays, 1 = Monday) and/or a date, in the
    customer's time zone; a moment already past lets the customer through at once."""

    type: Literal["wait_until"]
    time: dt.time | None = None
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(default_factory=list)
    date: dt.date | None = None

    @model_validator(mode="after")
    def _something(self) -> WaitUntilStep:
        if self.time is None and self.date is None:
            raise ValueError("wait_until needs a time of day, a date, or both")
        if self.weekdays and self.date is not None:
            raise ValueError("give weekdays or a date, not both")
        return self


class WaitForEventStep(_Step):
    """Wait for an event (``on_event``) or until ``timeout`` runs out (``on_timeout``)."""

    type: Literal["wait_for_event"]
    event: EventMatch
    timeout: timedelta | None = None
    on_event: StepKey | None = None
    on_timeout: StepKey | None = None

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and (value <= timedelta(0) or value > MAX_WAIT):
            raise ValueError("a time-out lasts more than zero and at most 366 days")
        return value


class Branch(_Strict):
    """Customers matching ``condition`` (a segment definition) go to ``next``."""

    condition: dict[str, Any]
    next: StepKey | None = None
    label: str | None = Field(default=None, max_length=100)


class BranchStep(_Step):
    """The first branch whose condition matches wins; the rest go to ``otherwise``."""

    type: Literal["branch"]
    branches: list[Branch] = Field(default_factory=list, max_length=20)
    otherwise: StepKey | None = None


class Variant(_Strict):
    key: StepKey
    weight: int = Field(ge=1, le=100)
    next: StepKey | None = None


class SplitStep(_Step):
    """An A/B/n split by a deterministic hash of customer and step; ``holdout`` per cent of
    customers leave the journey (and are recorded) as a control group."""

    type: Literal["split"]
    variants: list[Variant] = Field(default_factory=list, max_length=10)
    holdout: int = Field(default=0, ge=0, le=99)


class CascadeStep(_Strict):
    """One channel of a cascade: if not delivered (or read) within ``timeout``, the next."""

    channel: Literal["email", "sms", "push", "viber", "telegram", "webhook"]
    timeout: timedelta | None = None
    wait_for: Literal["delivered", "read"] = "delivered"


class SendStep(_Linear):
    """Send a message template through the contact policy, on one channel or a cascade."""

    type: Literal["send"]
    template_id: int | None = None
    channels: list[CascadeStep] = Field(default_factory=list, max_length=6)
    message_class: Literal["marketing", "service", "transactional"] = "marketing"
    topic: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=0, ge=-100, le=100)
    expires_after: timedelta | None = None

    @field_validator("channels", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"channel": v} if isinstance(v, str) else v for v in value]
        return value


class UpdateAttributeStep(_Linear):
    """Set a profile attribute (custom attributes need no schema change); ``value_from``
    copies a property of the triggering event instead of a fixed ``value``."""

    type: Literal["update_attribute"]
    attribute: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: Any = None
    value_from: str | None = Field(default=None, max_length=200)


class CallTaskStep(_Linear):
    """Put a call in the call-task list (a message on the ``call`` channel: its script is the
    template's ``call`` part), through the contact policy."""

    type: Literal["call_task"]
    template_id: int | None = None
    message_class: Literal["marketing", "service", "transactional"] = "service"
    topic: str | None = Field(default=None, max_length=64)


class WebhookStep(_Linear):
    """POST the instance (customer, trigger event, ``data``) as signed JSON to ``url``, from
    a job with retries and backoff; the customer moves on at once."""

    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2000)
    data: dict[str, Any] = Field(default_factory=dict)


class ExitStep(_Step):
    """Leave the journey here (recorded with ``reason``)."""

    type: Literal["exit"]
    reason: str = Field(default="exit_step", pattern=r"^[a-z0-9_]{1,40}$")


Step = Annotated[
    WaitStep
    | WaitUntilStep
    | WaitForEventStep
    | BranchStep
    | SplitStep
    | SendStep
    | UpdateAttributeStep
    | CallTaskStep
    | WebhookStep
    | ExitStep,
    Field(discriminator="type"),
]
STEP_TYPES = (
    "wait",
    "wait_until",
    "wait_for_event",
    "branch",
    "split",
    "send",
    "update_attribute",
    "call_task",
    "webhook",
    "exit",
)
WAITS = (WaitStep, WaitUntilStep, WaitForEventStep)


# -- the journey as a whole ----------------------------------------------------------------


class Goal(_Strict):
    """Reaching any of ``events`` after entering is a conversion: a customer inside leaves
    the journey at once (reason ``goal``); one who finished converts within ``within``."""

    events: list[EventMatch] = Field(min_length=1, max_length=10)
    within: timedelta = timedelta(days=7)


class ExitCriteria(_Strict):
    """Checked before every step: the goal was reached, or the customer left a segment."""

    goal: Goal | None = None
    left_segment: int | None = Field(
        default=None, description="exit when no longer a member of this segment"
    )


class Reentry(_Strict):
    """Whether a customer who was inside may enter again: ``never``, ``after`` ``days``
    since the previous entry, or ``always`` (once the previous walk has ended)."""

    mode: Literal["never", "after", "always"] = "never"
    days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _days(self) -> Reentry:
        if self.mode == "after" and self.days is None:
            raise ValueError("re-entry after some time needs days")
        return self


class Caps(_Strict):
    """At most ``total`` entries ever and ``per_day`` a day (the workspace's day)."""

    total: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


class Graph(_Strict):
    """A journey's trigger, steps (``start`` is the first, by default the first listed),
    exit criteria, re-entry rules and entry caps."""

    trigger: Trigger
    start: StepKey | None = None
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    exit: ExitCriteria = Field(default_factory=ExitCriteria)
    reentry: Reentry = Field(default_factory=Reentry)
    caps: Caps = Field(default_factory=Caps)

    @property
    def first(self) -> str | None:
        """The key of the step customers enter."""
        if self.start is not None:
            return self.start
        return self.steps[0].key if self.steps else None

    def step(self, key: str) -> Any:
        """The step with this key (a KeyError when there is none)."""
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)


GRAPH: TypeAdapter[Graph] = TypeAdapter(Graph)


def exits(step: Any) -> list[tuple[str, str | None]]:
    """The ways out of a step: ``(label, next key or None for the end)``."""
    if isinstance(step, ExitStep):
        return []
    if isinstance(step, WaitForEventStep):
        return [("on_event", step.on_event), ("on_timeout", step.on_timeout)]
    if isinstance(step, BranchStep):
        found: list[tuple[str, str | None]] = [
            (f"branches[{i}]", b.next) for i, b in enumerate(step.branches)
        ]
        return [*found, ("otherwise", step.otherwise)]
    if isinstance(step, SplitStep):
        return [(f"variants[{i}]", v.next) for i, v in enumerate(step.variants)]
    return [("next", step.next)]


TRIGGER_TYPES = ("event", "segment", "date", "tier_changed", "api")


def error_path(loc: tuple[int | str, ...], root: str = "graph") -> str:
    """A pydantic location as a readable path (``graph.steps[2].template_id``): the union
    tags pydantic inserts after a step's position and after ``trigger`` are dropped."""
    path = root
    expect_tag = False
    for part in loc:
        if expect_tag and part in (*STEP_TYPES, *TRIGGER_TYPES):
            expect_tag = False
            continue
        expect_tag = False
        if isinstance(part, int):
            path += f"[{part}]"
            expect_tag = True
        else:
            path += f".{part}"
            expect_tag = part == "trigger"
    return path


def parse_graph(raw: Any, *, root: str = "graph") -> Graph:
    """A graph from JSON-like data, or a 422 listing every offending field's path."""
    try:
        return GRAPH.validate_python(raw)
    except ValidationError as exc:
        errors = [
            {
                "field": error_path(tuple(e["loc"]), root),
                "reason": str(e.get("msg", "invalid")).removeprefix("Value error, "),
            }
            for e in exc.errors(include_url=False)
        ]
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]), errors=errors
        ) from exc


def dump_graph(graph: Graph) -> dict[str, Any]:
    """The JSON form of a graph (what is stored)."""
    data: dict[str, Any] = GRAPH.dump_python(graph, mode="json", exclude_none=True)
    return data


def property_value(properties: dict[str, Any], path: str) -> Any:
    """A property by dotted path (``a.b``; list positions as numbers), or None."""
    value: Any = properties
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and re.fullmatch(r"\d+", part) and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def passes(condition: PropertyFilter, properties: dict[str, Any]) -> bool:
    """Whether an event's properties pass one filter."""
    value = property_value(properties, condition.property)
    operator, wanted = condition.operator, condition.value
    if operator == "exists":
        return value is not None
    if operator == "not_exists":
        return value is None
    if operator in ("gt", "gte", "lt", "lte"):
        number = _number(value)
        if number is None:
            return False
        limit = float(wanted)
        return {
            "gt": number > limit,
            "gte": number >= limit,
            "lt": number < limit,
            "lte": number <= limit,
        }[operator]
    if operator == "contains":
        if isinstance(value, list):
            return wanted in value
        return isinstance(value, str) and str(wanted) in value
    same = _equal(value, wanted)
    if operator == "eq":
        return same
    if operator == "ne":
        return not same
    found = any(_equal(value, option) for option in wanted)
    return found if operator == "in" else not found


def _equal(value: Any, wanted: Any) -> bool:
    if value == wanted:
        return True
    # "42" from one source and 42 from another are the same property value
    a, b = _number(value), _number(wanted)
    if a is not None and b is not None and not isinstance(value, bool):
        return a == b
    return value is not None and wanted is not None and str(value) == str(wanted)


def matches(
    match: EventMatch | EventTrigger,
    *,
    name: str,
    properties: dict[str, Any],
    trigger: dict[str, Any] | None = None,
) -> bool:
    """Whether an event (by name and properties) is the one ``match`` describes; the
    triggering event's properties are compared for ``same_as_trigger``."""
    if name != match.event:
        return False
    if not all(passes(condition, properties) for condition in match.where):
        return False
    for key in getattr(match, "same_as_trigger", ()):
        ours = property_value((trigger or {}), key)
        if ours is None or not _equal(property_value(properties, key), ours):
            return False
    return True
