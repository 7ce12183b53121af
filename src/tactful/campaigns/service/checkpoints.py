"""Plan checkpoints: when one is due, the goal is measured over the run's target group; a
missed checkpoint switches on its dearer channel for the customers who have not
converted (through the contact policy, like any send)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session

from tactful.campaigns import store, warehouse
from tactful.campaigns.models import (
    CANCELLED,
    MET,
    MISSED,
    PENDING,
    TARGET,
    CampaignCheckpoint,
)
from tactful.campaigns.service.sending import request_for, run_and_campaign, source_of
from tactful.core import clock
from tactful.core.jobs.queue import enqueue
from tactful.core.runtime import Runtime
from tactful.messaging import service as messaging
from tactful.tenancy import service as tenancy

CHECK_JOB = "campaigns.check_checkpoint"


def queue_due_checkpoints(session: Session, *, limit: int = 100) -> int:
    """One keyed job per checkpoint whose time has come (a monitor's work)."""
    count = 0
    for checkpoint_id in store.due_checkpoints(session, clock.now(), limit):
        count += enqueue(
            session,
            CHECK_JOB,
            {"checkpoint_id": checkpoint_id},
            key=f"{CHECK_JOB}:{checkpoint_id}",
        )
    return count


def check_checkpoint(
    runtime: Runtime, session: Session, *, checkpoint_id: int
) -> CampaignCheckpoint | None:
    """Measure the goal at a due checkpoint; when it falls short, send the follow-up to the
    target group's non-converters."""
    found = store.checkpoint(session, checkpoint_id)
    if found is None:
        return None
    locked = run_and_campaign(session, found.run_id)
    assert locked is not None
    campaign, run = locked
    checkpoint = store.checkpoint(session, checkpoint_id, lock=True)
    assert checkpoint is not None
    if checkpoint.status != PENDING:
        return checkpoint
    if campaign.status == CANCELLED or run.started_at is None:
        checkpoint.status = CANCELLED
        return checkpoint
    now = clock.now()
    start = run.started_at
    end = min(now, start + timedelta(days=checkpoint.attribution_days))
    targets = store.group_members(session, run.id, TARGET)
    measured = warehouse.conversions(
        runtime.warehouse,
        workspace_id=campaign.workspace_id,
        groups={TARGET: targets},
        start=start,
        end=end,
    )[TARGET]
    checkpoint.value = measured.value(checkpoint.goal_kind)
    checkpoint.checked_at = now
    if checkpoint.value >= checkpoint.min_value:
        checkpoint.status = MET
        return checkpoint
    checkpoint.status = MISSED
    buyers = warehouse.converters(
        runtime.warehouse,
        workspace_id=campaign.workspace_id,
        customer_ids=targets,
        start=start,
        end=end,
    )
    rest = targets[~np.isin(targets, buyers)]
    outcome = messaging.send_audience(
        session,
        request=request_for(
            campaign,
            run=run,
            not_before=now,
            steps=checkpoint.steps,
            template_id=checkpoint.template_id,
            dedupe_key=f"{source_of(campaign.id)}:run:{run.number}:checkpoint:{checkpoint.number}",
        ),
        customer_ids=rest,
    )
    checkpoint.followup_audience = len(rest)
    checkpoint.followup_scheduled = outcome.scheduled
    checkpoint.decision_batch_id = outcome.decision_batch_id
    tenancy.record_audit(
        session,
        workspace_id=campaign.workspace_id,
        actor="system",
        action="campaign.checkpoint_missed",
        target_type="campaign",
        target_id=campaign.id,
        brand_id=campaign.brand_id,
        details={
            "run": run.number,
            "checkpoint": checkpoint.number,
            "goal": checkpoint.goal_kind,
            "value": checkpoint.value,
            "min_value": checkpoint.min_value,
            "followup_audience": len(rest),
            "followup_scheduled": outcome.scheduled,
            "channels": [s["channel"] for s in checkpoint.steps],
        },
    )
    return checkpoint
