"""Journeys as marketers manage them: drafts, validation, publishing immutable versions,
pausing, resuming and stopping, and reading instances and their step history."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.journeys import store
from tactful.journeys.graph import dump_graph, parse_graph
from tactful.journeys.models import (
    DRAFT,
    LIVE,
    PAUSED,
    STOPPED,
    Journey,
    JourneyInstance,
    JourneyStepLog,
    JourneyVersion,
)
from tactful.journeys.service import validation
from tactful.journeys.service.validation import Problem
from tactful.tenancy import service as tenancy


def _audit(session: Session, journey: Journey, actor: str, action: str, **details: Any) -> None:
    tenancy.record_audit(
        session,
        workspace_id=journey.workspace_id,
        actor=actor,
        action=f"journey.{action}",
        target_type="journey",
        target_id=journey.id,
        brand_id=journey.brand_id,
        details={"name": journey.name, **details},
    )


def create_journey(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    name: str,
    graph: Any,
    actor: str,
    description: str | None = None,
    scenario: str | None = None,
) -> Journey:
    """Create a draft journey (its graph's shape is checked; publishing checks the rest)."""
    parsed = parse_graph(graph)
    tenancy.get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    if store.by_name(session, workspace_id, name) is not None:
        raise Conflict(f"a journey named {name!r} already exists", field="name")
    now = clock.now()
    journey = Journey(
        workspace_id=workspace_id,
        brand_id=brand_id,
        name=name,
        description=description,
        status=DRAFT,
        draft=dump_graph(parsed),
        scenario=scenario,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    session.flush()
    _audit(session, journey, actor, "created", scenario=scenario)
    return journey


def get_journey(
    session: Session, *, workspace_id: int, journey_id: int, lock: bool = False
) -> Journey:
    """A journey of the workspace, or 404."""
    journey = store.journey(session, workspace_id, journey_id, lock=lock)
    if journey is None:
        raise NotFound(f"journey {journey_id} does not exist", field="journey_id")
    return journey


def list_journeys(
    session: Session, *, workspace_id: int, status: str | None = None
) -> list[Journey]:
    """The workspace's journeys, oldest first."""
    return store.journeys(session, workspace_id, status)


def update_journey(
    session: Session,
    *,
    workspace_id: int,
    journey_id: int,
    actor: str,
    name: str | None = None,
    description: str | None = None,
    graph: Any | None = None,
) -> Journey:
    """Change the draft (and the name or description). Published versions never change:
    publish the draft to make it the version new customers enter."""
    journey = get_journey(session, workspace_id=workspace_id, journey_id=journey_id, lock=True)
    if journey.status == STOPPED:
        raise Conflict(f"journey {journey_id} is stopped; copy it into a new journey")
    changed: list[str] = []
    if graph is not None:
        journey.draft = dump_graph(parse_graph(graph))
        changed.append("graph")
    if name is not None and name != journey.name:
        other = store.by_name(session, workspace_id, name)
        if other is not None and other.id != journey.id:
            raise Conflict(f"a journey named {name!r} already exists", field="name")
        journey.name = name
        changed.append("name")
    if description is not None:
        journey.description = description
    journey.updated_at = clock.now()
    session.flush()
    if changed:
        _audit(session, journey, actor, "updated", changed=changed)
    return journey


def check_journey(session: Session, *, workspace_id: int, journey_id: int) -> list[Problem]:
    """Everything that would stop the draft from being published (empty: it may be)."""
    journey = get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    return validation.check(
        session,
        workspace_id=workspace_id,
        brand_id=journey.brand_id,
        graph=parse_graph(journey.draft),
    )


def publish(session: Session, *, workspace_id: int, journey_id: int, actor: str) -> JourneyVersion:
    """Publish the draft as the next version (422 naming each bad step): new customers enter
    it; customers inside finish the version they entered."""
    journey = get_journey(session, workspace_id=workspace_id, journey_id=journey_id, lock=True)
    if journey.status == STOPPED:
        raise Conflict(f"journey {journey_id} is stopped and cannot be published again")
    graph = parse_graph(journey.draft)
    validation.refuse(
        validation.check(session, workspace_id=workspace_id, brand_id=journey.brand_id, graph=graph)
    )
    stored = dump_graph(graph)
    latest = store.versions(session, journey.id)
    if latest and latest[-1].graph == stored:
        if journey.status == DRAFT:
            journey.status = LIVE
        return latest[-1]  # the draft is the live version already: nothing new
    now = clock.now()
    number = (latest[-1].version if latest else 0) + 1
    version = JourneyVersion(
        journey_id=journey.id, version=number, graph=stored, published_by=actor, published_at=now
    )
    session.add(version)
    journey.live_version = number
    journey.trigger_kind = graph.trigger.type
    if journey.status == DRAFT:
        journey.status = LIVE
    journey.published_at = journey.updated_at = now
    session.flush()
    _audit(session, journey, actor, "published", version=number)
    return version


def _set_status(
    session: Session,
    *,
    workspace_id: int,
    journey_id: int,
    actor: str,
    to: str,
    allowed: tuple[str, ...],
) -> Journey:
    journey = get_journey(session, workspace_id=workspace_id, journey_id=journey_id, lock=True)
    if journey.status == to:
        return journey
    if journey.status not in allowed:
        raise Conflict(f"journey {journey_id} is {journey.status}; it cannot become {to}")
    journey.status = to
    journey.updated_at = clock.now()
    session.flush()
    _audit(session, journey, actor, to)
    return journey


def pause(session: Session, *, workspace_id: int, journey_id: int, actor: str) -> Journey:
    """Nobody new enters; customers inside go on."""
    return _set_status(
        session,
        workspace_id=workspace_id,
        journey_id=journey_id,
        actor=actor,
        to=PAUSED,
        allowed=(LIVE,),
    )


def resume(session: Session, *, workspace_id: int, journey_id: int, actor: str) -> Journey:
    """Customers enter again."""
    return _set_status(
        session,
        workspace_id=workspace_id,
        journey_id=journey_id,
        actor=actor,
        to=LIVE,
        allowed=(PAUSED,),
    )


def stop(
    session: Session, *, workspace_id: int, journey_id: int, actor: str
) -> tuple[Journey, int]:
    """Nobody enters and everyone inside leaves (reason ``journey_stopped``); returns the
    journey and how many customers left."""
    journey = _set_status(
        session,
        workspace_id=workspace_id,
        journey_id=journey_id,
        actor=actor,
        to=STOPPED,
        allowed=(DRAFT, LIVE, PAUSED),
    )
    left = store.stop_instances(session, journey.id, clock.now(), "journey_stopped")
    return journey, left


def versions(session: Session, *, workspace_id: int, journey_id: int) -> list[JourneyVersion]:
    """Every published version, oldest first."""
    get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    return store.versions(session, journey_id)


def get_version(
    session: Session, *, workspace_id: int, journey_id: int, version: int
) -> JourneyVersion:
    """One published version."""
    get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    found = store.version(session, journey_id, version)
    if found is None:
        raise NotFound(f"journey {journey_id} has no version {version}", field="version")
    return found


def list_instances(
    session: Session,
    *,
    workspace_id: int,
    journey_id: int,
    status: str | None = None,
    step: str | None = None,
    customer_id: int | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[JourneyInstance]:
    """Customers' walks through a journey, by id (page with ``after_id``)."""
    get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    return store.list_instances(
        session,
        journey_id,
        status=status,
        step_key=step,
        customer_id=customer_id,
        after_id=after_id,
        limit=min(max(limit, 1), 1000),
    )


def get_instance(
    session: Session, *, workspace_id: int, journey_id: int, instance_id: int
) -> tuple[JourneyInstance, list[JourneyStepLog]]:
    """One walk and every step it completed."""
    get_journey(session, workspace_id=workspace_id, journey_id=journey_id)
    instance = session.get(JourneyInstance, instance_id)
    if instance is None or instance.journey_id != journey_id:
        raise NotFound(f"instance {instance_id} does not exist", field="instance_id")
    return instance, store.step_log(session, instance_id)


def check_graph(session: Session, *, workspace_id: int, brand_id: int, graph: Any) -> list[Problem]:
    """Problems of a graph that is not saved anywhere (the editor's live check)."""
    tenancy.get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    try:
        parsed = parse_graph(graph)
    except ValidationFailed as exc:
        return [Problem(e["field"], e["reason"]) for e in exc.errors or []]
    return validation.check(session, workspace_id=workspace_id, brand_id=brand_id, graph=parsed)
