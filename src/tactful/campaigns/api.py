"""Campaigns over HTTP: define drafts, estimate, launch with a confirmed audience size,
approve or reject, cancel, test-send, and follow runs, recipients, checkpoints and stats."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from sqlalchemy.orm import Session

from tactful.campaigns import service
from tactful.campaigns.models import CAMPAIGN_STATUSES, Campaign
from tactful.campaigns.schemas import (
    CampaignIn,
    CampaignOut,
    CampaignPatch,
    CancelOut,
    CheckpointOut,
    EstimateOut,
    LaunchIn,
    RecipientOut,
    ReviewIn,
    RunOut,
    StatsOut,
    TestSendIn,
    TestSendOut,
)
from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.core.errors import ValidationFailed

router = api_router(prefix="/v1/campaigns", tags=["campaigns"])
Admin = Annotated[Principal, require_scope("admin")]


def _out(session: Session, campaign: Campaign) -> CampaignOut:
    out = CampaignOut.model_validate(campaign)
    out.next_run_at = service.next_run_at(session, [campaign]).get(campaign.id)
    return out


@router.get("", summary="List campaigns, newest first")
def list_campaigns(
    session: SessionDep,
    principal: Admin,
    status: Annotated[
        str | None, Query(description=f"one of {', '.join(CAMPAIGN_STATUSES)}")
    ] = None,
    brand_id: int | None = None,
) -> list[CampaignOut]:
    if status is not None and status not in CAMPAIGN_STATUSES:
        raise ValidationFailed(f"status must be one of {list(CAMPAIGN_STATUSES)}", field="status")
    rows = service.list_campaigns(
        session, workspace_id=principal.workspace_id, status=status, brand_id=brand_id
    )
    runs = service.next_run_at(session, rows)
    result = []
    for row in rows:
        out = CampaignOut.model_validate(row)
        out.next_run_at = runs.get(row.id)
        result.append(out)
    return result


@router.post(
    "",
    status_code=201,
    summary="Create a draft campaign (422 names the field: template, channel, segment …)",
)
def create_campaign(body: CampaignIn, session: SessionDep, principal: Admin) -> CampaignOut:
    campaign = service.create_campaign(
        session, workspace_id=principal.workspace_id, spec=body, actor=principal.actor
    )
    return _out(session, campaign)


@router.get("/{campaign_id}", summary="A campaign with its status and next run")
def get_campaign(campaign_id: int, session: SessionDep, principal: Admin) -> CampaignOut:
    campaign = service.get_campaign(
        session, workspace_id=principal.workspace_id, campaign_id=campaign_id
    )
    return _out(session, campaign)


@router.patch("/{campaign_id}", summary="Edit a draft (409 once launched)")
def update_campaign(
    campaign_id: int, body: CampaignPatch, session: SessionDep, principal: Admin
) -> CampaignOut:
    campaign = service.update_campaign(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        patch=body,
        actor=principal.actor,
    )
    return _out(session, campaign)


@router.post(
    "/{campaign_id}/estimate",
    summary="Audience a run would take now, its target and control groups, reach and cost",
)
def estimate(
    campaign_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> EstimateOut:
    result = service.estimate(
        runtime, session, workspace_id=principal.workspace_id, campaign_id=campaign_id
    )
    return EstimateOut.model_validate(result.__dict__)


@router.post(
    "/{campaign_id}/launch",
    summary="Launch a draft, confirming the target group's size (409 when the audience is "
    "larger than confirmed or the template's content rules refuse it)",
)
def launch(campaign_id: int, body: LaunchIn, session: SessionDep, principal: Admin) -> CampaignOut:
    campaign = service.launch(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        expected_recipients=body.expected_recipients,
        tolerance=body.tolerance,
        actor=principal.actor,
    )
    return _out(session, campaign)


@router.post(
    "/{campaign_id}/approve",
    summary="Approve a launched campaign (not by whoever launched it): it is scheduled",
)
def approve(campaign_id: int, body: ReviewIn, session: SessionDep, principal: Admin) -> CampaignOut:
    campaign = service.approve(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        actor=principal.actor,
        comment=body.comment,
    )
    return _out(session, campaign)


@router.post("/{campaign_id}/reject", summary="Send a campaign awaiting approval back to draft")
def reject(campaign_id: int, body: ReviewIn, session: SessionDep, principal: Admin) -> CampaignOut:
    campaign = service.reject(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        actor=principal.actor,
        comment=body.comment,
    )
    return _out(session, campaign)


@router.post(
    "/{campaign_id}/cancel",
    summary="Cancel: stop every run, wave, checkpoint and delivery not sent yet",
)
def cancel(campaign_id: int, session: SessionDep, principal: Admin) -> CancelOut:
    campaign, stopped = service.cancel(
        session, workspace_id=principal.workspace_id, campaign_id=campaign_id, actor=principal.actor
    )
    return CancelOut(campaign=_out(session, campaign), stopped=stopped)


@router.post(
    "/{campaign_id}/test-send",
    summary="Send the campaign's message to test recipients only (others are refused)",
)
def test_send(
    campaign_id: int, body: TestSendIn, session: SessionDep, principal: Admin
) -> list[TestSendOut]:
    outcomes = service.test_send(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        customer_ids=body.customer_ids,
        actor=principal.actor,
    )
    return [
        TestSendOut(
            customer_id=cid,
            outcome=o.outcome,
            reason=o.reason,
            delivery_id=o.delivery_id,
            channel=o.channel,
        )
        for cid, o in outcomes
    ]


@router.get("/{campaign_id}/runs", summary="The campaign's runs (one per send), first to last")
def runs(campaign_id: int, session: SessionDep, principal: Admin) -> list[RunOut]:
    rows = service.list_runs(session, workspace_id=principal.workspace_id, campaign_id=campaign_id)
    return [RunOut.model_validate(r) for r in rows]


@router.get(
    "/{campaign_id}/recipients",
    summary="A run's recipients: group, wave, the policy's decision and the delivery's status",
)
def recipients(
    campaign_id: int,
    session: SessionDep,
    principal: Admin,
    run: Annotated[int | None, Query(description="run number (default: the latest)")] = None,
    group: Literal["target", "control"] | None = None,
    after_customer: int = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[RecipientOut]:
    rows = service.list_recipients(
        session,
        workspace_id=principal.workspace_id,
        campaign_id=campaign_id,
        run=run,
        group=group,
        after_customer=after_customer,
        limit=limit,
    )
    return [RecipientOut.model_validate(r) for r in rows]


@router.get("/{campaign_id}/checkpoints", summary="Plan checkpoints of every run")
def checkpoints(campaign_id: int, session: SessionDep, principal: Admin) -> list[CheckpointOut]:
    rows = service.list_checkpoints(
        session, workspace_id=principal.workspace_id, campaign_id=campaign_id
    )
    return [CheckpointOut.model_validate(r) for r in rows]


@router.get(
    "/{campaign_id}/stats",
    summary="Audience, suppressions by reason, sent … clicked, unsubscribes, complaints, cost, "
    "and target vs control conversions",
)
def stats(campaign_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin) -> StatsOut:
    figures = service.stats(
        runtime, session, workspace_id=principal.workspace_id, campaign_id=campaign_id
    )
    return StatsOut.model_validate(figures)
