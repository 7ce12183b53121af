"""The segment definition: a typed tree stored as JSON.

Combinators are keyed objects — ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` —
and conditions carry a ``type``: ``attribute``, ``metric``, ``event``, ``purchase``,
``message``, ``consent``, ``reachable`` or ``segment``. Structure and value shapes are
checked here; names, operators per type and references are checked against the workspace
in :mod:`tactful.segments.validation`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tactful.core.errors import ValidationFailed

MAX_WINDOW_DAYS = 3650
MESSAGE_ACTIONS = {
    "sent": "Message Sent",
    "delivered": "Message Delivered",
    "received": "Message Delivered",
    "opened": "Message Opened",
    "clicked": "Message Clicked",
    "bounced": "Message Bounced",
    "complained": "Message Complained",
    "unsubscribed": "Unsubscribed",
}
CHANNELS = ("email", "sms", "push", "viber", "telegram")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """Either the last ``days`` days before now, or an absolute ``start`` (and ``end``)."""

    days: int | None = Field(default=None, gt=0, le=MAX_WINDOW_DAYS)
    start: datetime | None = None
    end: datetime | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Window:
        if self.days is None and self.start is None:
            raise ValueError("a window gives either days (relative) or start (absolute)")
        if self.days is not None and (self.start is not None or self.end is not None):
            raise ValueError("a window is either relative (days) or absolute (start, end)")
        for moment in (self.start, self.end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("window times need a time zone offset, e.g. 2026-01-01T00:00:00Z")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("the window ends before it starts")
        return self


class Comparison(_Strict):
    """An operator and its value (which operators apply depends on the type compared)."""

    operator: str = Field(min_length=1, max_length=40)
    value: Any = None


class AttributeCondition(Comparison):
    """A profile field (gender, birthday, age, city …) or a custom attribute."""

    type: Literal["attribute"]
    attribute: str = Field(min_length=1, max_length=100)


class MetricCondition(Comparison):
    """A per-customer metric (see GET /v1/metrics)."""

    type: Literal["metric"]
    metric: str = Field(min_length=1, max_length=100)


class PropertyFilter(Comparison):
    """A condition on an event property."""

    property: str = Field(min_length=1, max_length=200)


class EventCondition(_Strict):
    """count / sum / avg / min / max of an event (optionally of a numeric property) in a window,
    over events whose properties pass ``where``."""

    type: Literal["event"]
    event: str = Field(min_length=1, max_length=200)
    aggregate: Literal["count", "sum", "avg", "min", "max"] = "count"
    property: str | None = Field(default=None, max_length=200)
    where: list[PropertyFilter] = Field(default_factory=list, max_length=20)
    window: Window | None = None
    operator: str = "gte"
    value: Any = 1

    @model_validator(mode="after")
    def _property_for_numbers(self) -> EventCondition:
        if self.aggregate != "count" and self.property is None:
            raise ValueError(f"aggregate {self.aggregate!r} needs the numeric property to use")
        return self


class PurchaseCondition(_Strict):
    """Receipts (count), money (amount, net of returns, minor units) or units (quantity) of
    purchases of products, categories or in stores, in a window."""

    type: Literal["purchase"]
    product_ids: list[str] = Field(default_factory=list, max_length=1000)
    category_ids: list[str] = Field(default_factory=list, max_length=1000)
    store_ids: list[str] = Field(default_factory=list, max_length=1000)
    channel: Literal["online", "offline"] | None = None
    measure: Literal["count", "amount", "quantity"] = "count"
    window: Window | None = None
    operator: str = "gte"
    value: Any = 1


class MessageCondition(_Strict):
    """Messages sent / received (delivered) / opened / clicked / bounced / complained, or
    unsubscribes, by campaign, journey, topic or channel, in a window."""

    type: Literal["message"]
    action: Literal[
        "sent",
        "delivered",
        "received",
        "opened",
        "clicked",
        "bounced",
        "complained",
        "unsubscribed",
    ]
    campaign_id: str | None = Field(default=None, max_length=100)
    journey_id: str | None = Field(default=None, max_length=100)
    topic: str | None = Field(default=None, max_length=64)
    channel: Literal["email", "sms", "push", "viber", "telegram"] | None = None
    window: Window | None = None
    operator: str = "gte"
    value: Any = 1

    @field_validator("campaign_id", "journey_id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ConsentCondition(_Strict):
    """Marketing consent (personal data + advertising) for a brand and channel."""

    type: Literal["consent"]
    channel: Literal["email", "sms", "push", "viber", "telegram"]
    brand_id: int
    granted: bool = True


class ReachableCondition(_Strict):
    """Reachable on a channel: ``marketing`` = consent and a usable contact (not bounced,
    complained or invalid); ``contact`` = a usable contact only (transactional messages)."""

    type: Literal["reachable"]
    channel: Literal["email", "sms", "push", "viber", "telegram"]
    brand_id: int
    via: Literal["marketing", "contact"] = "marketing"
    reachable: bool = True


class SegmentCondition(_Strict):
    """Membership (or not) of another segment, evaluated with its current definition."""

    type: Literal["segment"]
    segment_id: int
    member: bool = True


class AllNode(_Strict):
    all: list[Node] = Field(min_length=1, max_length=100)


class AnyNode(_Strict):
    any: list[Node] = Field(min_length=1, max_length=100)


class NotNode(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    not_: Node = Field(alias="not")


NODE_TAGS = (
    "all",
    "any",
    "not",
    "attribute",
    "metric",
    "event",
    "purchase",
    "message",
    "consent",
    "reachable",
    "segment",
)


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    tags: dict[type[BaseModel], str] = {AllNode: "all", AnyNode: "any", NotNode: "not"}
    return tags.get(type(value), getattr(value, "type", None))


Node = Annotated[
    Annotated[AllNode, Tag("all")]
    | Annotated[AnyNode, Tag("any")]
    | Annotated[NotNode, Tag("not")]
    | Annotated[AttributeCondition, Tag("attribute")]
    | Annotated[MetricCondition, Tag("metric")]
    | Annotated[EventCondition, Tag("event")]
    | Annotated[PurchaseCondition, Tag("purchase")]
    | Annotated[MessageCondition, Tag("message")]
    | Annotated[ConsentCondition, Tag("consent")]
    | Annotated[ReachableCondition, Tag("reachable")]
    | Annotated[SegmentCondition, Tag("segment")],
    Discriminator(
        _tag,
        custom_error_type="unknown_node",
        custom_error_message="a node is {all: […]}, {any: […]}, {not: {…}} or a condition "
        "whose type is one of " + ", ".join(NODE_TAGS[3:]),
    ),
]
Leaf = (
    AttributeCondition
    | MetricCondition
    | EventCondition
    | PurchaseCondition
    | MessageCondition
    | ConsentCondition
    | ReachableCondition
    | SegmentCondition
)
AllNode.model_rebuild()
AnyNode.model_rebuild()
NotNode.model_rebuild()
NODE: TypeAdapter[Any] = TypeAdapter(Node)


def error_path(loc: tuple[int | str, ...], root: str = "definition") -> str:
    """A pydantic location as a readable path (``definition.all[2].any[0].value``): the
    union tags pydantic inserts after each node position are dropped."""
    path = root
    expect_tag = True
    for part in loc:
        if expect_tag and isinstance(part, str) and part in NODE_TAGS:
            expect_tag = False
            continue
        expect_tag = False
        if isinstance(part, int):
            path += f"[{part}]"
            expect_tag = True
        else:
            path += f".{part}" if path else str(part)
            expect_tag = part == "not"
    return path


def parse(raw: Any, *, root: str = "definition") -> Any:
    """A definition from JSON-like data, or a 422 listing every offending node's path."""
    try:
        return NODE.validate_python(raw)
    except ValidationError as exc:
        errors = [
            {"field": error_path(tuple(e["loc"]), root), "reason": _reason(e)}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]),
            errors=errors,
        ) from exc


def _reason(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def dump(node: Any) -> dict[str, Any]:
    """The JSON form of a definition (what is stored)."""
    data: dict[str, Any] = NODE.dump_python(node, mode="json", by_alias=True, exclude_none=True)
    return data


def children(node: Any) -> list[tuple[str, Any]]:
    """A combinator's children with their path suffixes (empty for a condition)."""
    if isinstance(node, AllNode):
        return [(f".all[{i}]", child) for i, child in enumerate(node.all)]
    if isinstance(node, AnyNode):
        return [(f".any[{i}]", child) for i, child in enumerate(node.any)]
    if isinstance(node, NotNode):
        return [(".not", node.not_)]
    return []


def walk(node: Any, path: str = "definition") -> list[tuple[str, Any]]:
    """Every node with its path, parents first."""
    found = [(path, node)]
    for suffix, child in children(node):
        found.extend(walk(child, path + suffix))
    return found
