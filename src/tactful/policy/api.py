"""The contact policy over HTTP: rules (versioned, audited), what-if replays, every
decision's reason, and the suppression reasons of the last days."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from tactful.core.api import SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.policy import service
from tactful.policy.schemas import RuleSet

router = api_router(prefix="/v1/policy", tags=["contact policy"])
Admin = Annotated[Principal, require_scope("admin")]


class RulesOut(BaseModel):
    brand_id: int | None
    version: int = Field(description="0: the built-in workspace defaults")
    rules: RuleSet


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: RuleSet
    comment: str | None = Field(default=None, max_length=500)


class RuleVersionOut(BaseModel):
    version: int
    active: bool
    rules: dict[str, Any]
    comment: str | None
    created_by: str
    created_at: datetime


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: RuleSet
    brand_id: int | None = Field(
        default=None, description="the scope the rules replace; empty: the workspace's"
    )
    days: float = Field(default=7, gt=0, le=90, description="how far back to replay")


@router.get("/rules", summary="The rules of the workspace, or of one brand")
def get_rules(session: SessionDep, principal: Admin, brand_id: int | None = None) -> RulesOut:
    rules, version = service.current_rules(
        session, workspace_id=principal.workspace_id, brand_id=brand_id
    )
    return RulesOut(brand_id=brand_id, version=version, rules=rules)


@router.put("/rules", summary="Publish a new version of the rules (audited)")
def put_rules(
    body: RulesIn, session: SessionDep, principal: Admin, brand_id: int | None = None
) -> RulesOut:
    row = service.set_rules(
        session,
        workspace_id=principal.workspace_id,
        brand_id=brand_id,
        rules_=body.rules,
        actor=principal.actor,
        comment=body.comment,
    )
    return RulesOut(brand_id=brand_id, version=row.version, rules=body.rules)


@router.get("/rules/history", summary="Every version of the rules, newest first")
def rules_history(
    session: SessionDep, principal: Admin, brand_id: int | None = None
) -> list[RuleVersionOut]:
    rows = service.rule_history(session, workspace_id=principal.workspace_id, brand_id=brand_id)
    return [
        RuleVersionOut(
            version=r.version,
            active=r.active,
            rules=r.rules,
            comment=r.comment,
            created_by=r.created_by,
            created_at=r.created_at,
        )
        for r in rows
    ]


@router.post(
    "/what-if",
    summary="Replay the last days of real intents under proposed rules",
    description="Nothing is kept: the replay runs in a transaction that is rolled "
    "back. Reports sent, deferred, bundled and suppressed per reason, for what "
    "happened and for the proposal. Consents and contacts are today's.",
)
def what_if(body: WhatIfIn, session: SessionDep, principal: Admin) -> dict[str, Any]:
    return service.what_if(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        proposed=body.rules,
        days=body.days,
    )


@router.get("/decisions", summary="Why a customer did (or did not) get messages, and when")
def decisions(
    session: SessionDep,
    principal: Admin,
    customer_id: int,
    source: Annotated[str | None, Query(description="e.g. campaign:12")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return service.why(
        session,
        workspace_id=principal.workspace_id,
        customer_id=customer_id,
        source=source,
        limit=limit,
    )


@router.get("/suppressions", summary="Suppressions and deferrals of the last days by reason")
def suppressions(
    session: SessionDep,
    principal: Admin,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
) -> list[dict[str, Any]]:
    return service.suppression_summary(session, workspace_id=principal.workspace_id, days=days)
