"""Messaging over HTTP: send (policy-checked), test sends, templates and previews, providers
and senders, deliveries, call tasks, provider status webhooks, and the customer-facing
tracking links, one-click unsubscribe and preference centre."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope, writes
from tactful.core.auth import Principal
from tactful.core.errors import Forbidden
from tactful.messaging import service
from tactful.messaging.channels.base import Callback
from tactful.messaging.models import MessageProvider, MessageTemplate
from tactful.messaging.schemas import (
    CallOutcomeIn,
    CallTaskOut,
    DeliveryOut,
    MessageIn,
    PreviewIn,
    PreviewOut,
    ProviderIn,
    ProviderOut,
    SenderIn,
    SenderOut,
    SendOutcomeOut,
    SendRequest,
    TemplateIn,
    TemplateOut,
    TestSendIn,
    ValidationOut,
)
from tactful.messaging.service.pages import render_page
from tactful.messaging.service.rendering import reads_as_test
from tactful.policy.schemas import ChannelStep

router = api_router(prefix="/v1", tags=["messaging"])
public = api_router(tags=["tracking"])
Admin = Annotated[Principal, require_scope("admin")]
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _brand_allowed(principal: Principal, brand_id: int) -> None:
    if principal.brand_id is not None and principal.brand_id != brand_id:
        raise Forbidden(f"this key is limited to brand {principal.brand_id}")


# -- sending ------------------------------------------------------------------------------


@router.post(
    "/messages",
    status_code=201,
    summary="Send a message or cascade to a customer (checked by the contact policy)",
    description="The policy decides: the answer is a planned delivery (channel, time, cost) "
    "or the reason nothing will be sent. Steps are tried in order; a step with a time-out "
    "falls through to the next when not delivered (or read) in time.",
)
def send_message(body: MessageIn, session: SessionDep, principal: Admin) -> SendOutcomeOut:
    _brand_allowed(principal, body.brand_id)
    [outcome] = service.send(
        session,
        [
            SendRequest(
                workspace_id=principal.workspace_id,
                brand_id=body.brand_id,
                customer_id=body.customer_id,
                template_id=body.template_id,
                message_class=body.message_class,
                source=f"api:{principal.actor}",
                steps=tuple(
                    ChannelStep(
                        s.channel,
                        timedelta(seconds=s.timeout_seconds) if s.timeout_seconds else None,
                        s.wait_for,
                    )
                    for s in body.steps
                ),
                context=body.context,
                topic=body.topic,
                tags=tuple(body.tags),
                dedupe_key=body.dedupe_key,
                priority=body.priority,
                not_before=body.not_before,
                expires_at=body.expires_at,
            )
        ],
    )
    return SendOutcomeOut.model_validate(outcome)


@router.post(
    "/messages/test-send",
    status_code=201,
    summary="Send a template to the brand's test recipients only",
)
def test_send(body: TestSendIn, session: SessionDep, principal: Admin) -> list[SendOutcomeOut]:
    _brand_allowed(principal, body.brand_id)
    outcomes = service.test_send(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        template_id=body.template_id,
        channel=body.channel,
        customer_ids=body.customer_ids,
        context=body.context,
        actor=principal.actor,
    )
    return [SendOutcomeOut.model_validate(o) for o in outcomes]


@router.get("/deliveries", summary="Deliveries, newest first")
def list_deliveries(
    session: SessionDep,
    principal: Admin,
    customer_id: int | None = None,
    source: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    rows = service.list_deliveries(
        session,
        workspace_id=principal.workspace_id,
        customer_id=customer_id,
        source=source,
        status=status,
        before_id=before_id,
        limit=limit,
    )
    return [DeliveryOut.model_validate(r) for r in rows]


@router.get("/deliveries/{delivery_id}", summary="One delivery")
def get_delivery(delivery_id: int, session: SessionDep, principal: Admin) -> DeliveryOut:
    row = service.get_delivery(
        session, workspace_id=principal.workspace_id, delivery_id=delivery_id
    )
    return DeliveryOut.model_validate(row)


@router.get(
    "/deliveries/{delivery_id}/events",
    summary="What happened to a delivery: statuses, opens, clicks, provider reports",
)
def delivery_events(
    delivery_id: int, session: SessionDep, principal: Admin
) -> list[dict[str, Any]]:
    rows = service.delivery_history(
        session, workspace_id=principal.workspace_id, delivery_id=delivery_id
    )
    return [{"kind": r.kind, "details": r.details, "at": r.at} for r in rows]


# -- templates ----------------------------------------------------------------------------


def _template_out(row: MessageTemplate, warnings: list[Any] | None = None) -> TemplateOut:
    out = TemplateOut.model_validate(row)
    out.warnings = [w.as_dict() for w in warnings or []]
    return out


@router.get("/templates", summary="Message templates, layouts and blocks")
def list_templates(
    session: SessionDep,
    principal: Admin,
    kind: str | None = None,
    brand_id: int | None = None,
) -> list[TemplateOut]:
    rows = service.list_templates(
        session, workspace_id=principal.workspace_id, kind=kind, brand_id=brand_id
    )
    return [_template_out(r) for r in rows]


@router.post(
    "/templates",
    status_code=201,
    summary="Create a template (refused with line and column when it does not parse)",
    description="The answer's `warnings` list variables that do not exist.",
)
def create_template(body: TemplateIn, session: SessionDep, principal: Admin) -> TemplateOut:
    _brand_allowed(principal, body.brand_id)
    row, warnings = service.save_template(
        session,
        workspace_id=principal.workspace_id,
        actor=principal.actor,
        **body.model_dump(exclude={"content_rules"}),
        content_rules=body.content_rules.model_dump(exclude_none=True),
    )
    return _template_out(row, warnings)


@router.put("/templates/{template_id}", summary="Replace a template (a new version)")
def update_template(
    template_id: int, body: TemplateIn, session: SessionDep, principal: Admin
) -> TemplateOut:
    _brand_allowed(principal, body.brand_id)
    row, warnings = service.save_template(
        session,
        workspace_id=principal.workspace_id,
        actor=principal.actor,
        template_id=template_id,
        **body.model_dump(exclude={"content_rules"}),
        content_rules=body.content_rules.model_dump(exclude_none=True),
    )
    return _template_out(row, warnings)


@router.get("/templates/{template_id}", summary="One template")
def get_template(template_id: int, session: SessionDep, principal: Admin) -> TemplateOut:
    row = service.get_template(
        session, workspace_id=principal.workspace_id, template_id=template_id
    )
    return _template_out(row)


@router.post(
    "/templates/validate",
    summary="Check a template without saving: syntax errors and unknown variables",
)
def validate_template(body: TemplateIn, session: SessionDep, principal: Admin) -> ValidationOut:
    parts: dict[str, dict[str, str]] = {str(k): v for k, v in body.parts.items()}
    errors, warnings = service.validate(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        kind=body.kind,
        parts=parts,
        layout_id=body.layout_id,
    )
    return ValidationOut(
        errors=[e.as_dict() for e in errors],
        warnings=[w.as_dict() for w in warnings],
        is_test_content=body.kind == "message" and reads_as_test(parts),
    )


@router.post(
    "/templates/{template_id}/preview",
    summary="Render a template for a real customer or a sample",
)
def preview_template(
    template_id: int,
    body: PreviewIn,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: Admin,
) -> PreviewOut:
    rendered, warnings = service.preview(
        session,
        workspace_id=principal.workspace_id,
        template_id=template_id,
        channel=body.channel,
        customer_id=body.customer_id,
        context=body.context,
        public_url=runtime.settings.public_url,
    )
    return PreviewOut(
        channel=rendered.channel,
        subject=rendered.subject,
        title=rendered.title,
        html=rendered.html,
        text=rendered.text,
        data=rendered.data,
        warnings=[w.as_dict() for w in warnings],
    )


# -- providers and senders ----------------------------------------------------------------


def _provider_out(row: MessageProvider, public_url: str) -> ProviderOut:
    return ProviderOut(
        id=row.id,
        brand_id=row.brand_id,
        channel=row.channel,
        kind=row.kind,
        name=row.name,
        config=service.masked(row.config),
        rate_per_second=row.rate_per_second,
        concurrency=row.concurrency,
        enabled=row.enabled,
        webhook_url=f"{public_url}/v1/messaging/webhooks/{row.id}",
    )


@router.get("/messaging/providers", summary="Channel providers (secrets masked)")
def list_providers(runtime: RuntimeDep, session: SessionDep, principal: Admin) -> list[ProviderOut]:
    rows = service.list_providers(session, workspace_id=principal.workspace_id)
    return [_provider_out(r, runtime.settings.public_url) for r in rows]


@router.post("/messaging/providers", status_code=201, summary="Configure a channel provider")
def create_provider(
    body: ProviderIn, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> ProviderOut:
    _brand_allowed(principal, body.brand_id)
    row = service.create_provider(
        session, workspace_id=principal.workspace_id, actor=principal.actor, **body.model_dump()
    )
    return _provider_out(row, runtime.settings.public_url)


@router.get("/messaging/senders", summary="Sender identities per brand and channel")
def list_senders(session: SessionDep, principal: Admin) -> list[SenderOut]:
    rows = service.list_senders(session, workspace_id=principal.workspace_id)
    return [SenderOut.model_validate(r) for r in rows]


@router.post("/messaging/senders", status_code=201, summary="Add a sender identity")
def create_sender(body: SenderIn, session: SessionDep, principal: Admin) -> SenderOut:
    _brand_allowed(principal, body.brand_id)
    row = service.create_sender(
        session, workspace_id=principal.workspace_id, actor=principal.actor, **body.model_dump()
    )
    return SenderOut.model_validate(row)


# -- provider status webhooks -------------------------------------------------------------


@router.post(
    "/messaging/webhooks/{provider_id}",
    summary="Provider status callbacks (signed; a bad signature gets 401)",
    description="Delivery reports, reads, bounces and complaints. The signature is the "
    "provider's own (Twilio, Viber, Telegram) or, for SMTP relays and the generic SMS API, "
    "HMAC-SHA256 of the body with the provider's webhook secret.",
)
async def provider_webhook(
    provider_id: int, request: Request, runtime: RuntimeDep, session: SessionDep
) -> dict[str, int]:
    query = f"?{request.url.query}" if request.url.query else ""
    callback = Callback(
        url=f"{runtime.settings.public_url}{request.url.path}{query}",
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
    )
    applied = service.handle_callback(
        session, workspace_id=None, provider_id=provider_id, callback=callback
    )
    return {"applied": applied}


# -- call tasks ---------------------------------------------------------------------------


@router.get("/call-tasks", summary="Calls to make, with the customer's context")
def list_call_tasks(
    session: SessionDep,
    principal: Admin,
    status: str | None = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CallTaskOut]:
    rows = service.list_call_tasks(
        session, workspace_id=principal.workspace_id, status=status, limit=limit
    )
    return [CallTaskOut.model_validate(service.task_view(session, r)) for r in rows]


@router.post("/call-tasks/{task_id}/outcome", summary="Record a call's outcome")
def complete_call_task(
    task_id: int, body: CallOutcomeIn, session: SessionDep, principal: Admin
) -> CallTaskOut:
    task = service.complete_call_task(
        session,
        workspace_id=principal.workspace_id,
        task_id=task_id,
        outcome=body.outcome,
        note=body.note,
        actor=principal.actor,
    )
    return CallTaskOut.model_validate(service.task_view(session, task))


# -- customer-facing links ----------------------------------------------------------------


def _evidence(request: Request) -> dict[str, Any]:
    return {
        "ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }


@public.get("/t/o/{token}", summary="Open pixel", include_in_schema=False)
@writes
def open_pixel(token: str, runtime: RuntimeDep, session: SessionDep) -> Response:
    service.record_open(session, signer=runtime.signer, token=token)
    return Response(PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})


@public.get("/t/c/{token}", summary="Click redirect", include_in_schema=False)
@writes
def click(token: str, runtime: RuntimeDep, session: SessionDep) -> RedirectResponse:
    url = service.record_click(session, signer=runtime.signer, token=token)
    return RedirectResponse(url, status_code=302)


def _unsubscribe_page(
    runtime: RuntimeDep, session: SessionDep, token: str, *, done: bool
) -> HTMLResponse:
    view = service.unsubscribe_view(
        session, signer=runtime.signer, token=token, public_url=runtime.settings.public_url
    )
    return HTMLResponse(
        render_page(
            "unsubscribe.html",
            done=done,
            action=f"{runtime.settings.public_url}/u/{token}",
            **view,
        )
    )


@public.get("/u/{token}", summary="Unsubscribe page", response_class=HTMLResponse)
def unsubscribe_page(token: str, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    return _unsubscribe_page(runtime, session, token, done=False)


@public.post(
    "/u/{token}",
    summary="One-click unsubscribe (RFC 8058 List-Unsubscribe-Post)",
    response_class=HTMLResponse,
)
def unsubscribe(
    token: str, request: Request, runtime: RuntimeDep, session: SessionDep
) -> HTMLResponse:
    service.unsubscribe(session, signer=runtime.signer, token=token, evidence=_evidence(request))
    return _unsubscribe_page(runtime, session, token, done=True)


@public.get("/p/{token}", summary="Preference centre", response_class=HTMLResponse)
def preference_centre(token: str, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    prefs = service.preferences(session, signer=runtime.signer, token=token)
    return HTMLResponse(
        render_page(
            "preferences.html",
            prefs=prefs,
            saved=False,
            action=f"{runtime.settings.public_url}/p/{token}",
        )
    )


@public.post("/p/{token}", summary="Save the preference centre", response_class=HTMLResponse)
async def save_preferences(
    token: str, request: Request, runtime: RuntimeDep, session: SessionDep
) -> HTMLResponse:
    form = await request.form()
    prefs = service.save_preferences(
        session,
        signer=runtime.signer,
        token=token,
        topics={str(v) for v in form.getlist("topic")},
        channels={str(v) for v in form.getlist("channel")},
        evidence={**_evidence(request), "form": "preference_centre"},
    )
    return HTMLResponse(
        render_page(
            "preferences.html",
            prefs=prefs,
            saved=True,
            action=f"{runtime.settings.public_url}/p/{token}",
        )
    )
