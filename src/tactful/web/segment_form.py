"""The segment builder's form: a definition tree as named form fields and back, structural
edits (add, remove, nest), and the validator's node paths placed on the conditions.

Every node of the tree has a form id: the root group is ``n``, its children ``n.0``,
``n.1``, theirs ``n.1.0`` … The hidden field ``nodes`` lists the ids in document order and
each node's fields are named ``<id>.<field>`` (``n.1.0.operator``), so the tree is read
back from a plain form post. Values stay as typed (text) until the definition is built,
where they are converted by the type of what they compare; what cannot be converted is sent
as typed, so the validator names the field and the page keeps the text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tactful.segments.service import Catalogue
from tactful.web.ui import split_list, text, values

GROUP = "group"
CONDITION_KINDS = (
    ("attribute", "Profile attribute"),
    ("metric", "Metric"),
    ("event", "Event"),
    ("purchase", "Purchases"),
    ("message", "Messages"),
    ("consent", "Consent"),
    ("reachable", "Reachable"),
    ("segment", "Other segment"),
)
FIELDS: dict[str, tuple[str, ...]] = {
    "attribute": ("attribute", "operator", "value"),
    "metric": ("metric", "operator", "value"),
    "event": ("event", "aggregate", "property", "window_days", "operator", "value"),
    "purchase": (
        "measure",
        "category_ids",
        "product_ids",
        "store_ids",
        "channel",
        "window_days",
        "operator",
        "value",
    ),
    "message": (
        "action",
        "channel",
        "campaign_id",
        "journey_id",
        "topic",
        "window_days",
        "operator",
        "value",
    ),
    "consent": ("channel", "brand_id", "granted"),
    "reachable": ("channel", "brand_id", "via", "reachable"),
    "segment": ("segment_id", "member"),
}
NO_VALUE = frozenset({"is_set", "is_not_set", "is_true", "is_false"})
DAY_OPERATORS = frozenset({"within_last_days", "more_than_days_ago"})
AGGREGATES = ("count", "sum", "avg", "min", "max")
MEASURES = ("count", "amount", "quantity")
MESSAGE_ACTIONS = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "complained",
    "unsubscribed",
)
CHANNELS = ("email", "sms", "push", "viber", "telegram")


@dataclass
class Filter:
    """A condition on an event property."""

    property: str = ""
    operator: str = "eq"
    value: str = ""


@dataclass
class Draft:
    """A node of the tree being edited: a group (``all``/``any`` of its children) or a
    condition, either possibly negated; fields hold what was typed."""

    kind: str = GROUP
    join: str = "all"
    negate: bool = False
    fields: dict[str, str] = field(default_factory=dict)
    where: list[Filter] = field(default_factory=list)
    children: list[Draft] = field(default_factory=list)
    id: str = "n"
    path: str = "definition"  # where the node sits in the definition (set when built)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The node's number as people read it: ``n.1.0`` → ``2.1``."""
        parts = self.id.split(".")[1:]
        return ".".join(str(int(p) + 1) for p in parts) or "all"

    def walk(self) -> Iterator[Draft]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, node_id: str) -> Draft | None:
        return next((d for d in self.walk() if d.id == node_id), None)

    def parent_of(self, node_id: str) -> Draft | None:
        return next((d for d in self.walk() if any(c.id == node_id for c in d.children)), None)


def number(root: Draft, node_id: str = "n") -> Draft:
    """Give every node its form id from its place in the tree."""
    root.id = node_id
    for index, child in enumerate(root.children):
        number(child, f"{node_id}.{index}")
    return root


# -- from and to the form ---------------------------------------------------------------


def from_form(form: dict[str, Any]) -> Draft:
    """The tree a builder form describes."""
    ids = values(form, "nodes")
    found: dict[str, Draft] = {}
    root: Draft | None = None
    for node_id in ids:
        kind = text(form, f"{node_id}.kind") or GROUP
        draft = Draft(
            kind=kind,
            join="any" if text(form, f"{node_id}.join") == "any" else "all",
            negate=bool(text(form, f"{node_id}.negate")),
            fields={name: text(form, f"{node_id}.{name}") for name in FIELDS.get(kind, ())},
            id=node_id,
        )
        count = text(form, f"{node_id}.where_count")
        for k in range(int(count) if count.isdigit() else 0):
            draft.where.append(
                Filter(
                    text(form, f"{node_id}.where.{k}.property"),
                    text(form, f"{node_id}.where.{k}.operator") or "eq",
                    text(form, f"{node_id}.where.{k}.value"),
                )
            )
        parent = found.get(node_id.rpartition(".")[0])
        if parent is not None:
            parent.children.append(draft)
        elif root is None:
            root = draft
        found[node_id] = draft
    if root is None or root.kind != GROUP:
        root = Draft()
    return number(root)


def _typed_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_typed_text(v) for v in value)
    return str(value)


def from_definition(data: Any) -> Draft:
    """The tree of a stored definition (a root that is not an ``all``/``any`` group is put in
    one)."""
    draft = _draft(data)
    if draft.kind != GROUP:
        draft = Draft(children=[draft])
    return number(draft)


def _draft(data: Any) -> Draft:
    if isinstance(data, dict) and "not" in data:
        inner = _draft(data["not"])
        if inner.negate:  # a double negation keeps its inner node in a group
            return Draft(negate=True, children=[inner])
        inner.negate = True
        return inner
    if isinstance(data, dict) and ("all" in data or "any" in data):
        join = "all" if "all" in data else "any"
        return Draft(join=join, children=[_draft(c) for c in data[join]])
    kind = str(data.get("type", "attribute")) if isinstance(data, dict) else "attribute"
    body = data if isinstance(data, dict) else {}
    fields = {name: _typed_text(body.get(name)) for name in FIELDS.get(kind, ())}
    window = body.get("window") or {}
    fields["window_days"] = _typed_text(window.get("days")) if "window_days" in fields else ""
    for flag in ("granted", "member", "reachable"):
        if flag in fields and body.get(flag) is None:
            fields[flag] = "yes"
    where = [
        Filter(
            str(w.get("property", "")), str(w.get("operator", "eq")), _typed_text(w.get("value"))
        )
        for w in body.get("where") or []
    ]
    return Draft(
        kind=kind, fields={k: v for k, v in fields.items() if k in FIELDS[kind]}, where=where
    )


# -- the definition ---------------------------------------------------------------------


def _number(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw


def _typed(kind: str, raw: str) -> Any:
    return _number(raw) if kind == "number" else raw


def convert(kind: str, operator: str, raw: str) -> Any:
    """A typed value as the operator on a type compares it."""
    if operator in NO_VALUE:
        return None
    if operator in DAY_OPERATORS:
        return _number(raw)
    if operator in ("in", "not_in", "between"):
        return [_typed(kind, item) for item in split_list(raw)]
    if kind in ("timestamp", "date"):
        return raw
    return _typed(kind, raw)


def _window(raw: str) -> dict[str, Any] | None:
    return {"days": _number(raw)} if raw else None


def _condition(draft: Draft, catalogue: Catalogue) -> dict[str, Any]:
    f = draft.fields
    kind = draft.kind
    node: dict[str, Any] = {"type": kind}
    if kind == "attribute":
        type_ = catalogue.attributes.get(f["attribute"], "string")
        node.update(attribute=f["attribute"], operator=f["operator"])
        node["value"] = convert(type_, f["operator"], f["value"])
    elif kind == "metric":
        metric = next((m for m in catalogue.metrics if m.name == f["metric"]), None)
        type_ = metric.type if metric else "string"
        node.update(metric=f["metric"], operator=f["operator"])
        node["value"] = convert(type_, f["operator"], f["value"])
    elif kind == "event":
        properties = catalogue.events.get(f["event"], {})
        node.update(event=f["event"], aggregate=f["aggregate"] or "count")
        if node["aggregate"] != "count":
            node["property"] = f["property"] or None
        node["where"] = [
            {
                "property": w.property,
                "operator": w.operator,
                "value": convert(properties.get(w.property, "string"), w.operator, w.value),
            }
            for w in draft.where
        ]
    elif kind == "purchase":
        node["measure"] = f["measure"] or "count"
        for name in ("category_ids", "product_ids", "store_ids"):
            node[name] = split_list(f[name])
        if f["channel"]:
            node["channel"] = f["channel"]
    elif kind == "message":
        node["action"] = f["action"]
        for name in ("channel", "campaign_id", "journey_id", "topic"):
            if f[name]:
                node[name] = f[name]
    elif kind in ("consent", "reachable"):
        node.update(channel=f["channel"], brand_id=_number(f["brand_id"]))
        if kind == "consent":
            node["granted"] = f["granted"] != "no"
        else:
            node.update(via=f["via"] or "marketing", reachable=f["reachable"] != "no")
    elif kind == "segment":
        node.update(segment_id=_number(f["segment_id"]), member=f["member"] != "no")
    if kind in ("event", "purchase", "message"):
        window = _window(f["window_days"])
        if window is not None:
            node["window"] = window
        node.update(operator=f["operator"] or "gte", value=_number(f["value"]))
    return node


def definition(root: Draft, catalogue: Catalogue) -> dict[str, Any]:
    """The JSON definition of the tree; each node learns its path in it."""
    return _build(root, "definition", catalogue)


def _build(draft: Draft, path: str, catalogue: Catalogue) -> dict[str, Any]:
    if draft.negate:
        draft.path = f"{path}.not"
        return {"not": _inner(draft, catalogue)}
    draft.path = path
    return _inner(draft, catalogue)


def _inner(draft: Draft, catalogue: Catalogue) -> dict[str, Any]:
    if draft.kind == GROUP:
        return {
            draft.join: [
                _build(child, f"{draft.path}.{draft.join}[{i}]", catalogue)
                for i, child in enumerate(draft.children)
            ]
        }
    return _condition(draft, catalogue)


def _field_key(rest: str) -> str:
    """The form field a remainder of a problem's path names."""
    rest = rest.lstrip(".")
    if rest in ("", "all", "any", "not"):
        return "_"
    if rest.startswith("window"):
        return "window_days"
    if rest.startswith("where["):
        index, _, name = rest[len("where[") :].partition("]")
        return f"where.{index}.{name.lstrip('.') or 'property'}"
    return rest.split(".")[0].split("[")[0]


def place(root: Draft, problems: Sequence[dict[str, Any]]) -> list[str]:
    """Put each problem on the node its path names (the deepest that contains it); returns
    the problems no node contains. Call after :func:`definition`."""
    nodes = list(root.walk())
    unplaced: list[str] = []
    for problem in problems:
        where = str(problem.get("field", ""))
        reason = str(problem.get("reason", "invalid"))
        owners = [
            d for d in nodes if where == d.path or where.startswith((f"{d.path}.", f"{d.path}["))
        ]
        if not owners:
            unplaced.append(f"{where}: {reason}")
            continue
        owner = max(owners, key=lambda d: len(d.path))
        owner.errors.setdefault(_field_key(where[len(owner.path) :]), reason)
    return unplaced


# -- editing ----------------------------------------------------------------------------


def new_condition(
    kind: str, catalogue: Catalogue, brand_ids: Sequence[int], segment_ids: Sequence[int]
) -> Draft:
    """A condition of a kind with sensible first choices."""
    if kind == GROUP:
        return Draft(join="any")
    draft = Draft(kind=kind, fields=dict.fromkeys(FIELDS[kind], ""))
    fill(draft, catalogue, brand_ids, segment_ids)
    if kind in ("event", "purchase", "message"):
        draft.fields.update(operator="gte", value="1", window_days="30")
    return draft


def operators_for(draft: Draft, catalogue: Catalogue) -> list[str]:
    """The operators the node's subject takes."""
    f = draft.fields
    if draft.kind == "attribute":
        return catalogue.operators[catalogue.attributes.get(f.get("attribute", ""), "string")]
    if draft.kind == "metric":
        metric = next((m for m in catalogue.metrics if m.name == f.get("metric")), None)
        return catalogue.operators[metric.type if metric else "number"]
    return catalogue.aggregate_operators


def fill(
    draft: Draft, catalogue: Catalogue, brand_ids: Sequence[int], segment_ids: Sequence[int]
) -> None:
    """Choose a valid option where a choice is missing or no longer fits (after the kind,
    the attribute or the event changed); typed values stay as they are."""
    f = draft.fields
    for name in FIELDS.get(draft.kind, ()):
        f.setdefault(name, "")
    choices: dict[str, Sequence[str]] = {
        "attribute": list(catalogue.attributes),
        "metric": [m.name for m in catalogue.metrics],
        "event": list(catalogue.events),
        "aggregate": AGGREGATES,
        "measure": MEASURES,
        "action": MESSAGE_ACTIONS,
        "brand_id": [str(b) for b in brand_ids],
        "segment_id": [str(s) for s in segment_ids],
        "granted": ("yes", "no"),
        "member": ("yes", "no"),
        "reachable": ("yes", "no"),
        "via": ("marketing", "contact"),
    }
    if draft.kind in ("consent", "reachable"):
        choices["channel"] = CHANNELS
    for name, options in choices.items():
        if name in f and options and f[name] not in options:
            f[name] = options[0]
    if draft.kind in ("attribute", "metric", "event", "purchase", "message"):
        operators = operators_for(draft, catalogue)
        if f.get("operator") not in operators:
            f["operator"] = "eq" if "eq" in operators else operators[0]


def apply(
    root: Draft,
    op: str,
    catalogue: Catalogue,
    brand_ids: Sequence[int],
    segment_ids: Sequence[int],
) -> Draft:
    """Apply a builder button: ``add:<id>:<kind>``, ``remove:<id>``, ``addwhere:<id>`` or
    ``rmwhere:<id>:<k>``; then fix choices that no longer fit and renumber."""
    action, _, rest = op.partition(":")
    node_id, _, arg = rest.partition(":")
    target = root.find(node_id)
    if action == "add" and target is not None and target.kind == GROUP:
        target.children.append(new_condition(arg, catalogue, brand_ids, segment_ids))
    elif action == "remove" and node_id != root.id:
        parent = root.parent_of(node_id)
        if parent is not None:
            parent.children = [c for c in parent.children if c.id != node_id]
    elif action == "addwhere" and target is not None:
        properties = catalogue.events.get(target.fields.get("event", ""), {})
        target.where.append(Filter(property=next(iter(properties), "")))
    elif action == "rmwhere" and target is not None and arg.isdigit():
        del target.where[int(arg) : int(arg) + 1]
    for draft in root.walk():
        if draft.kind != GROUP:
            fill(draft, catalogue, brand_ids, segment_ids)
    return number(root)
