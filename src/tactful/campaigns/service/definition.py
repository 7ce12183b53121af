"""Defining campaigns: create and edit drafts, check every reference, read them back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session

from tactful.campaigns import store
from tactful.campaigns.models import DRAFT, Campaign
from tactful.campaigns.schemas import CampaignPatch, CampaignSpec, RecurringSchedule
from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.messaging import service as messaging
from tactful.messaging.models import MESSAGE
from tactful.messaging.schemas import StepIn
from tactful.policy.schemas import ChannelStep
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy

# the policy never schedules a webhook for a customer (customers have no webhook contact)
CAMPAIGN_CHANNELS = ("push", "email", "viber", "telegram", "sms", "call")
SPEC_FIELDS = tuple(CampaignSpec.model_fields)


def get_campaign(
    session: Session, *, workspace_id: int, campaign_id: int, lock: bool = False
) -> Campaign:
    """A campaign of the workspace, or 404."""
    found = store.campaign(session, workspace_id, campaign_id, lock=lock)
    if found is None:
        raise NotFound(f"campaign {campaign_id} does not exist", field="campaign_id")
    return found


def list_campaigns(
    session: Session, *, workspace_id: int, status: str | None = None, brand_id: int | None = None
) -> list[Campaign]:
    """The workspace's campaigns, newest first."""
    return store.campaigns(session, workspace_id, status=status, brand_id=brand_id)


def next_run_at(session: Session, campaigns: Sequence[Campaign]) -> dict[int, Any]:
    """When each campaign's next run starts (absent: none is scheduled)."""
    return store.next_runs(session, [c.id for c in campaigns])


def spec_of(campaign: Campaign) -> CampaignSpec:
    """A stored campaign as its validated definition."""
    return CampaignSpec.model_validate({name: getattr(campaign, name) for name in SPEC_FIELDS})


def channel_steps(steps: Sequence[dict[str, Any]]) -> tuple[ChannelStep, ...]:
    """Stored steps as the policy's cascade."""
    return tuple(
        ChannelStep(
            str(s["channel"]),
            timedelta(seconds=int(s["timeout_seconds"])) if s.get("timeout_seconds") else None,
            s.get("wait_for") or "delivered",
        )
        for s in steps
    )


def _check_template(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    template_id: int,
    steps: Sequence[StepIn],
    field: str,
    steps_field: str,
) -> None:
    try:
        template = messaging.get_template(
            session, workspace_id=workspace_id, template_id=template_id
        )
    except NotFound as exc:
        raise ValidationFailed(f"template {template_id} does not exist", field=field) from exc
    if template.kind != MESSAGE or template.brand_id != brand_id:
        raise ValidationFailed(
            f"template {template_id} is not a message template of brand {brand_id}", field=field
        )
    seen: set[str] = set()
    for n, step in enumerate(steps):
        where = f"{steps_field}[{n}].channel"
        if step.channel not in CAMPAIGN_CHANNELS:
            raise ValidationFailed(
                f"a campaign sends on {list(CAMPAIGN_CHANNELS)}, not {step.channel}", field=where
            )
        if step.channel in seen:
            raise ValidationFailed(f"{step.channel} is in the cascade twice", field=where)
        seen.add(step.channel)
        if step.channel not in template.parts:
            raise ValidationFailed(
                f"template {template_id} has no {step.channel} part", field=where
            )


def _check_segments(session: Session, *, workspace_id: int, spec: CampaignSpec) -> None:
    for name in ("target_segment_ids", "exclusion_segment_ids"):
        ids: list[int] = getattr(spec, name)
        for n, segment_id in enumerate(ids):
            try:
                segments.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
            except NotFound as exc:
                raise ValidationFailed(
                    f"segment {segment_id} does not exist", field=f"{name}[{n}]"
                ) from exc
            if ids.index(segment_id) != n:
                raise ValidationFailed(
                    f"segment {segment_id} is listed twice", field=f"{name}[{n}]"
                )
    both = sorted(set(spec.target_segment_ids) & set(spec.exclusion_segment_ids))
    if both:
        raise ValidationFailed(
            f"segments {both} are both targeted and excluded", field="exclusion_segment_ids"
        )


def check_spec(session: Session, *, workspace_id: int, spec: CampaignSpec) -> None:
    """Refuse a definition whose brand, template, channels, segments or schedule do not
    hold together (422 naming the field)."""
    try:
        tenancy.get_brand(session, workspace_id=workspace_id, brand_id=spec.brand_id)
    except NotFound as exc:
        raise ValidationFailed(f"brand {spec.brand_id} does not exist", field="brand_id") from exc
    _check_template(
        session,
        workspace_id=workspace_id,
        brand_id=spec.brand_id,
        template_id=spec.template_id,
        steps=spec.steps,
        field="template_id",
        steps_field="steps",
    )
    for n, checkpoint in enumerate(spec.checkpoints):
        _check_template(
            session,
            workspace_id=workspace_id,
            brand_id=spec.brand_id,
            template_id=checkpoint.template_id or spec.template_id,
            steps=checkpoint.steps,
            field=f"checkpoints[{n}].template_id",
            steps_field=f"checkpoints[{n}].steps",
        )
    _check_segments(session, workspace_id=workspace_id, spec=spec)
    if isinstance(spec.schedule, RecurringSchedule) and spec.schedule.timezone:
        tenancy.check_timezone(spec.schedule.timezone, field="schedule.timezone")


def _stored(spec: CampaignSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def create_campaign(
    session: Session, *, workspace_id: int, spec: CampaignSpec, actor: str
) -> Campaign:
    """Create a draft campaign from a checked definition (audited)."""
    check_spec(session, workspace_id=workspace_id, spec=spec)
    now = clock.now()
    campaign = Campaign(
        workspace_id=workspace_id,
        status=DRAFT,
        created_by=actor,
        created_at=now,
        updated_at=now,
        **_stored(spec),
    )
    session.add(campaign)
    session.flush()
    tenancy.record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="campaign.created",
        target_type="campaign",
        target_id=campaign.id,
        brand_id=campaign.brand_id,
        details={"name": campaign.name},
    )
    return campaign


def update_campaign(
    session: Session, *, workspace_id: int, campaign_id: int, patch: CampaignPatch, actor: str
) -> Campaign:
    """Change a draft (a campaign awaiting approval or later is refused with 409)."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id, lock=True)
    if campaign.status != DRAFT:
        raise Conflict(
            f"only a draft can be edited; this campaign is {campaign.status}", field="status"
        )
    changes = patch.model_dump(exclude_unset=True)
    if not changes:
        return campaign
    merged = {**spec_of(campaign).model_dump(), **changes}
    try:
        spec = CampaignSpec.model_validate(merged)
    except PydanticValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
            for e in exc.errors()
        ]
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors
        ) from exc
    check_spec(session, workspace_id=workspace_id, spec=spec)
    for name, value in _stored(spec).items():
        setattr(campaign, name, value)
    campaign.updated_at = clock.now()
    session.flush()
    tenancy.record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="campaign.updated",
        target_type="campaign",
        target_id=campaign.id,
        brand_id=campaign.brand_id,
        details={"fields": sorted(changes)},
    )
    return campaign
