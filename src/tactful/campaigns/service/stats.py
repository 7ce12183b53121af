"""What a campaign did: runs, recipients with their decisions and deliveries, checkpoints,
and statistics from its recipients, messaging's deliveries and the warehouse's purchases."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.campaigns import store, warehouse
from tactful.campaigns.models import (
    CONTROL,
    TARGET,
    CampaignCheckpoint,
    CampaignRun,
)
from tactful.campaigns.service.definition import get_campaign
from tactful.campaigns.service.sending import source_of
from tactful.campaigns.warehouse import Conversions
from tactful.core import clock
from tactful.core.errors import NotFound, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.policy.schemas import SCHEDULED, SUPPRESSED

DEFAULT_ATTRIBUTION_DAYS = 7


def list_runs(session: Session, *, workspace_id: int, campaign_id: int) -> list[CampaignRun]:
    """A campaign's runs, first to last."""
    get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    return store.runs(session, campaign_id)


def list_checkpoints(
    session: Session, *, workspace_id: int, campaign_id: int
) -> list[CampaignCheckpoint]:
    """A campaign's plan checkpoints, by run."""
    get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    return store.checkpoints(session, campaign_id)


def list_recipients(
    session: Session,
    *,
    workspace_id: int,
    campaign_id: int,
    run: int | None = None,
    group: str | None = None,
    after_customer: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """A run's recipients (the latest run by default): group, wave, the policy's decision
    and the delivery's current status, by customer id (page with ``after_customer``)."""
    get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    if group is not None and group not in (TARGET, CONTROL):
        raise ValidationFailed("group is target or control", field="group")
    runs = store.runs(session, campaign_id)
    chosen = [r for r in runs if r.number == run] if run is not None else runs[-1:]
    if not chosen:
        raise NotFound(f"run {run} of campaign {campaign_id} does not exist", field="run")
    rows = store.recipients(
        session,
        chosen[0].id,
        group=group,
        after_customer=after_customer,
        limit=min(max(limit, 1), 10_000),
    )
    return [
        {
            "run": chosen[0].number,
            "customer_id": r.customer_id,
            "group": r.group,
            "wave": r.wave,
            "decision_id": r.decision_id,
            "outcome": r.outcome,
            "reason": r.reason,
            "delivery_id": delivery_id,
            "delivery_status": status,
        }
        for r, delivery_id, status in rows
    ]


def _group(found: Conversions) -> dict[str, Any]:
    return {
        "customers": found.customers,
        "buyers": found.buyers,
        "purchases": found.purchases,
        "revenue": found.revenue,
        "conversion_rate": round(found.buyers / found.customers, 6) if found.customers else 0.0,
    }


def _add(a: Conversions, b: Conversions) -> Conversions:
    return Conversions(
        a.customers + b.customers,
        a.buyers + b.buyers,
        a.purchases + b.purchases,
        a.revenue + b.revenue,
    )


def stats(
    runtime: Runtime, session: Session, *, workspace_id: int, campaign_id: int
) -> dict[str, Any]:
    """Audience, decisions by reason, how far the messages got, unsubscribes, complaints,
    cost, and conversions of the target and control groups (summed over runs, each in its
    attribution window from the run's start)."""
    campaign = get_campaign(session, workspace_id=workspace_id, campaign_id=campaign_id)
    source = source_of(campaign.id)
    groups: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for group, outcome, reason, count in store.recipient_counts(session, campaign.id):
        groups[group] += count
        if group == TARGET and outcome is not None:
            outcomes[outcome] += count
            if outcome == SUPPRESSED and reason:
                reasons[reason] += count
    days = int((campaign.goal or {}).get("attribution_days") or DEFAULT_ATTRIBUTION_DAYS)
    now = clock.now()
    total = {TARGET: Conversions(0, 0, 0, 0), CONTROL: Conversions(0, 0, 0, 0)}
    for run in store.runs(session, campaign.id):
        if run.started_at is None:
            continue
        members = {g: store.group_members(session, run.id, g) for g in (TARGET, CONTROL)}
        found = warehouse.conversions(
            runtime.warehouse,
            workspace_id=workspace_id,
            groups=members,
            start=run.started_at,
            end=min(now, run.started_at + timedelta(days=days)),
        )
        total = {g: _add(total[g], found[g]) for g in total}
    figures = store.delivery_figures(session, workspace_id, source)
    return {
        "campaign_id": campaign.id,
        "audience": groups[TARGET] + groups[CONTROL],
        "targeted": groups[TARGET],
        "control": groups[CONTROL],
        "scheduled": outcomes[SCHEDULED],
        "suppressed": outcomes[SUPPRESSED],
        "suppressed_by_reason": dict(sorted(reasons.items())),
        **figures,
        "unsubscribed": store.unsubscribes(session, workspace_id, source),
        "complained": store.complaints(session, workspace_id, source),
        "by_channel": store.sent_by_channel(session, workspace_id, source),
        "converted": _group(total[TARGET]),
        "control_converted": _group(total[CONTROL]),
        "attribution_days": days,
    }
