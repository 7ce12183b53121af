"""Running campaigns: a run takes its audience when it starts (targets ∪ minus exclusions),
holds out the control group, passes the safety rails, records every recipient and cuts the
target group into waves; each wave's job hands it to the contact policy through messaging's
bulk path. Every step is a keyed, transactional job: a crash repeats nothing."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from tactful.campaigns import planning, store
from tactful.campaigns.models import (
    CANCELLED,
    CONTROL,
    DONE,
    DRAFT,
    PENDING,
    REFUSED,
    SCHEDULED,
    SENDING,
    SENT,
    TARGET,
    Campaign,
    CampaignCheckpoint,
    CampaignRun,
    CampaignWave,
)
from tactful.campaigns.planning import Occurrence
from tactful.campaigns.schemas import (
    AtSchedule,
    LocalTimeSchedule,
    RecurringSchedule,
)
from tactful.campaigns.service.definition import channel_steps, spec_of
from tactful.core import clock
from tactful.core.errors import Conflict, NotFound
from tactful.core.jobs.queue import enqueue, enqueue_many
from tactful.messaging import service as messaging
from tactful.messaging.schemas import SendRequest
from tactful.policy import service as policy
from tactful.segments import service as segments
from tactful.tenancy import service as tenancy

START_JOB = "campaigns.start_run"
WAVE_JOB = "campaigns.send_wave"
# a run's dedupe key blocks a second message of the same run to a customer this long
DEDUPE_WINDOW = timedelta(days=30)


def source_of(campaign_id: int) -> str:
    """The policy source of a campaign's messages."""
    return f"campaign:{campaign_id}"


def workspace_zone(session: Session, workspace_id: int) -> str:
    """The workspace's time zone (customers without their own use it)."""
    return tenancy.get_workspace(session, workspace_id).timezone


# -- scheduling -----------------------------------------------------------------------------


def occurrence(session: Session, campaign: Campaign, *, after: datetime) -> Occurrence | None:
    """When the campaign's next run starts after ``after`` (None: its schedule is over)."""
    schedule = spec_of(campaign).schedule
    if isinstance(schedule, AtSchedule):
        return Occurrence(max(after, schedule.at))
    if isinstance(schedule, LocalTimeSchedule):
        start = planning.earliest_moment(schedule.date, schedule.time)
        return Occurrence(max(after, start), schedule.date, schedule.time)
    if isinstance(schedule, RecurringSchedule):
        return planning.next_occurrence(
            schedule,
            after=after,
            workspace_tz=workspace_zone(session, campaign.workspace_id),
            runs_so_far=campaign.runs_started,
        )
    return Occurrence(after)


def schedule_run(session: Session, campaign: Campaign, when: Occurrence) -> CampaignRun:
    """Add the campaign's next run; one already due is handed to a worker at once."""
    now = clock.now()
    number = 1 + max((r.number for r in store.runs(session, campaign.id)), default=0)
    run = CampaignRun(
        campaign_id=campaign.id,
        workspace_id=campaign.workspace_id,
        number=number,
        status=SCHEDULED,
        scheduled_at=when.start,
        local_date=when.local_date,
        local_time=when.local_time,
        created_at=now,
    )
    session.add(run)
    session.flush()
    if when.start <= now:
        enqueue(session, START_JOB, {"run_id": run.id}, key=f"{START_JOB}:{run.id}")
    return run


def queue_due_runs(session: Session, *, limit: int = 100) -> int:
    """One keyed start job per run whose time has come (a monitor's work)."""
    count = 0
    for run_id in store.due_runs(session, clock.now(), limit):
        count += enqueue(session, START_JOB, {"run_id": run_id}, key=f"{START_JOB}:{run_id}")
    return count


# -- the audience and the safety rails -----------------------------------------------------------


def audience(session: Session, campaign: Campaign) -> tuple[np.ndarray, int]:
    """Members of the target segments now, minus the exclusion segments' (sorted), and how
    many the exclusions removed."""

    def members(ids: list[Any]) -> list[np.ndarray]:
        return [
            segments.member_ids(session, workspace_id=campaign.workspace_id, segment_id=int(i))
            for i in ids
        ]

    return planning.union_minus(
        members(campaign.target_segment_ids), members(campaign.exclusion_segment_ids)
    )


def split_control(campaign: Campaign, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target group, control group) of an audience."""
    held = planning.control_mask(campaign.id, ids, campaign.control_share)
    return ids[~held], ids[held]


def content_rules(session: Session, campaign: Campaign) -> policy.ContentRules:
    """The template's content rules, as the policy's safety rails read them."""
    template = messaging.get_template(
        session, workspace_id=campaign.workspace_id, template_id=campaign.template_id
    )
    rules = template.content_rules or {}
    return policy.ContentRules(
        gender=rules.get("audience_gender"),
        min_age=rules.get("min_age"),
        max_age=rules.get("max_age"),
        reads_as_test=template.is_test_content,
    )


def check_rails(
    session: Session, campaign: Campaign, targets: np.ndarray, *, expected: int, tolerance: float
) -> None:
    """Refuse (409) a live send larger than confirmed, or to an audience the template's
    content rules do not fit."""
    policy.check_confirmation(expected=expected, actual=len(targets), tolerance=tolerance)
    today = clock.now().astimezone(
        planning.zone(None, workspace_zone(session, campaign.workspace_id))
    )
    policy.check_content(
        session,
        workspace_id=campaign.workspace_id,
        customer_ids=targets,
        rules=content_rules(session, campaign),
        today=today.date(),
    )


# -- runs ---------------------------------------------------------------------------------


def run_and_campaign(session: Session, run_id: int) -> tuple[Campaign, CampaignRun] | None:
    """The run and its campaign, locked in that order (every writer takes them so)."""
    run = store.run(session, run_id)
    if run is None:
        return None
    campaign = store.campaign_by_id(session, run.campaign_id, lock=True)
    locked = store.run(session, run_id, lock=True)
    assert campaign is not None
    assert locked is not None
    return campaign, locked


def _refuse(session: Session, campaign: Campaign, run: CampaignRun, reason: str) -> None:
    now = clock.now()
    run.status, run.error, run.finished_at = REFUSED, reason, now
    campaign.status, campaign.last_error, campaign.updated_at = DRAFT, reason, now
    tenancy.record_audit(
        session,
        workspace_id=campaign.workspace_id,
        actor="system",
        action="campaign.run_refused",
        target_type="campaign",
        target_id=campaign.id,
        brand_id=campaign.brand_id,
        details={"run": run.number, "reason": reason},
    )


def start_run(session: Session, *, run_id: int) -> CampaignRun | None:
    """Take a due run's audience, record its recipients and waves and queue the waves; a
    safety rail that refuses it sends the campaign back to draft with the reason."""
    found = run_and_campaign(session, run_id)
    if found is None:
        return None
    campaign, run = found
    if run.status != SCHEDULED or campaign.status != SCHEDULED:
        return run
    now = clock.now()
    try:
        ids, excluded = audience(session, campaign)
    except NotFound as exc:
        _refuse(session, campaign, run, exc.message)
        return run
    targets, control = split_control(campaign, ids)
    try:
        check_rails(
            session,
            campaign,
            targets,
            expected=int(campaign.confirmed_recipients or 0),
            tolerance=campaign.confirmation_tolerance,
        )
    except Conflict as exc:
        _refuse(session, campaign, run, exc.message)
        return run
    zone = workspace_zone(session, campaign.workspace_id)
    wished = planning.desired_times(
        targets,
        store.zone_members(session, campaign.workspace_id) if run.local_date else {},
        start=now,
        local_date=run.local_date,
        local_time=run.local_time,
        workspace_tz=zone,
    )
    waves = planning.waves(targets, wished, per_minute=campaign.throttle_per_minute)
    wave_ids = store.insert_waves(
        session,
        [
            {
                "run_id": run.id,
                "number": n,
                "send_at": w.send_at,
                "size": len(w.customer_ids),
                "status": PENDING,
            }
            for n, w in enumerate(waves)
        ],
    )
    rows: list[tuple[Any, ...]] = []
    for n, w in enumerate(waves):
        rows.extend((run.id, c, campaign.id, TARGET, n) for c in w.customer_ids.tolist())
    rows.extend((run.id, c, campaign.id, CONTROL, None) for c in control.tolist())
    store.insert_recipients(session, rows)
    by_time: dict[datetime, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
    for wave_id, w in zip(wave_ids, waves, strict=True):
        by_time[w.send_at].append((f"{WAVE_JOB}:{wave_id}", {"wave_id": wave_id}))
    for at, items in by_time.items():
        enqueue_many(session, WAVE_JOB, items, run_at=at)
    spec = spec_of(campaign)
    for n, checkpoint in enumerate(spec.checkpoints):
        assert spec.goal is not None
        session.add(
            CampaignCheckpoint(
                run_id=run.id,
                campaign_id=campaign.id,
                number=n,
                due_at=now + timedelta(hours=checkpoint.after_hours),
                goal_kind=spec.goal.kind,
                attribution_days=spec.goal.attribution_days,
                min_value=checkpoint.min_value,
                steps=[s.model_dump(mode="json") for s in checkpoint.steps],
                template_id=checkpoint.template_id or campaign.template_id,
                status=PENDING,
            )
        )
    run.status, run.started_at = SENDING, now
    run.audience, run.excluded = len(ids), excluded
    run.targeted, run.control, run.waves = len(targets), len(control), len(waves)
    campaign.status, campaign.updated_at, campaign.last_error = SENDING, now, None
    campaign.runs_started += 1
    if not waves:
        finish_run(session, campaign, run)
    session.flush()
    return run


def request_for(
    campaign: Campaign,
    *,
    run: CampaignRun,
    not_before: datetime,
    steps: list[Any] | None = None,
    template_id: int | None = None,
    dedupe_key: str | None = None,
) -> SendRequest:
    """The send request of a campaign's run (the campaign's message by default)."""
    return SendRequest(
        workspace_id=campaign.workspace_id,
        brand_id=campaign.brand_id,
        customer_id=0,
        template_id=template_id or campaign.template_id,
        message_class=campaign.message_class,
        source=source_of(campaign.id),
        steps=channel_steps(steps if steps is not None else campaign.steps),
        context=dict(campaign.context or {}),
        topic=campaign.topic,
        dedupe_key=dedupe_key or f"{source_of(campaign.id)}:run:{run.number}",
        dedupe_window=DEDUPE_WINDOW,
        priority=campaign.priority,
        not_before=not_before,
        expires_at=not_before + timedelta(hours=campaign.expires_after_hours),
        reference={"campaign_id": campaign.id, "run": run.number},
    )


def send_wave(session: Session, *, wave_id: int) -> CampaignWave | None:
    """Hand one wave to the contact policy and plan its deliveries; record each
    recipient's decision. A wave of a cancelled run is cancelled instead."""
    wave = store.wave(session, wave_id)
    if wave is None:
        return None
    found = run_and_campaign(session, wave.run_id)
    assert found is not None
    campaign, run = found
    wave = store.wave(session, wave_id, lock=True)
    assert wave is not None
    if wave.status != PENDING:
        return wave
    if run.status != SENDING:
        wave.status = CANCELLED
        return wave
    ids = store.wave_members(session, run.id, wave.number)
    outcome = messaging.send_audience(
        session,
        request=request_for(campaign, run=run, not_before=wave.send_at),
        customer_ids=ids,
    )
    wave.status, wave.sent_at = SENT, clock.now()
    wave.decision_batch_id = outcome.decision_batch_id
    wave.scheduled, wave.suppressed = outcome.scheduled, outcome.suppressed
    wave.estimated_cost = outcome.estimated_cost
    if outcome.decision_batch_id is not None:
        store.attach_decisions(session, run.id, outcome.decision_batch_id)
    session.flush()
    if store.pending_waves(session, run.id) == 0:
        finish_run(session, campaign, run)
    return wave


def finish_run(session: Session, campaign: Campaign, run: CampaignRun) -> None:
    """Every wave is handed over: the run is done; a recurring campaign schedules its next
    run, any other is done."""
    now = clock.now()
    run.status, run.finished_at = DONE, now
    if campaign.status != SENDING:
        return
    nxt = None
    if isinstance(spec_of(campaign).schedule, RecurringSchedule):
        nxt = occurrence(session, campaign, after=max(now, run.scheduled_at))
    if nxt is None:
        campaign.status = DONE
    else:
        schedule_run(session, campaign, nxt)
        campaign.status = SCHEDULED
    campaign.updated_at = now


def cancel_everything(session: Session, campaign: Campaign) -> dict[str, int]:
    """Stop every run, wave, checkpoint and delivery of a campaign not sent yet."""
    now = clock.now()
    session.flush()
    runs = store.runs(session, campaign.id)
    waves = store.cancel_waves(session, [r.id for r in runs])
    cancelled_runs = store.cancel_runs(session, campaign.id, (SCHEDULED, SENDING), now)
    checkpoints = store.cancel_checkpoints(session, campaign.id)
    deliveries = messaging.cancel_deliveries(
        session, workspace_id=campaign.workspace_id, source=source_of(campaign.id)
    )
    session.flush()
    session.expire_all()  # the bulk updates bypassed the loaded runs and waves
    return {
        "runs": cancelled_runs,
        "waves": waves,
        "checkpoints": checkpoints,
        "deliveries": deliveries,
    }
