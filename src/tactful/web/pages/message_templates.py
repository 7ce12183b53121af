"""Templates: edit Liquid and MJML with a live preview for a chosen customer; syntax errors
with their line and column next to the editor; test sends to the brand's test recipients."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import RuntimeDep, SessionDep, api_router
from tactful.core.errors import TactfulError, ValidationFailed
from tactful.messaging import service as messaging
from tactful.messaging.models import MessageTemplate
from tactful.messaging.schemas import TemplateIn
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    optional_int,
    pairs,
    parse,
    redirect,
    render,
    text,
)

router = api_router()
# The fields the editor offers per channel (the e-mail body is MJML).
EDITOR_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("email", ("subject", "body", "text")),
    ("sms", ("text",)),
    ("push", ("title", "text", "url")),
    ("viber", ("text",)),
    ("telegram", ("text",)),
)
KINDS = ("message", "layout", "block")


def _values_of(template: MessageTemplate | None) -> dict[str, Any]:
    if template is None:
        return {"kind": "message", "key": "", "name": "", "brand_id": "", "layout_id": ""}
    values: dict[str, Any] = {
        "kind": template.kind,
        "key": template.key,
        "name": template.name,
        "brand_id": template.brand_id,
        "layout_id": template.layout_id or "",
    }
    for channel, names in EDITOR_PARTS:
        for name in names:
            values[f"parts.{channel}.{name}"] = template.parts.get(channel, {}).get(name, "")
    for name in ("audience_gender", "min_age", "max_age"):
        values[f"content_rules.{name}"] = template.content_rules.get(name) or ""
    return values


def _values_from(form: dict[str, Any]) -> dict[str, Any]:
    values = {name: text(form, name) for name in ("kind", "key", "name", "brand_id", "layout_id")}
    for channel, names in EDITOR_PARTS:
        for name in names:
            # sources keep their whitespace: line and column must match what was typed
            values[f"parts.{channel}.{name}"] = str(form.get(f"parts.{channel}.{name}", ""))
    for name in ("audience_gender", "min_age", "max_age"):
        values[f"content_rules.{name}"] = text(form, f"content_rules.{name}")
    return values


def _parts(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The channels the editor filled in (a channel with every field empty is left out)."""
    parts: dict[str, dict[str, str]] = {}
    for channel, names in EDITOR_PARTS:
        part = {n: values[f"parts.{channel}.{n}"] for n in names if values[f"parts.{channel}.{n}"]}
        if part:
            parts[channel] = part
    return parts


def _body(values: dict[str, Any]) -> dict[str, Any]:
    rules = {
        "audience_gender": values["content_rules.audience_gender"] or None,
        "min_age": optional_int(values["content_rules.min_age"]),
        "max_age": optional_int(values["content_rules.max_age"]),
    }
    return {
        "brand_id": optional_int(str(values["brand_id"])),
        "kind": values["kind"] or "message",
        "key": values["key"],
        "name": values["name"],
        "layout_id": optional_int(str(values["layout_id"])),
        "parts": _parts(values),
        "content_rules": rules,
    }


def _editor(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    *,
    template: MessageTemplate | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    notice: str | None = None,
) -> Response:
    warnings: list[Any] = []
    if template is not None and template.kind == "message" and not errors:
        _errors, warnings = messaging.validate(
            session,
            workspace_id=viewer.workspace_id,
            brand_id=template.brand_id,
            kind=template.kind,
            parts=template.parts,
            layout_id=template.layout_id,
        )
    layouts = messaging.list_templates(session, workspace_id=viewer.workspace_id, kind="layout")
    return render(
        request,
        "template.html",
        viewer,
        status=status,
        tpl=template,
        values=values,
        errors=errors,
        warnings=warnings,
        brand_options=[(b.id, b.name) for b in viewer.brands],
        kind_options=pairs(KINDS),
        layout_options=[("", "none"), *((t.id, t.name) for t in layouts)],
        editor_parts=EDITOR_PARTS,
        notice=notice,
    )


@router.get("/templates", include_in_schema=False)
def template_list(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("templates.edit")
    rows = messaging.list_templates(session, workspace_id=viewer.workspace_id)
    brands = {b.id: b.name for b in viewer.brands}
    return render(request, "templates.html", viewer, rows=rows, brands=brands)


@router.get("/templates/new", include_in_schema=False)
def template_new(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("templates.edit")
    values = _values_of(None)
    values.update({f"parts.{c}.{n}": "" for c, names in EDITOR_PARTS for n in names})
    values.update({f"content_rules.{n}": "" for n in ("audience_gender", "min_age", "max_age")})
    values["brand_id"] = viewer.brands[0].id
    return _editor(request, session, viewer, template=None, values=values, errors={})


@router.get("/templates/{template_id}", include_in_schema=False)
def template_edit(
    template_id: int, request: Request, session: SessionDep, viewer: ViewerDep, saved: int = 0
) -> Response:
    viewer.demand("templates.edit")
    template = messaging.get_template(
        session, workspace_id=viewer.workspace_id, template_id=template_id
    )
    return _editor(
        request,
        session,
        viewer,
        template=template,
        values=_values_of(template),
        errors={},
        notice="Saved." if saved else None,
    )


def _save(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    form: dict[str, Any],
    template: MessageTemplate | None,
) -> Response:
    values = _values_from(form)
    try:
        body = parse(TemplateIn, _body(values))
        viewer.demand("templates.edit", brand_id=body.brand_id)
        with attempt(session):
            saved, _warnings = messaging.save_template(
                session,
                workspace_id=viewer.workspace_id,
                actor=viewer.actor,
                template_id=template.id if template else None,
                **body.model_dump(exclude={"content_rules"}),
                content_rules=body.content_rules.model_dump(exclude_none=True),
            )
    except TactfulError as exc:
        return _editor(
            request,
            session,
            viewer,
            template=template,
            values=values,
            errors=errors_of(exc),
            status=exc.status_code,
        )
    return redirect(f"/templates/{saved.id}?saved=1")


@router.post("/templates", include_in_schema=False)
def template_create(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("templates.edit")
    return _save(request, session, viewer, form, None)


@router.post("/templates/preview", include_in_schema=False)
def template_preview(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """The editor's live preview: what is typed, rendered for a customer or the sample."""
    viewer.demand("templates.edit")
    values = _values_from(form)
    channel = text(form, "preview_channel") or "email"
    customer = text(form, "preview_customer")
    try:
        customer_id = optional_int(customer)
        if isinstance(customer_id, str):
            raise ValidationFailed("a customer id is a whole number", field="preview_customer")
        brand = viewer.brand(int_or_none(str(values["brand_id"])))
        rendered, problems, warnings = messaging.preview_draft(
            session,
            workspace_id=viewer.workspace_id,
            brand_id=brand.id,
            parts=_parts(values),
            channel=channel,
            customer_id=customer_id,
            context={},
            public_url=runtime.settings.public_url,
            layout_id=int_or_none(str(values["layout_id"])),
        )
    except TactfulError as exc:
        return render(
            request,
            "template_preview.html",
            viewer,
            rendered=None,
            problems=[],
            warnings=[],
            failure=exc.message,
            channel=channel,
        )
    return render(
        request,
        "template_preview.html",
        viewer,
        rendered=rendered,
        problems=problems,
        warnings=warnings,
        failure=None,
        channel=channel,
    )


@router.post("/templates/{template_id}", include_in_schema=False)
def template_update(
    template_id: int, request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("templates.edit")
    template = messaging.get_template(
        session, workspace_id=viewer.workspace_id, template_id=template_id
    )
    return _save(request, session, viewer, form, template)


@router.post("/templates/{template_id}/test-send", include_in_schema=False)
def template_test_send(
    template_id: int, request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Send the saved template to the brand's test recipients (nobody else)."""
    viewer.demand("templates.edit")
    template = messaging.get_template(
        session, workspace_id=viewer.workspace_id, template_id=template_id
    )
    viewer.demand("templates.edit", brand_id=template.brand_id)
    channel = text(form, "channel") or next(iter(template.parts), "email")
    try:
        with attempt(session):
            outcomes = messaging.test_send(
                session,
                workspace_id=viewer.workspace_id,
                brand_id=template.brand_id,
                template_id=template.id,
                channel=channel,
                customer_ids=None,
                context={},
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return render(request, "template_test_send.html", viewer, outcomes=[], failure=exc.message)
    return render(request, "template_test_send.html", viewer, outcomes=outcomes, failure=None)
