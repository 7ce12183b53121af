"""Campaigns: the list with statuses; a draft defined in a form (brand, target and excluded
segments, template and cascade, schedule now, at a time or at a local time, control group,
throttling) with wrong values kept next to their field; the draft's audience and cost before
the launch is confirmed; approval by a second person; cancellation; live progress while it
sends; and the report (messages by status, target against control conversions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import Response

from tactful.campaigns import service as campaigns
from tactful.campaigns.models import (
    AWAITING_APPROVAL,
    DONE,
    DRAFT,
    FINAL,
    SCHEDULED,
    SENDING,
    Campaign,
)
from tactful.campaigns.schemas import CampaignIn, CampaignPatch
from tactful.core.api import RuntimeDep, SessionDep, api_router
from tactful.core.errors import TactfulError, ValidationFailed
from tactful.messaging import service as messaging
from tactful.segments import service as segments
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    optional_int,
    parse,
    redirect,
    render,
    split_list,
    text,
    values,
)

router = api_router()
SCHEDULE_KINDS = (
    ("now", "As soon as it is launched (and approved)"),
    ("at", "At a time (the workspace's time zone)"),
    ("local_time", "On a day at a time in each customer's own time zone"),
)
FIELDS = (
    "name",
    "brand_id",
    "template_id",
    "channels",
    "message_class",
    "topic",
    "schedule_kind",
    "schedule_at",
    "local_date",
    "local_time",
    "control_percent",
    "throttle_per_minute",
    "expires_after_hours",
    "description",
)
POLLED = (SCHEDULED, SENDING)
# messages by status in the report's chart, in the order a message goes
MESSAGE_STATUSES = (
    ("waiting", "waiting"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("opened", "opened"),
    ("clicked", "clicked"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("cancelled", "cancelled"),
    ("suppressed_at_send", "stopped at send"),
)


def _blank(viewer: Viewer) -> dict[str, Any]:
    return {
        **dict.fromkeys(FIELDS, ""),
        "brand_id": str(viewer.brand(None).id),
        "channels": "email",
        "message_class": "marketing",
        "schedule_kind": "now",
        "control_percent": "10",
        "expires_after_hours": "48",
        "target_segment_ids": [],
        "exclusion_segment_ids": [],
        "requires_approval": True,
    }


def _typed(form: dict[str, Any]) -> dict[str, Any]:
    """What was typed, to show again."""
    found: dict[str, Any] = {name: text(form, name) for name in FIELDS}
    found["target_segment_ids"] = values(form, "target_segment_ids")
    found["exclusion_segment_ids"] = values(form, "exclusion_segment_ids")
    found["requires_approval"] = bool(text(form, "requires_approval"))
    return found


def _moment(raw: str, timezone: str) -> datetime:
    """``2026-03-05T10:00`` (what a datetime-local input sends) in the workspace's zone."""
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "T"))
    except ValueError as exc:
        raise ValidationFailed("use YYYY-MM-DD HH:MM", field="schedule_at") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def _percent(raw: str) -> float:
    try:
        value = float(raw.replace(",", ".") or "0")
    except ValueError as exc:
        raise ValidationFailed("a percentage from 0 to 50", field="control_percent") from exc
    if not 0 <= value <= 50:
        raise ValidationFailed("a percentage from 0 to 50", field="control_percent")
    return round(value / 100, 6)


def _schedule(
    typed: dict[str, Any], timezone: str, current: dict[str, Any] | None
) -> dict[str, Any]:
    kind = typed["schedule_kind"] or "now"
    if kind == "recurring" and current is not None and current.get("kind") == "recurring":
        return current  # the form does not edit a recurring schedule: it is kept
    if kind == "at":
        if not typed["schedule_at"]:
            raise ValidationFailed("when should it be sent?", field="schedule_at")
        return {"kind": "at", "at": _moment(typed["schedule_at"], timezone)}
    if kind == "local_time":
        return {"kind": "local_time", "date": typed["local_date"], "time": typed["local_time"]}
    return {"kind": kind}


def _ids(raw: list[str]) -> list[int | str]:
    return [v for v in (optional_int(r) for r in raw) if v is not None]


def spec_from(typed: dict[str, Any], timezone: str, current: Campaign | None = None) -> CampaignIn:
    """The campaign a form describes, or a 422 naming the form's fields (editing, a channel
    already in the cascade keeps its time-out and a recurring schedule is kept)."""
    known = {str(step["channel"]): step for step in (current.steps if current else [])}
    data: dict[str, Any] = {
        "brand_id": optional_int(typed["brand_id"]),
        "name": typed["name"],
        "description": typed["description"] or None,
        "template_id": optional_int(typed["template_id"]),
        "message_class": typed["message_class"] or "marketing",
        "topic": typed["topic"] or None,
        "steps": [known.get(c, {"channel": c}) for c in split_list(typed["channels"])],
        "target_segment_ids": _ids(typed["target_segment_ids"]),
        "exclusion_segment_ids": _ids(typed["exclusion_segment_ids"]),
        "control_share": _percent(typed["control_percent"]),
        "schedule": _schedule(typed, timezone, current.schedule if current else None),
        "requires_approval": typed["requires_approval"],
    }
    for name in ("throttle_per_minute", "expires_after_hours"):
        value = optional_int(typed[name])
        if value is not None:
            data[name] = value
    return parse(CampaignIn, data)


def form_field(path: str) -> str:
    """The form field a service or schema error names (``steps.0.channel`` → channels)."""
    parts = path.split(".")
    head = parts[0]
    if head == "steps":
        return "channels"
    if head == "schedule":
        last = parts[-1] if len(parts) > 1 else ""
        return {"at": "schedule_at", "date": "local_date", "time": "local_time"}.get(
            last, "schedule_kind"
        )
    if head == "control_share":
        return "control_percent"
    if head in ("target_segment_ids", "exclusion_segment_ids"):
        return head
    return head if head in FIELDS else "_"


def _form_errors(exc: TactfulError) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, reason in errors_of(exc).items():
        found.setdefault(form_field(name) if name != "_" else "_", reason)
    return found


def _options(session: SessionDep, viewer: Viewer) -> dict[str, Any]:
    names = {b.id: b.name for b in viewer.brands}
    templates = [
        (t.id, f"{t.name} ({names.get(t.brand_id, t.brand_id)}: {', '.join(sorted(t.parts))})")
        for t in messaging.list_templates(session, workspace_id=viewer.workspace_id, kind="message")
    ]
    saved = segments.list_segments(session, workspace_id=viewer.workspace_id)
    return {
        "template_options": [("", "— choose —"), *templates],
        "segment_options": [(s.id, s.name) for s in saved],
    }


def _form(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    *,
    values_: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    campaign: Campaign | None = None,
) -> Response:
    return render(
        request,
        "campaign_form.html",
        viewer,
        status=status,
        values=values_,
        errors=errors,
        campaign=campaign,
        **_options(session, viewer),
        schedule_kinds=[
            *SCHEDULE_KINDS,
            *(
                [("recurring", "Keep the recurring schedule")]
                if campaign is not None and campaign.schedule.get("kind") == "recurring"
                else []
            ),
        ],
    )


def _campaign(session: SessionDep, viewer: Viewer, campaign_id: int) -> Campaign:
    """A campaign of a brand the viewer works for (403 for another brand's)."""
    campaign = campaigns.get_campaign(
        session, workspace_id=viewer.workspace_id, campaign_id=campaign_id
    )
    viewer.demand("campaigns.edit", campaign.brand_id)
    return campaign


@router.get("/campaigns", include_in_schema=False)
def campaign_list(
    request: Request, session: SessionDep, viewer: ViewerDep, status: str = ""
) -> Response:
    viewer.demand("campaigns.edit")
    rows = [
        c
        for c in campaigns.list_campaigns(
            session, workspace_id=viewer.workspace_id, status=status or None
        )
        if viewer.can("campaigns.edit", c.brand_id)
    ]
    return render(
        request,
        "campaigns.html",
        viewer,
        campaigns=rows,
        next_runs=campaigns.next_run_at(session, rows),
        brands={b.id: b.name for b in viewer.brands},
        shown=status,
    )


@router.get("/campaigns/new", include_in_schema=False)
def campaign_new(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("campaigns.edit")
    return _form(request, session, viewer, values_=_blank(viewer), errors={})


@router.post("/campaigns", include_in_schema=False)
def campaign_create(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Create a draft; a wrong value is shown next to its field, as typed."""
    viewer.demand("campaigns.edit")
    typed = _typed(form)
    try:
        brand_id = int_or_none(typed["brand_id"])
        viewer.demand("campaigns.edit", brand_id=brand_id)
        spec = spec_from(typed, viewer.workspace.timezone)
        with attempt(session):
            created = campaigns.create_campaign(
                session, workspace_id=viewer.workspace_id, spec=spec, actor=viewer.actor
            )
    except TactfulError as exc:
        if exc.status_code == 403:
            raise
        return _form(
            request,
            session,
            viewer,
            values_=typed,
            errors=_form_errors(exc),
            status=exc.status_code,
        )
    return redirect(f"/campaigns/{created.id}?saved=1")


# the fields of a definition the form edits (goal, checkpoints and context stay as they are)
EDITED = (
    "name",
    "description",
    "template_id",
    "message_class",
    "topic",
    "steps",
    "target_segment_ids",
    "exclusion_segment_ids",
    "control_share",
    "schedule",
    "throttle_per_minute",
    "expires_after_hours",
    "requires_approval",
)


def values_of(campaign: Campaign, timezone: str) -> dict[str, Any]:
    """The form's fields for a stored campaign."""
    schedule = campaign.schedule
    at = ""
    if schedule.get("kind") == "at":
        moment = datetime.fromisoformat(str(schedule["at"]).replace("Z", "+00:00"))
        at = moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%dT%H:%M")
    return {
        "name": campaign.name,
        "brand_id": str(campaign.brand_id),
        "description": campaign.description or "",
        "template_id": str(campaign.template_id),
        "channels": ", ".join(str(s["channel"]) for s in campaign.steps),
        "message_class": campaign.message_class,
        "topic": campaign.topic or "",
        "schedule_kind": schedule.get("kind", "now"),
        "schedule_at": at,
        "local_date": str(schedule.get("date", "")),
        "local_time": str(schedule.get("time", "")),
        "control_percent": f"{campaign.control_share * 100:g}",
        "throttle_per_minute": str(campaign.throttle_per_minute or ""),
        "expires_after_hours": str(campaign.expires_after_hours),
        "target_segment_ids": [str(i) for i in campaign.target_segment_ids],
        "exclusion_segment_ids": [str(i) for i in campaign.exclusion_segment_ids],
        "requires_approval": campaign.requires_approval,
    }


@router.get("/campaigns/{campaign_id}/edit", include_in_schema=False)
def campaign_edit(
    request: Request, session: SessionDep, viewer: ViewerDep, campaign_id: int
) -> Response:
    viewer.demand("campaigns.edit")
    campaign = _campaign(session, viewer, campaign_id)
    viewer.demand("campaigns.edit", campaign.brand_id)
    return _form(
        request,
        session,
        viewer,
        values_=values_of(campaign, viewer.workspace.timezone),
        errors={},
        campaign=campaign,
    )


@router.post("/campaigns/{campaign_id}/edit", include_in_schema=False)
def campaign_update(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep, campaign_id: int
) -> Response:
    """Change a draft; a wrong value is shown next to its field, as typed."""
    viewer.demand("campaigns.edit")
    campaign = _campaign(session, viewer, campaign_id)
    viewer.demand("campaigns.edit", campaign.brand_id)
    typed = {**_typed(form), "brand_id": str(campaign.brand_id)}
    try:
        spec = spec_from(typed, viewer.workspace.timezone, campaign)
        patch = CampaignPatch.model_validate(spec.model_dump(include=set(EDITED)))
        with attempt(session):
            campaigns.update_campaign(
                session,
                workspace_id=viewer.workspace_id,
                campaign_id=campaign.id,
                patch=patch,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        if exc.status_code == 403:
            raise
        session.refresh(campaign)
        return _form(
            request,
            session,
            viewer,
            values_=typed,
            errors=_form_errors(exc),
            status=exc.status_code,
            campaign=campaign,
        )
    return redirect(f"/campaigns/{campaign.id}?saved=1")


def _page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: Viewer,
    campaign: Campaign,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    estimate = None
    if campaign.status == DRAFT:
        estimate = campaigns.estimate(
            runtime, session, workspace_id=viewer.workspace_id, campaign_id=campaign.id
        )
    report = None
    if campaign.runs_started or campaign.status in (SENDING, DONE):
        report = _report(runtime, session, viewer, campaign)
    segment_names = {
        s.id: s.name for s in segments.list_segments(session, workspace_id=viewer.workspace_id)
    }
    template = next(
        (
            t
            for t in messaging.list_templates(
                session, workspace_id=viewer.workspace_id, kind="message"
            )
            if t.id == campaign.template_id
        ),
        None,
    )
    return render(
        request,
        "campaign.html",
        viewer,
        status=status,
        campaign=campaign,
        brand=viewer.brand(campaign.brand_id),
        message_template=template,
        segment_names=segment_names,
        estimate=estimate,
        report=report,
        progress=_progress(session, viewer, campaign),
        errors=errors or {},
        notice=notice,
        can_launch=viewer.can("campaigns.launch", campaign.brand_id),
        can_approve=viewer.can("campaigns.approve", campaign.brand_id)
        and campaign.launched_by != viewer.actor,
        awaiting=AWAITING_APPROVAL,
        draft=DRAFT,
        final=FINAL,
    )


def _progress(session: SessionDep, viewer: Viewer, campaign: Campaign) -> dict[str, Any]:
    runs = campaigns.list_runs(session, workspace_id=viewer.workspace_id, campaign_id=campaign.id)
    return {
        "runs": runs,
        "polling": campaign.status in POLLED,
        "next_run": campaigns.next_run_at(session, [campaign]).get(campaign.id),
    }


def _report(
    runtime: RuntimeDep, session: SessionDep, viewer: Viewer, campaign: Campaign
) -> dict[str, Any]:
    figures = campaigns.stats(
        runtime, session, workspace_id=viewer.workspace_id, campaign_id=campaign.id
    )
    by_status = [(label, int(figures.get(key) or 0)) for key, label in MESSAGE_STATUSES]
    target, control = figures["converted"], figures["control_converted"]
    conversion = [
        ("target", round(target["conversion_rate"] * 100, 1)),
        ("control", round(control["conversion_rate"] * 100, 1)),
    ]
    uplift = None
    if control["customers"]:
        uplift = round((target["conversion_rate"] - control["conversion_rate"]) * 100, 1)
    return {
        "figures": figures,
        "by_status": by_status,
        "conversion": conversion,
        "uplift": uplift,
        "suppressed": sorted(figures["suppressed_by_reason"].items()),
    }


@router.get("/campaigns/{campaign_id}", include_in_schema=False)
def campaign_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    campaign_id: int,
    saved: int = 0,
) -> Response:
    viewer.demand("campaigns.edit")
    campaign = _campaign(session, viewer, campaign_id)
    notice = {1: "The draft is saved.", 2: "Done."}.get(saved)
    return _page(request, runtime, session, viewer, campaign, notice=notice)


@router.get("/campaigns/{campaign_id}/progress", include_in_schema=False)
def campaign_progress(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, campaign_id: int
) -> Response:
    """The live fragment htmx polls while a campaign is scheduled or sending."""
    viewer.demand("campaigns.edit")
    campaign = _campaign(session, viewer, campaign_id)
    report = _report(runtime, session, viewer, campaign) if campaign.runs_started else None
    response = render(
        request,
        "campaign_progress.html",
        viewer,
        campaign=campaign,
        progress=_progress(session, viewer, campaign),
        report=report,
    )
    if campaign.status not in POLLED:
        # the run has ended: reload once so the page shows the report and its actions
        response.headers["HX-Refresh"] = "true"
    return response


def _act(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: Viewer,
    campaign_id: int,
    form: dict[str, Any],
    action: str,
) -> Response:
    campaign = _campaign(session, viewer, campaign_id)
    permission = "campaigns.approve" if action in ("approve", "reject") else "campaigns.launch"
    viewer.demand(permission, campaign.brand_id)
    comment = text(form, "comment") or None
    try:
        with attempt(session):
            if action == "launch":
                if not text(form, "confirm"):
                    raise ValidationFailed("tick the box to confirm the audience", field="confirm")
                expected = int_or_none(text(form, "expected_recipients"))
                if expected is None:
                    raise ValidationFailed("the confirmed size is missing", field="confirm")
                campaigns.launch(
                    session,
                    workspace_id=viewer.workspace_id,
                    campaign_id=campaign_id,
                    expected_recipients=expected,
                    tolerance=0.05,
                    actor=viewer.actor,
                )
            elif action == "approve":
                campaigns.approve(
                    session,
                    workspace_id=viewer.workspace_id,
                    campaign_id=campaign_id,
                    actor=viewer.actor,
                    comment=comment,
                )
            elif action == "reject":
                campaigns.reject(
                    session,
                    workspace_id=viewer.workspace_id,
                    campaign_id=campaign_id,
                    actor=viewer.actor,
                    comment=comment,
                )
            else:
                campaigns.cancel(
                    session,
                    workspace_id=viewer.workspace_id,
                    campaign_id=campaign_id,
                    actor=viewer.actor,
                )
    except TactfulError as exc:
        if exc.status_code == 403:
            raise
        session.refresh(campaign)
        errors = errors_of(exc)
        if "confirm" not in errors:
            errors = {"_": exc.message}
        return _page(
            request, runtime, session, viewer, campaign, errors=errors, status=exc.status_code
        )
    return redirect(f"/campaigns/{campaign_id}?saved=2")


ACTIONS = {
    "launch": "Launch a draft for the audience size the marketer saw and confirmed.",
    "approve": "Approve a launched campaign (someone other than who launched it).",
    "reject": "Send a campaign awaiting approval back to draft.",
    "cancel": "Stop every run, wave and delivery not sent yet.",
}


def _action_route(action: str, doc: str) -> None:
    """``POST /campaigns/{id}/{action}``: one of the lifecycle actions through ``_act``."""

    def route(
        request: Request,
        runtime: RuntimeDep,
        session: SessionDep,
        viewer: ViewerDep,
        form: FormDep,
        campaign_id: int,
    ) -> Response:
        return _act(request, runtime, session, viewer, campaign_id, form, action)

    route.__name__ = f"campaign_{action}"
    route.__doc__ = doc
    router.post(f"/campaigns/{{campaign_id}}/{action}", include_in_schema=False)(route)


for _action, _doc in ACTIONS.items():
    _action_route(_action, _doc)


@router.post("/campaigns/{campaign_id}/test-send", include_in_schema=False)
def campaign_test_send(
    request: Request, session: SessionDep, viewer: ViewerDep, campaign_id: int
) -> Response:
    """Send the campaign's message to the workspace's test customers only (a fragment)."""
    viewer.demand("campaigns.edit")
    campaign = _campaign(session, viewer, campaign_id)
    try:
        with attempt(session):
            outcomes = campaigns.test_send(
                session,
                workspace_id=viewer.workspace_id,
                campaign_id=campaign.id,
                customer_ids=None,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return render(request, "campaign_test_send.html", viewer, outcomes=[], failure=exc.message)
    return render(request, "campaign_test_send.html", viewer, outcomes=outcomes, failure=None)
