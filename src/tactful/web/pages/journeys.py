"""Journeys: the list; a new journey from a ready-made scenario; the graph drawn as boxes
level by level from the first step, each with its ways out and how many customers stand on
it, went through it and got its messages; a step's settings edited in a form (saved to the
draft, wrong values kept next to their field); publishing, with every problem shown on the
step it names; pausing, resuming and stopping."""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import SessionDep, api_router
from tactful.core.errors import NotFound, TactfulError, ValidationFailed
from tactful.journeys import service as journeys
from tactful.journeys.graph import exits, parse_graph
from tactful.journeys.models import DRAFT, LIVE, PAUSED, STOPPED, Journey
from tactful.messaging import service as messaging
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    redirect,
    render,
    split_list,
    text,
)

router = api_router()
STEP_PATH = re.compile(r"^graph\.steps\[(\d+)\](?:\.(\w+))?")
# the settings a step's form edits, by step type (the title for every type)
EDITABLE = {
    "wait": ("duration",),
    "wait_until": ("time",),
    "wait_for_event": ("timeout",),
    "send": ("template_id", "channels", "topic"),
    "call_task": ("template_id",),
}
ACTIONS = {"pause": journeys.pause, "resume": journeys.resume}


def _journey(session: SessionDep, viewer: Viewer, journey_id: int) -> Journey:
    """A journey of a brand the viewer works for (403 for another brand's)."""
    journey = journeys.get_journey(session, workspace_id=viewer.workspace_id, journey_id=journey_id)
    viewer.demand("journeys.edit", journey.brand_id)
    return journey


def levels(graph: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The draft's steps in rows: the first step, then the steps its ways out lead to, and so
    on (a step shows once, at its first row); steps nothing leads to come last."""
    parsed = parse_graph(graph)
    by_key = {s["key"]: s for s in graph.get("steps", [])}
    steps = {s.key: s for s in parsed.steps}
    rows: list[list[dict[str, Any]]] = []
    seen: set[str] = set()
    first = parsed.first
    todo: deque[tuple[str, int]] = deque()
    if first is not None and first in by_key:
        todo.append((first, 0))
        seen.add(first)
    while todo:
        key, depth = todo.popleft()
        while len(rows) <= depth:
            rows.append([])
        rows[depth].append(by_key[key])
        for _label, target in exits(steps[key]):
            if target is not None and target in by_key and target not in seen:
                seen.add(target)
                todo.append((target, depth + 1))
    rest = [s for k, s in by_key.items() if k not in seen]
    if rest:
        rows.append(rest)
    return rows


def ways_out(step: dict[str, Any]) -> list[tuple[str, str | None]]:
    """A step's labelled ways out (None: the journey ends there)."""
    parsed = parse_graph({"trigger": {"type": "api"}, "steps": [step]})
    found = []
    for way, target in exits(parsed.steps[0]):
        label = way
        if way.startswith("branches["):
            index = int(way[9:-1])
            label = step["branches"][index].get("label") or f"branch {index + 1}"
        elif way.startswith("variants["):
            label = f"variant {step['variants'][int(way[9:-1])]['key']}"
        found.append((label.replace("_", " "), target))
    return found


def summary(step: dict[str, Any], templates: dict[int, str]) -> str:
    """What a step does, in a few words."""
    kind = step["type"]
    if kind == "wait":
        return f"wait {step['duration']}"
    if kind == "wait_until":
        return "wait until " + " ".join(str(step.get(k)) for k in ("date", "time") if step.get(k))
    if kind == "wait_for_event":
        return f"wait for {step['event']['event']}, at most {step.get('timeout', '—')}"
    if kind in ("send", "call_task"):
        template = step.get("template_id")
        name = templates.get(template, f"template {template}") if template else "no message"
        channels = " → ".join(
            c["channel"] if isinstance(c, dict) else str(c) for c in step.get("channels", [])
        )
        return str(name) + (f" by {channels}" if channels else "")
    if kind == "branch":
        return f"{len(step.get('branches', []))} conditions and otherwise"
    if kind == "split":
        return ", ".join(f"{v['key']} {v['weight']}" for v in step.get("variants", []))
    if kind == "update_attribute":
        return f"set {step['attribute']}"
    if kind == "webhook":
        return f"POST {step['url']}"
    if kind == "exit":
        return f"leave ({step.get('reason', 'exit_step')})"
    return str(kind)


def step_problems(journey: Journey, errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Publishing's problems by the key of the step they name ("_" for the journey's)."""
    keys = [s.get("key") for s in journey.draft.get("steps", [])]
    found: dict[str, list[str]] = {}
    for error in errors:
        key = error.get("step")
        match = STEP_PATH.match(str(error.get("field", "")))
        if key is None and match and int(match.group(1)) < len(keys):
            key = keys[int(match.group(1))]
        found.setdefault(str(key) if key else "_", []).append(str(error["reason"]))
    return found


def _templates(session: SessionDep, viewer: Viewer, brand_id: int) -> dict[int, str]:
    return {
        t.id: t.name
        for t in messaging.list_templates(
            session, workspace_id=viewer.workspace_id, kind="message", brand_id=brand_id
        )
    }


@router.get("/journeys", include_in_schema=False)
def journey_list(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("journeys.edit")
    return _list(request, session, viewer, values_={}, errors={})


def _list(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    *,
    values_: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    return render(
        request,
        "journeys.html",
        viewer,
        status=status,
        journeys=[
            j
            for j in journeys.list_journeys(session, workspace_id=viewer.workspace_id)
            if viewer.can("journeys.edit", j.brand_id)
        ],
        scenarios=list(journeys.SCENARIOS.values()),
        brands={b.id: b.name for b in viewer.brands},
        values=values_,
        errors=errors,
    )


@router.post("/journeys", include_in_schema=False)
def journey_create(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """A draft journey from a ready-made scenario."""
    viewer.demand("journeys.edit")
    typed = {name: text(form, name) for name in ("scenario", "brand_id", "name")}
    brand_id = int_or_none(typed["brand_id"]) or viewer.brand(None).id
    viewer.demand("journeys.edit", brand_id)
    try:
        if typed["brand_id"] and brand_id not in {b.id for b in viewer.brands}:
            raise ValidationFailed("choose a brand of the workspace", field="brand_id")
        if len(typed["name"]) > 200:
            raise ValidationFailed("at most 200 characters", field="name")
        with attempt(session):
            journey = journeys.create_from_scenario(
                session,
                workspace_id=viewer.workspace_id,
                brand_id=brand_id,
                scenario=typed["scenario"],
                actor=viewer.actor,
                name=typed["name"] or None,
            )
    except TactfulError as exc:
        return _list(
            request,
            session,
            viewer,
            values_=typed,
            errors=errors_of(exc),
            status=exc.status_code if exc.status_code != 404 else 422,
        )
    return redirect(f"/journeys/{journey.id}?saved=1")


def _page(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    journey: Journey,
    *,
    problems: dict[str, list[str]] | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    stats = journeys.journey_stats(session, workspace_id=viewer.workspace_id, journey_id=journey.id)
    return render(
        request,
        "journey.html",
        viewer,
        status=status,
        journey=journey,
        rows=levels(journey.draft),
        ways_out=ways_out,
        summary=summary,
        templates=_templates(session, viewer, journey.brand_id),
        stats=stats,
        counts={s.key: s for s in stats.steps},
        versions=journeys.versions(
            session, workspace_id=viewer.workspace_id, journey_id=journey.id
        ),
        problems=problems or {},
        editable=EDITABLE,
        can_publish=viewer.can("journeys.publish", journey.brand_id),
        statuses={"draft": DRAFT, "live": LIVE, "paused": PAUSED, "stopped": STOPPED},
        notice=notice,
    )


@router.get("/journeys/{journey_id}", include_in_schema=False)
def journey_page(
    request: Request, session: SessionDep, viewer: ViewerDep, journey_id: int, saved: int = 0
) -> Response:
    viewer.demand("journeys.edit")
    journey = _journey(session, viewer, journey_id)
    notice = {
        1: "The journey is created as a draft.",
        2: "The step is saved to the draft.",
        3: "The draft is published.",
        4: "Done.",
    }.get(saved)
    return _page(request, session, viewer, journey, notice=notice)


def _step_values(step: dict[str, Any]) -> dict[str, str]:
    found = {"title": str(step.get("title") or "")}
    for name in EDITABLE.get(step["type"], ()):
        value = step.get(name)
        if name == "channels":
            found[name] = ", ".join(
                c["channel"] if isinstance(c, dict) else str(c) for c in value or []
            )
        else:
            found[name] = "" if value is None else str(value)
    return found


def _step(journey: Journey, key: str) -> tuple[int, dict[str, Any]]:
    for index, step in enumerate(journey.draft.get("steps", [])):
        if step.get("key") == key:
            return index, step
    raise NotFound(f"the journey has no step {key!r}", field="step")


def _step_form(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    journey: Journey,
    step: dict[str, Any],
    *,
    values_: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    return render(
        request,
        "journey_step.html",
        viewer,
        status=status,
        journey=journey,
        step=step,
        fields=EDITABLE.get(step["type"], ()),
        values=values_,
        errors=errors,
        template_options=[
            ("", "— none —"),
            *sorted(_templates(session, viewer, journey.brand_id).items()),
        ],
    )


@router.get("/journeys/{journey_id}/steps/{key}", include_in_schema=False)
def step_edit(
    request: Request, session: SessionDep, viewer: ViewerDep, journey_id: int, key: str
) -> Response:
    viewer.demand("journeys.edit")
    journey = _journey(session, viewer, journey_id)
    _index, step = _step(journey, key)
    return _step_form(
        request, session, viewer, journey, step, values_=_step_values(step), errors={}
    )


def _channels(typed: str, current: list[Any]) -> list[Any]:
    """Typed channel names, keeping each known channel's time-out and what it waits for."""
    known = {(c["channel"] if isinstance(c, dict) else str(c)): c for c in current}
    return [known.get(name, {"channel": name}) for name in split_list(typed)]


def _changed(step: dict[str, Any], typed: dict[str, str]) -> dict[str, Any]:
    changed = {**step, "title": typed["title"] or None}
    for name in EDITABLE.get(step["type"], ()):
        raw = typed[name]
        if name == "channels":
            changed[name] = _channels(raw, step.get("channels", []))
        elif name == "template_id":
            changed[name] = int_or_none(raw) if raw else None
            if raw and changed[name] is None:
                changed[name] = raw
        else:
            changed[name] = raw or None
    return {k: v for k, v in changed.items() if v is not None}


def _field_of(path: str) -> str:
    match = STEP_PATH.match(path)
    return (match.group(2) or "_") if match else "_"


@router.post("/journeys/{journey_id}/steps/{key}", include_in_schema=False)
def step_save(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
    journey_id: int,
    key: str,
) -> Response:
    """Save a step's settings to the draft (published versions never change)."""
    viewer.demand("journeys.edit")
    journey = _journey(session, viewer, journey_id)
    viewer.demand("journeys.edit", journey.brand_id)
    index, step = _step(journey, key)
    typed = {name: text(form, name) for name in ("title", *EDITABLE.get(step["type"], ()))}
    graph = {**journey.draft, "steps": list(journey.draft["steps"])}
    graph["steps"][index] = _changed(step, typed)
    try:
        with attempt(session):
            journeys.update_journey(
                session,
                workspace_id=viewer.workspace_id,
                journey_id=journey.id,
                graph=graph,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        session.refresh(journey)
        return _step_form(
            request,
            session,
            viewer,
            journey,
            step,
            values_=typed,
            errors=_placed(exc),
            status=exc.status_code,
        )
    return redirect(f"/journeys/{journey.id}?saved=2#step-{key}")


def _placed(exc: TactfulError) -> dict[str, str]:
    """The step form's errors by field, from the graph paths the service names."""
    problems = exc.errors if isinstance(exc, ValidationFailed) and exc.errors else None
    if not problems:
        return {"_": exc.message}
    found: dict[str, str] = {}
    for problem in problems:
        found.setdefault(_field_of(str(problem["field"])), str(problem["reason"]))
    return found


@router.post("/journeys/{journey_id}/publish", include_in_schema=False)
def journey_publish(
    request: Request, session: SessionDep, viewer: ViewerDep, journey_id: int
) -> Response:
    """Publish the draft as the next version, or show each problem on its step."""
    viewer.demand("journeys.publish")
    journey = _journey(session, viewer, journey_id)
    viewer.demand("journeys.publish", journey.brand_id)
    try:
        with attempt(session):
            journeys.publish(
                session, workspace_id=viewer.workspace_id, journey_id=journey.id, actor=viewer.actor
            )
    except TactfulError as exc:
        session.refresh(journey)
        errors = exc.errors if isinstance(exc, ValidationFailed) and exc.errors else None
        problems = step_problems(journey, errors) if errors else {"_": [exc.message]}
        return _page(request, session, viewer, journey, problems=problems, status=exc.status_code)
    return redirect(f"/journeys/{journey.id}?saved=3")


@router.post("/journeys/{journey_id}/{action}", include_in_schema=False)
def journey_status(
    request: Request, session: SessionDep, viewer: ViewerDep, journey_id: int, action: str
) -> Response:
    """Pause (nobody new enters), resume, or stop (everyone inside leaves)."""
    viewer.demand("journeys.publish")
    journey = _journey(session, viewer, journey_id)
    viewer.demand("journeys.publish", journey.brand_id)
    if action not in (*ACTIONS, "stop"):
        raise NotFound(f"there is no action {action!r}")
    try:
        with attempt(session):
            if action == "stop":
                journeys.stop(
                    session,
                    workspace_id=viewer.workspace_id,
                    journey_id=journey.id,
                    actor=viewer.actor,
                )
            else:
                ACTIONS[action](
                    session,
                    workspace_id=viewer.workspace_id,
                    journey_id=journey.id,
                    actor=viewer.actor,
                )
    except TactfulError as exc:
        session.refresh(journey)
        return _page(
            request, session, viewer, journey, problems={"_": [exc.message]}, status=exc.status_code
        )
    return redirect(f"/journeys/{journey.id}?saved=4")
