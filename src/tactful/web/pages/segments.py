"""The segment builder: conditions from the catalogue, nested in groups; size, reach per
channel and cost estimated live as conditions change; members previewed; overlap with another
segment; saving shows each problem next to its condition (the validator's node path)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import RuntimeDep, SessionDep, api_router
from tactful.core.errors import TactfulError, ValidationFailed
from tactful.segments import service as segments
from tactful.segments.models import REFRESH_MODES, Segment
from tactful.web import segment_form
from tactful.web.segment_form import Draft
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    optional_int,
    pairs,
    redirect,
    render,
    text,
)

router = api_router()
PREVIEW_SIZE = 20


def _options(session: SessionDep, viewer: Viewer) -> dict[str, Any]:
    catalogue = segments.catalogue(session, workspace_id=viewer.workspace_id)
    saved = segments.list_segments(session, workspace_id=viewer.workspace_id)
    return {
        "catalogue": catalogue,
        "saved": [(s.id, s.name) for s in saved],
        "kinds": segment_form.CONDITION_KINDS,
        "aggregate_options": pairs(segment_form.AGGREGATES),
        "action_options": pairs(segment_form.MESSAGE_ACTIONS),
        "channel_options": pairs(segment_form.CHANNELS),
        "operators_for": lambda draft: segment_form.operators_for(draft, catalogue),
    }


def _prepare(
    session: SessionDep, viewer: Viewer, root: Draft, op: str = ""
) -> tuple[Draft, dict[str, Any]]:
    options = _options(session, viewer)
    brand_ids = [b.id for b in viewer.brands]
    segment_ids = [i for i, _name in options["saved"]]
    root = segment_form.apply(root, op, options["catalogue"], brand_ids, segment_ids)
    return root, options


def _estimate(
    runtime: RuntimeDep, session: SessionDep, viewer: Viewer, root: Draft, brand_id: int | None
) -> dict[str, Any]:
    """The size, reach and cost of the tree, or its problems placed on the conditions."""
    catalogue = segments.catalogue(session, workspace_id=viewer.workspace_id)
    data = segment_form.definition(root, catalogue)
    brand = viewer.brand(brand_id)
    try:
        _node, description = segments.check_definition(
            session, workspace_id=viewer.workspace_id, definition=data
        )
        estimate = segments.estimate(
            runtime, session, workspace_id=viewer.workspace_id, brand_id=brand.id, definition=data
        )
    except ValidationFailed as exc:
        unplaced = segment_form.place(root, exc.errors or [{"field": "", "reason": exc.message}])
        return {"estimate": None, "problems": unplaced, "brand": brand}
    return {"estimate": estimate, "description": description, "problems": [], "brand": brand}


def _page(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    root: Draft,
    *,
    segment: Segment | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    estimate: dict[str, Any] | None = None,
    notice: str | None = None,
) -> Response:
    root, options = _prepare(session, viewer, root)
    return render(
        request,
        "segment.html",
        viewer,
        status=status,
        root=root,
        segment=segment,
        values=values,
        errors=errors,
        modes=REFRESH_MODES,
        est=estimate,
        notice=notice,
        **options,
    )


@router.get("/segments", include_in_schema=False)
def segment_list(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("segments.edit")
    rows = segments.list_segments(session, workspace_id=viewer.workspace_id)
    return render(request, "segments.html", viewer, segments=rows)


def _new_root() -> Draft:
    """A new segment starts with "bought at least once"."""
    first = Draft(
        kind="metric", fields={"metric": "receipts_count", "operator": "gte", "value": "1"}
    )
    return segment_form.number(Draft(children=[first]))


@router.get("/segments/new", include_in_schema=False)
def segment_new(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep
) -> Response:
    viewer.demand("segments.edit")
    root = _new_root()
    estimate = _estimate(runtime, session, viewer, root, None)
    values = {"name": "", "description": "", "refresh_mode": "manual", "every": ""}
    return _page(
        request, session, viewer, root, segment=None, values=values, errors={}, estimate=estimate
    )


@router.get("/segments/{segment_id}", include_in_schema=False)
def segment_edit(
    segment_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    saved: int = 0,
) -> Response:
    viewer.demand("segments.edit")
    segment = segments.get_segment(session, workspace_id=viewer.workspace_id, segment_id=segment_id)
    root = segment_form.from_definition(segment.definition)
    estimate = _estimate(runtime, session, viewer, root, segment.brand_id)
    values = {
        "name": segment.name,
        "description": segment.description or "",
        "brand_id": segment.brand_id or "",
        "refresh_mode": segment.refresh_mode,
        "every": segment.refresh_every_minutes or "",
    }
    return _page(
        request,
        session,
        viewer,
        root,
        segment=segment,
        values=values,
        errors={},
        estimate=estimate,
        notice="Saved." if saved else None,
    )


@router.post("/segments/builder", include_in_schema=False)
def segment_builder(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    """A structural change (a button or a choice): the builder again, with the estimate."""
    viewer.demand("segments.edit")
    root, options = _prepare(session, viewer, segment_form.from_form(form), text(form, "op"))
    estimate = _estimate(runtime, session, viewer, root, int_or_none(text(form, "estimate_brand")))
    return render(
        request, "segment_builder.html", viewer, root=root, est=estimate, oob=True, **options
    )


@router.post("/segments/estimate", include_in_schema=False)
def segment_estimate(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    """A typed change: the estimate again, and each condition's problems in its place."""
    viewer.demand("segments.edit")
    root = segment_form.from_form(form)
    estimate = _estimate(runtime, session, viewer, root, int_or_none(text(form, "estimate_brand")))
    return render(request, "segment_estimate.html", viewer, root=root, est=estimate, oob=True)


@router.post("/segments/preview", include_in_schema=False)
def segment_preview(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    """A sample of the members with the value each condition looked at."""
    viewer.demand("segments.edit")
    root = segment_form.from_form(form)
    catalogue = segments.catalogue(session, workspace_id=viewer.workspace_id)
    data = segment_form.definition(root, catalogue)
    try:
        result = segments.preview(
            runtime, session, workspace_id=viewer.workspace_id, definition=data, limit=PREVIEW_SIZE
        )
    except ValidationFailed as exc:
        return render(
            request, "segment_preview.html", viewer, result=None, problem=exc.message, columns=[]
        )
    labels = {d.path: d.label for d in root.walk() if d.kind != segment_form.GROUP}
    columns = [(path, labels.get(path, path)) for path in sorted(labels, key=labels.__getitem__)]
    return render(
        request, "segment_preview.html", viewer, result=result, problem=None, columns=columns
    )


@router.get("/segments/{segment_id}/overlap", include_in_schema=False)
def segment_overlap(
    segment_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    other: int,
) -> Response:
    viewer.demand("segments.edit")
    result = segments.overlap(
        runtime, session, workspace_id=viewer.workspace_id, first_id=segment_id, second_id=other
    )
    first, second = (
        segments.get_segment(session, workspace_id=viewer.workspace_id, segment_id=i).name
        for i in (segment_id, other)
    )
    return render(
        request, "segment_overlap.html", viewer, result=result, first=first, second=second
    )


def _save(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: Viewer,
    form: dict[str, Any],
    segment: Segment | None,
) -> Response:
    root = segment_form.from_form(form)
    catalogue = segments.catalogue(session, workspace_id=viewer.workspace_id)
    data = segment_form.definition(root, catalogue)
    values = {
        "name": text(form, "name"),
        "description": text(form, "description"),
        "brand_id": text(form, "brand_id"),
        "refresh_mode": text(form, "refresh_mode") or "manual",
        "every": text(form, "every"),
    }
    brand_id = optional_int(values["brand_id"])
    every = optional_int(values["every"])
    try:
        if not values["name"]:
            raise ValidationFailed("give the segment a name", field="name")
        if isinstance(every, str):
            raise ValidationFailed("a whole number of minutes", field="every")
        if isinstance(brand_id, str):
            raise ValidationFailed("choose a brand", field="brand_id")
        with attempt(session):
            if segment is None:
                saved = segments.create_segment(
                    session,
                    workspace_id=viewer.workspace_id,
                    name=values["name"],
                    definition=data,
                    description=values["description"] or None,
                    brand_id=brand_id,
                    refresh_mode=values["refresh_mode"],
                    refresh_every_minutes=every,
                    actor=viewer.actor,
                )
            else:
                saved = segments.update_segment(
                    session,
                    workspace_id=viewer.workspace_id,
                    segment_id=segment.id,
                    definition=data,
                    name=values["name"],
                    description=values["description"],
                    refresh_mode=values["refresh_mode"],
                    refresh_every_minutes=every,
                    actor=viewer.actor,
                )
    except TactfulError as exc:
        errors = errors_of(exc)
        problems = exc.errors if isinstance(exc, ValidationFailed) and exc.errors else []
        definition_problems = [p for p in problems if str(p["field"]).startswith("definition")]
        if definition_problems:
            unplaced = segment_form.place(root, definition_problems)
            errors = {k: v for k, v in errors.items() if not k.startswith("definition")}
            if unplaced:
                errors["_"] = "; ".join(unplaced)
            elif not errors:
                errors["_"] = "some conditions need attention (marked below)"
        if "refresh_every_minutes" in errors:
            errors["every"] = errors.pop("refresh_every_minutes")
        return _page(
            request,
            session,
            viewer,
            root,
            segment=segment,
            values=values,
            errors=errors,
            status=exc.status_code,
        )
    return redirect(f"/segments/{saved.id}?saved=1")


@router.post("/segments", include_in_schema=False)
def segment_create(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    viewer.demand("segments.edit")
    return _save(request, runtime, session, viewer, form, None)


@router.post("/segments/{segment_id}", include_in_schema=False)
def segment_update(
    segment_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    viewer.demand("segments.edit")
    segment = segments.get_segment(session, workspace_id=viewer.workspace_id, segment_id=segment_id)
    return _save(request, runtime, session, viewer, form, segment)
