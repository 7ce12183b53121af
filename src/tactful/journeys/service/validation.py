"""What a journey must satisfy to be published, each problem naming its step: every step
reachable, every step with a way to the end, no branch without exits, no wait for an event
without a time-out, no send without a message, no cycle without a wait, and every template,
segment, condition and URL it names valid in the workspace."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from tactful.core.errors import NotFound, TactfulError, ValidationFailed
from tactful.customers import service as customers
from tactful.journeys.graph import (
    WAITS,
    BranchStep,
    CallTaskStep,
    DateTrigger,
    ExitStep,
    Graph,
    SegmentTrigger,
    SendStep,
    SplitStep,
    UpdateAttributeStep,
    WaitForEventStep,
    WebhookStep,
    exits,
)
from tactful.messaging import service as messaging
from tactful.segments import service as segments

# attributes that are identities: changing them may merge customers (the customer API does it)
IDENTITY_TRAITS = ("email", "phone", "loyalty_card")


@dataclass(frozen=True)
class Problem:
    """One reason a journey cannot be published."""

    field: str
    reason: str
    step: str | None = None

    def as_dict(self) -> dict[str, str]:
        found = {"field": self.field, "reason": self.reason}
        if self.step is not None:
            found["step"] = self.step
        return found


def structure(graph: Graph) -> list[Problem]:
    """Problems of the graph itself (no database needed)."""
    problems: list[Problem] = []
    if not graph.steps:
        return [Problem("graph.steps", "a journey needs at least one step")]
    index: dict[str, int] = {}
    for i, step in enumerate(graph.steps):
        if step.key in index:
            problems.append(
                Problem(f"graph.steps[{i}].key", f"step {step.key!r} is defined twice", step.key)
            )
        index.setdefault(step.key, i)
    first = graph.first
    if first not in index:
        problems.append(Problem("graph.start", f"the start step {first!r} does not exist"))
        return problems
    edges: dict[str, list[str]] = defaultdict(list)
    ends: set[str] = set()
    for i, step in enumerate(graph.steps):
        where = f"graph.steps[{i}]"
        for label, target in exits(step):
            if target is None:
                ends.add(step.key)
            elif target not in index:
                problems.append(
                    Problem(
                        f"{where}.{label}",
                        f"step {step.key!r} leads to {target!r}, which is not a step",
                        step.key,
                    )
                )
            else:
                edges[step.key].append(target)
        if isinstance(step, ExitStep):
            ends.add(step.key)
        problems.extend(_step_rules(step, where))
    reachable = _reach(first, edges)
    for i, step in enumerate(graph.steps):
        if step.key not in reachable:
            problems.append(
                Problem(
                    f"graph.steps[{i}]",
                    f"step {step.key!r} is unreachable: no path from the start leads to it",
                    step.key,
                )
            )
    problems.extend(_dead_ends(graph, edges, ends, reachable))
    problems.extend(_cycles_without_wait(graph, edges))
    return problems


def _step_rules(step: Any, where: str) -> list[Problem]:
    key = step.key
    if isinstance(step, BranchStep) and not step.branches:
        return [
            Problem(
                f"{where}.branches",
                f"branch {key!r} has no exits: give at least one condition with its next "
                "step (and where the others go in otherwise)",
                key,
            )
        ]
    if isinstance(step, SplitStep):
        if not step.variants:
            return [Problem(f"{where}.variants", f"split {key!r} has no variants", key)]
        total = sum(v.weight for v in step.variants) + step.holdout
        names = [v.key for v in step.variants]
        if len(set(names)) != len(names):
            return [Problem(f"{where}.variants", f"split {key!r} names a variant twice", key)]
        if total != 100:
            return [
                Problem(
                    f"{where}.variants",
                    f"split {key!r}: the variants' weights and the holdout add up to {total}, "
                    "not 100",
                    key,
                )
            ]
    if isinstance(step, WaitForEventStep) and step.timeout is None:
        return [
            Problem(
                f"{where}.timeout",
                f"step {key!r} waits for {step.event.event!r} without a timeout: the event may "
                "never come",
                key,
            )
        ]
    if isinstance(step, SendStep | CallTaskStep) and step.template_id is None:
        kind = "send" if isinstance(step, SendStep) else "call task"
        return [
            Problem(
                f"{where}.template_id", f"{kind} step {key!r} has no message (template_id)", key
            )
        ]
    if isinstance(step, SendStep) and not step.channels:
        return [Problem(f"{where}.channels", f"send step {key!r} names no channel", key)]
    if isinstance(step, WebhookStep):
        parts = urlsplit(step.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return [
                Problem(f"{where}.url", f"webhook {key!r} needs an http(s) URL with a host", key)
            ]
    if isinstance(step, UpdateAttributeStep) and step.attribute in IDENTITY_TRAITS:
        return [
            Problem(
                f"{where}.attribute",
                f"step {key!r} cannot change {step.attribute!r}: contacts change through the "
                "customer API (they may merge customers)",
                key,
            )
        ]
    return []


def _reach(start: str, edges: dict[str, list[str]]) -> set[str]:
    seen = {start}
    todo = deque([start])
    while todo:
        for target in edges.get(todo.popleft(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _dead_ends(
    graph: Graph, edges: dict[str, list[str]], ends: set[str], reachable: set[str]
) -> list[Problem]:
    """Steps from which no path ever leaves the journey (customers would circle forever)."""
    backwards: dict[str, list[str]] = defaultdict(list)
    for source, targets in edges.items():
        for target in targets:
            backwards[target].append(source)
    leaving: set[str] = set()
    for end in ends:
        leaving |= _reach(end, backwards)
    return [
        Problem(
            f"graph.steps[{i}]",
            f"no path from step {step.key!r} ever leaves the journey",
            step.key,
        )
        for i, step in enumerate(graph.steps)
        if step.key in reachable and step.key not in leaving
    ]


def _cycles_without_wait(graph: Graph, edges: dict[str, list[str]]) -> list[Problem]:
    """A cycle whose steps are all immediate would run forever in one go."""
    waits = {s.key for s in graph.steps if isinstance(s, WAITS)}
    position = {s.key: i for i, s in enumerate(graph.steps)}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    found: list[Problem] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in edges.get(node, ()):
            if target in waits:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target) :]
                found.append(
                    Problem(
                        f"graph.steps[{position[target]}]",
                        "steps "
                        + " → ".join(repr(k) for k in [*cycle, target])
                        + " form a cycle without a wait",
                        target,
                    )
                )
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for step in graph.steps:
        if step.key not in waits and step.key not in state:
            visit(step.key, [step.key])
    return found


def references(
    session: Session, *, workspace_id: int, brand_id: int, graph: Graph
) -> list[Problem]:
    """Problems with what the graph names in the workspace: templates, segments, branch
    conditions, date attributes."""
    problems: list[Problem] = []
    trigger = graph.trigger
    if isinstance(trigger, SegmentTrigger):
        problems.extend(_segment(session, workspace_id, trigger.segment_id, "graph.trigger"))
    if isinstance(trigger, DateTrigger) and trigger.attribute != "birthday":
        known = {
            a.name: a.type for a in customers.attribute_catalog(session, workspace_id=workspace_id)
        }
        if trigger.attribute not in known:
            problems.append(
                Problem(
                    "graph.trigger.attribute",
                    f"no customer has the attribute {trigger.attribute!r}",
                )
            )
    if graph.exit.left_segment is not None:
        problems.extend(
            _segment(session, workspace_id, graph.exit.left_segment, "graph.exit.left_segment")
        )
    for i, step in enumerate(graph.steps):
        where = f"graph.steps[{i}]"
        if isinstance(step, SendStep | CallTaskStep) and step.template_id is not None:
            channels: list[str] = (
                [str(c.channel) for c in step.channels] if isinstance(step, SendStep) else ["call"]
            )
            problems.extend(
                _template(
                    session, workspace_id, brand_id, step.key, step.template_id, channels, where
                )
            )
        if isinstance(step, BranchStep):
            for n, branch in enumerate(step.branches):
                field = f"{where}.branches[{n}].condition"
                try:
                    segments.check_definition(
                        session, workspace_id=workspace_id, definition=branch.condition
                    )
                except ValidationFailed as exc:
                    for error in exc.errors or [{"field": "definition", "reason": exc.message}]:
                        path = field + error["field"].removeprefix("definition")
                        problems.append(
                            Problem(path, f"branch {step.key!r}: {error['reason']}", step.key)
                        )
                except TactfulError as exc:
                    problems.append(Problem(field, f"branch {step.key!r}: {exc.message}", step.key))
    return problems


def _segment(session: Session, workspace_id: int, segment_id: int, field: str) -> list[Problem]:
    try:
        segments.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    except NotFound:
        return [Problem(field, f"segment {segment_id} does not exist")]
    return []


def _template(
    session: Session,
    workspace_id: int,
    brand_id: int,
    key: str,
    template_id: int,
    channels: list[str],
    where: str,
) -> list[Problem]:
    try:
        template = messaging.get_template(
            session, workspace_id=workspace_id, template_id=template_id
        )
    except NotFound:
        return [
            Problem(
                f"{where}.template_id", f"step {key!r}: template {template_id} does not exist", key
            )
        ]
    if template.kind != "message" or template.brand_id != brand_id:
        return [
            Problem(
                f"{where}.template_id",
                f"step {key!r}: template {template_id} is not a message of the journey's brand",
                key,
            )
        ]
    missing = [c for c in channels if c not in template.parts]
    if missing:
        return [
            Problem(
                f"{where}.template_id",
                f"step {key!r}: template {template_id} has no {', '.join(missing)} part",
                key,
            )
        ]
    return []


def check(session: Session, *, workspace_id: int, brand_id: int, graph: Graph) -> list[Problem]:
    """Every problem that stops a graph from being published (empty when it may be)."""
    problems = structure(graph)
    problems.extend(references(session, workspace_id=workspace_id, brand_id=brand_id, graph=graph))
    return problems


def refuse(problems: list[Problem]) -> None:
    """Raise a 422 listing the problems (each naming its step), if there are any."""
    if problems:
        raise ValidationFailed(
            "the journey cannot be published: " + "; ".join(p.reason for p in problems[:5]),
            errors=[p.as_dict() for p in problems],
        )
