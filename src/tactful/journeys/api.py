"""Journeys over HTTP: drafts, ready-made scenarios, validation, publishing versions, pause,
resume and stop, entries by API call, instances with their history, and stats."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.journeys import service
from tactful.journeys.schemas import (
    CheckOut,
    EntriesIn,
    EntriesOut,
    EntryOut,
    GraphCheckIn,
    InstanceDetailOut,
    InstanceOut,
    JourneyIn,
    JourneyOut,
    JourneyUpdate,
    ProblemOut,
    ScenarioIn,
    ScenarioOut,
    StatsOut,
    StepLogOut,
    StopOut,
    VersionOut,
)

router = api_router(prefix="/v1/journeys", tags=["journeys"])
Admin = Annotated[Principal, require_scope("admin")]


def _check(problems: list[service.Problem]) -> CheckOut:
    return CheckOut(
        valid=not problems, problems=[ProblemOut.model_validate(p.as_dict()) for p in problems]
    )


@router.get("", summary="List journeys")
def list_journeys(
    session: SessionDep,
    principal: Admin,
    status: Annotated[str | None, Query(description="draft, live, paused or stopped")] = None,
) -> list[JourneyOut]:
    rows = service.list_journeys(session, workspace_id=principal.workspace_id, status=status)
    return [JourneyOut.model_validate(j) for j in rows]


@router.post("", status_code=201, summary="Create a draft journey (422 names each bad field)")
def create_journey(body: JourneyIn, session: SessionDep, principal: Admin) -> JourneyOut:
    journey = service.create_journey(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        name=body.name,
        description=body.description,
        graph=body.graph,
        actor=principal.actor,
    )
    return JourneyOut.model_validate(journey)


@router.get("/scenarios", summary="Ready-made journeys to start from")
def list_scenarios(principal: Admin) -> list[ScenarioOut]:
    del principal
    return [
        ScenarioOut(key=s.key, name=s.name, description=s.description)
        for s in service.SCENARIOS.values()
    ]


@router.post(
    "/scenarios/{scenario}",
    status_code=201,
    summary="Create a draft journey (and its templates) from a ready-made scenario",
)
def create_from_scenario(
    scenario: str, body: ScenarioIn, session: SessionDep, principal: Admin
) -> JourneyOut:
    journey = service.create_from_scenario(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        scenario=scenario,
        name=body.name,
        actor=principal.actor,
    )
    return JourneyOut.model_validate(journey)


@router.post("/check", summary="Check a graph without saving it (what publishing would refuse)")
def check_graph(body: GraphCheckIn, session: SessionDep, principal: Admin) -> CheckOut:
    return _check(
        service.check_graph(
            session, workspace_id=principal.workspace_id, brand_id=body.brand_id, graph=body.graph
        )
    )


@router.get("/{journey_id}", summary="A journey with its draft")
def get_journey(journey_id: int, session: SessionDep, principal: Admin) -> JourneyOut:
    journey = service.get_journey(
        session, workspace_id=principal.workspace_id, journey_id=journey_id
    )
    return JourneyOut.model_validate(journey)


@router.patch("/{journey_id}", summary="Change the draft (published versions never change)")
def update_journey(
    journey_id: int, body: JourneyUpdate, session: SessionDep, principal: Admin
) -> JourneyOut:
    journey = service.update_journey(
        session,
        workspace_id=principal.workspace_id,
        journey_id=journey_id,
        name=body.name,
        description=body.description,
        graph=body.graph,
        actor=principal.actor,
    )
    return JourneyOut.model_validate(journey)


@router.post("/{journey_id}/validate", summary="What would stop the draft from being published")
def validate(journey_id: int, session: SessionDep, principal: Admin) -> CheckOut:
    return _check(
        service.check_journey(session, workspace_id=principal.workspace_id, journey_id=journey_id)
    )


@router.post(
    "/{journey_id}/publish",
    summary="Publish the draft as a new version (422 names each bad step)",
    description="New customers enter the new version; customers inside finish the version "
    "they entered. A draft identical to the live version publishes nothing new.",
)
def publish(journey_id: int, session: SessionDep, principal: Admin) -> VersionOut:
    version = service.publish(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, actor=principal.actor
    )
    return VersionOut.model_validate(version)


@router.post("/{journey_id}/pause", summary="Let nobody new in (customers inside go on)")
def pause(journey_id: int, session: SessionDep, principal: Admin) -> JourneyOut:
    journey = service.pause(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, actor=principal.actor
    )
    return JourneyOut.model_validate(journey)


@router.post("/{journey_id}/resume", summary="Let customers in again")
def resume(journey_id: int, session: SessionDep, principal: Admin) -> JourneyOut:
    journey = service.resume(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, actor=principal.actor
    )
    return JourneyOut.model_validate(journey)


@router.post("/{journey_id}/stop", summary="Stop for good: nobody enters, everyone inside leaves")
def stop(journey_id: int, session: SessionDep, principal: Admin) -> StopOut:
    journey, left = service.stop(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, actor=principal.actor
    )
    return StopOut(journey=JourneyOut.model_validate(journey), left=left)


@router.get("/{journey_id}/versions", summary="Published versions, oldest first")
def versions(journey_id: int, session: SessionDep, principal: Admin) -> list[VersionOut]:
    rows = service.versions(session, workspace_id=principal.workspace_id, journey_id=journey_id)
    return [VersionOut.model_validate(v) for v in rows]


@router.get("/{journey_id}/versions/{version}", summary="One published version")
def get_version(journey_id: int, version: int, session: SessionDep, principal: Admin) -> VersionOut:
    row = service.get_version(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, version=version
    )
    return VersionOut.model_validate(row)


@router.post(
    "/{journey_id}/entries",
    summary="Let customers into a live journey (the API trigger)",
    description="Re-entry rules and entry caps apply. Each entry reports whether the customer "
    "entered and, if not, why; unknown customers are refused one by one and the others enter. "
    "An entry's `key` makes a repeated call harmless.",
)
def enter(
    journey_id: int, body: EntriesIn, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> EntriesOut:
    outcomes = service.enter_from_api(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        journey_id=journey_id,
        entries=[
            service.ApiEntry(customer_id=e.customer_id, key=e.key, data=e.data)
            for e in body.entries
        ],
    )
    results = [EntryOut.model_validate(o.__dict__) for o in outcomes]
    entered = sum(r.entered for r in results)
    return EntriesOut(entered=entered, refused=len(results) - entered, results=results)


@router.get(
    "/{journey_id}/stats", summary="Entered, in each step now, exits, messages, conversions"
)
def stats(journey_id: int, session: SessionDep, principal: Admin) -> StatsOut:
    result = service.journey_stats(
        session, workspace_id=principal.workspace_id, journey_id=journey_id
    )
    return StatsOut.model_validate(result)


@router.get("/{journey_id}/instances", summary="Customers' walks through the journey")
def list_instances(
    journey_id: int,
    session: SessionDep,
    principal: Admin,
    status: Annotated[str | None, Query(description="waiting, queued, completed or exited")] = None,
    step: Annotated[str | None, Query(description="standing on this step")] = None,
    customer_id: int | None = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[InstanceOut]:
    rows = service.list_instances(
        session,
        workspace_id=principal.workspace_id,
        journey_id=journey_id,
        status=status,
        step=step,
        customer_id=customer_id,
        after_id=after_id,
        limit=limit,
    )
    return [InstanceOut.model_validate(i) for i in rows]


@router.get(
    "/{journey_id}/instances/{instance_id}", summary="One walk with every step it completed"
)
def get_instance(
    journey_id: int, instance_id: int, session: SessionDep, principal: Admin
) -> InstanceDetailOut:
    instance, history = service.get_instance(
        session, workspace_id=principal.workspace_id, journey_id=journey_id, instance_id=instance_id
    )
    return InstanceDetailOut.model_validate(
        {
            **InstanceOut.model_validate(instance).model_dump(),
            "history": [StepLogOut.model_validate(h) for h in history],
        }
    )
