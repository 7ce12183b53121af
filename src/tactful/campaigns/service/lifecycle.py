"""A campaign's life: estimate, launch (the marketer confirms the audience size), approval
by a second person, cancellation that stops everything not yet sent, and test sends to
the brand's test recipients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.campaigns import store
from tactful.campaigns.models import (
    AWAITING_APPROVAL,
    CANCELLED,
    DRAFT,
    SCHEDULED,
    Campaign,
)
from tactful.campaigns.schemas import AtSchedule, LocalTimeSchedule
from tactful.campaigns.service.definition import channel_steps, check_spec, get_campaign, spec_of
from tactful.campaigns.service.sending import (
    audience,
    cancel_everything,
    check_rails,
    occurrence,
    schedule_run,
    source_of,
    split_control,
)
from tactful.core import clock
from tactful.core.errors import Conflict, Forbidden, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.messaging import service as messaging
from tactful.messaging.schemas import SendOutcome, SendRequest
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy

# the latest local time on Earth (UTC-12): after it, a day's local time has passed everywhere
LATEST_OFFSET = timedelta(hours=12)
# channels a segment estimate prices (a call task is not a marketing channel there)
ESTIMATED_CHANNELS = ("email", "sms", "push", "viber", "telegram")


def _audit(session: Session, campaign: Campaign, actor: str, action: str, **details: Any) -> None:
    tenancy.record_audit(
        session,
        workspace_id=campaign.workspace_id,
        actor=actor,
        action=f"campaign.{action}",
        target_type="campaign",
        target_id=campaign.id,
        brand_id=campaign.brand_id,
        details=details,
    )


@dataclass(frozen=True)
class Estimate:
    """Before launch: who a run would take now, and reach and cost of the live segments."""

    audience: int
    excluded: int
    targeted: int
    control: int
    live_size: int = 0
    reachable: dict[str, int] = field(default_factory=dict)
    cascade_reached: int = 0
    cascade_cost: int = 0
    per_channel_in_cascade: dict[str, int] = field(default_factory=dict)


def _definition(campaign: Campaign) -> dict[str, Any]:
    """Targets minus exclusions as one segment definition (evaluated live)."""
    parts: list[dict[str, Any]] = [
        {"any": [{"type": "segment", "segment_id": int(i)} for i in campaign.target_segment_ids]}
    ]
    parts.extend(
        {"type": "segment", "segment_id": int(i), "member": False}
        for i in campaign.exclusion_segment_ids
    )
    return {"all": parts}


def estimate(
    runtime: Runtime, session: Session, *, workspace_id: int, campaign_id: int
) -> Estimate:
    """The audience a run would take now (segment memberships), its target and control
    groups, and the live definitions' reach and cascade cost from the brand's prices."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    ids, excluded = audience(session, campaign)
    targets, control = split_control(campaign, ids)
    cascade = [s["channel"] for s in campaign.steps if s["channel"] in ESTIMATED_CHANNELS]
    base = Estimate(len(ids), excluded, len(targets), len(control))
    if not cascade:
        return base
    live = segments.estimate(
        runtime,
        session,
        workspace_id=workspace_id,
        brand_id=campaign.brand_id,
        definition=_definition(campaign),
        cascade=cascade,
    )
    return Estimate(
        base.audience,
        base.excluded,
        base.targeted,
        base.control,
        live_size=live.size,
        reachable=live.reachable,
        cascade_reached=live.cascade_reached,
        cascade_cost=live.cascade_cost,
        per_channel_in_cascade=live.per_channel_in_cascade,
    )


def _check_senders(session: Session, campaign: Campaign) -> None:
    senders = {
        s.channel
        for s in messaging.list_senders(session, workspace_id=campaign.workspace_id)
        if s.brand_id == campaign.brand_id
    }
    spec = spec_of(campaign)
    wanted = [("steps", n, s.channel) for n, s in enumerate(spec.steps)]
    for k, checkpoint in enumerate(spec.checkpoints):
        wanted.extend(
            (f"checkpoints[{k}].steps", n, s.channel) for n, s in enumerate(checkpoint.steps)
        )
    for where, n, channel in wanted:
        if channel not in senders:
            raise ValidationFailed(
                f"brand {campaign.brand_id} has no {channel} sender",
                field=f"{where}[{n}].channel",
            )


def _check_schedule(campaign: Campaign, now: datetime) -> None:
    schedule = spec_of(campaign).schedule
    if isinstance(schedule, AtSchedule) and schedule.at <= now:
        raise ValidationFailed("the send time has passed", field="schedule.at")
    if isinstance(schedule, LocalTimeSchedule):
        latest = (
            datetime.combine(schedule.date, time.fromisoformat(schedule.time), tzinfo=UTC)
            + LATEST_OFFSET
        )
        if latest <= now:
            raise ValidationFailed(
                "that local time has passed in every time zone", field="schedule.date"
            )


def _schedule_first(session: Session, campaign: Campaign, now: datetime) -> None:
    when = occurrence(session, campaign, after=now)
    if when is None:
        raise ValidationFailed("the recurring schedule has no run left", field="schedule")
    campaign.status = SCHEDULED
    schedule_run(session, campaign, when)


def launch(
    session: Session,
    *,
    workspace_id: int,
    campaign_id: int,
    expected_recipients: int,
    tolerance: float,
    actor: str,
) -> Campaign:
    """Launch a draft: the marketer confirms the target group's size; the safety rails
    check the audience now; it then awaits approval, or is scheduled."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True)
    if campaign.status != DRAFT:
        raise Conflict(
            f"only a draft can be launched; this one is {campaign.status}", field="status"
        )
    check_spec(session, workspace_id=workspace_id, spec=spec_of(campaign))
    _check_senders(session, campaign)
    now = clock.now()
    _check_schedule(campaign, now)
    ids, _excluded = audience(session, campaign)
    targets, _control = split_control(campaign, ids)
    check_rails(session, campaign, targets, expected=expected_recipients, tolerance=tolerance)
    campaign.confirmed_recipients = expected_recipients
    campaign.confirmation_tolerance = tolerance
    campaign.launched_by, campaign.launched_at = actor, now
    campaign.approved_by = campaign.approved_at = None
    campaign.last_error = None
    if campaign.requires_approval:
        campaign.status = AWAITING_APPROVAL
    else:
        _schedule_first(session, campaign, now)
    campaign.updated_at = now
    session.flush()
    _audit(
        session,
        campaign,
        actor,
        "launched",
        expected_recipients=expected_recipients,
        tolerance=tolerance,
        targeted=len(targets),
        status=campaign.status,
    )
    return campaign


def approve(
    session: Session, *, workspace_id: int, campaign_id: int, actor: str, comment: str | None = None
) -> Campaign:
    """Approve a launched campaign (by someone other than who launched it): it is
    scheduled."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True)
    if campaign.status != AWAITING_APPROVAL:
        raise Conflict(f"the campaign is {campaign.status}, not awaiting approval", field="status")
    if actor == campaign.launched_by:
        raise Forbidden("the person who launched a campaign cannot approve it")
    now = clock.now()
    campaign.approved_by, campaign.approved_at = actor, now
    _schedule_first(session, campaign, now)
    campaign.updated_at = now
    session.flush()
    _audit(session, campaign, actor, "approved", comment=comment, launched_by=campaign.launched_by)
    return campaign


def reject(
    session: Session, *, workspace_id: int, campaign_id: int, actor: str, comment: str | None = None
) -> Campaign:
    """Send a campaign awaiting approval back to draft, with the reviewer's comment."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True)
    if campaign.status != AWAITING_APPROVAL:
        raise Conflict(f"the campaign is {campaign.status}, not awaiting approval", field="status")
    now = clock.now()
    campaign.status, campaign.updated_at = DRAFT, now
    campaign.last_error = f"rejected by {actor}" + (f": {comment}" if comment else "")
    _audit(session, campaign, actor, "rejected", comment=comment)
    return campaign


def cancel(
    session: Session, *, workspace_id: int, campaign_id: int, actor: str
) -> tuple[Campaign, dict[str, int]]:
    """Cancel a campaign: runs not started, waves not handed over, pending checkpoints and
    every delivery not sent yet are stopped (the policy ledger frees their cap slots)."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True)
    if campaign.status == CANCELLED:
        raise Conflict("the campaign is already cancelled", field="status")
    previous = campaign.status
    stopped = cancel_everything(session, campaign)
    now = clock.now()
    campaign.status, campaign.updated_at = CANCELLED, now
    campaign.cancelled_by, campaign.cancelled_at = actor, now
    _audit(session, campaign, actor, "cancelled", previous_status=previous, **stopped)
    return campaign, stopped


def test_send(
    session: Session,
    *,
    workspace_id: int,
    campaign_id: int,
    customer_ids: list[int] | None,
    actor: str,
) -> list[tuple[int, SendOutcome]]:
    """Send the campaign's message to test recipients only (customers flagged ``is_test``;
    the policy refuses anyone else with ``not_test_recipient``)."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    ids = list(dict.fromkeys(customer_ids or store.test_customers(session, workspace_id)))
    if not ids:
        raise ValidationFailed("the workspace has no test customers", field="customer_ids")
    outcomes = messaging.send(
        session,
        [
            SendRequest(
                workspace_id=workspace_id,
                brand_id=campaign.brand_id,
                customer_id=cid,
                template_id=campaign.template_id,
                message_class=campaign.message_class,
                source=source_of(campaign.id),
                steps=channel_steps(campaign.steps),
                context=dict(campaign.context or {}),
                topic=campaign.topic,
                is_test=True,
                reference={"campaign_id": campaign.id, "test": True},
            )
            for cid in ids
        ],
    )
    _audit(
        session,
        campaign,
        actor,
        "test_sent",
        customers=len(outcomes),
        scheduled=sum(o.outcome == "scheduled" for o in outcomes),
    )
    return list(zip(ids, outcomes, strict=True))
