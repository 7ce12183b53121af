"""Settings: brands and channel prices, providers and sender identities, people and their
roles, API keys (a new key is shown once). Owners and admins see them; what reaches beyond one
brand (new brands, people, keys for every brand) needs a role granted for the whole
workspace, so a brand's admin cannot widen their own reach."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from tactful.core.api import RuntimeDep, SessionDep, api_router
from tactful.core.auth import PERMISSIONS, ROLES, SCOPES
from tactful.core.errors import Forbidden, NotFound, TactfulError, ValidationFailed
from tactful.messaging import service as messaging
from tactful.messaging.channels import PROVIDER_KINDS
from tactful.messaging.schemas import ProviderIn, SenderIn
from tactful.tenancy import service as tenancy
from tactful.tenancy import users
from tactful.tenancy.models import ApiKey
from tactful.tenancy.schemas import ApiKeyIn, BrandIn, ChannelPriceIn
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    optional_int,
    pairs,
    parse,
    redirect,
    render,
    text,
    values,
)

router = api_router()
TABS = (
    ("brands", "/settings", "Brands and prices"),
    ("channels", "/settings/channels", "Providers and senders"),
    ("users", "/settings/users", "People and roles"),
    ("api-keys", "/settings/api-keys", "API keys"),
)


def _workspace_grant(viewer: Viewer, permission: str) -> bool:
    """Whether the viewer holds ``permission`` through a role for the whole workspace."""
    allowed = PERMISSIONS[permission]
    return any(brand is None and role in allowed for brand, role in viewer.principal.brand_roles)


def _demand_workspace(viewer: Viewer, permission: str) -> None:
    if not _workspace_grant(viewer, permission):
        raise Forbidden(
            f"your role does not allow {permission.replace('.', ': ')} for the whole workspace"
        )


def _context(session: Session, viewer: Viewer, tab: str, public_url: str) -> dict[str, Any]:
    """What a tab shows."""
    if tab == "brands":
        return {
            "prices": tenancy.list_channel_prices(session, workspace_id=viewer.workspace_id),
            "price_channels": pairs(tenancy.PRICE_CHANNELS),
        }
    if tab == "channels":
        providers = messaging.list_providers(session, workspace_id=viewer.workspace_id)
        return {
            "providers": providers,
            "provider_options": [(p.id, f"{p.name} ({p.channel})") for p in providers],
            "senders": messaging.list_senders(session, workspace_id=viewer.workspace_id),
            "kinds": pairs(sorted(PROVIDER_KINDS)),
            "required": "; ".join(
                f"{kind}: {', '.join(spec[1]) or 'nothing'}"
                for kind, spec in sorted(PROVIDER_KINDS.items())
            ),
            "masked": messaging.masked,
            "public_url": public_url,
        }
    if tab == "users":
        return {
            "people": users.list_users(session, workspace_id=viewer.workspace_id),
            "roles": pairs(ROLES),
        }
    return {
        "keys": tenancy.list_api_keys(session, workspace_id=viewer.workspace_id),
        "scopes": SCOPES,
    }


def _tab(
    request: Request,
    session: Session,
    viewer: Viewer,
    tab: str,
    *,
    public_url: str,
    form: str = "",
    values_: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    notice: str | None = None,
    secret: str | None = None,
) -> Response:
    return render(
        request,
        "settings.html",
        viewer,
        status=status,
        tab=tab,
        tabs=TABS,
        form=form,
        values=values_ or {},
        errors=errors or {},
        notice=notice,
        secret=secret,
        workspace_edit=_workspace_grant(viewer, "settings.edit"),
        manages_people=_workspace_grant(viewer, "users.manage"),
        owner=_is_owner(viewer),
        **_context(session, viewer, tab, public_url),
    )


def _show(tab: str, permission: str = "settings.view") -> Any:
    def page(
        request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep
    ) -> Response:
        if permission == "users.manage":
            _demand_workspace(viewer, permission)
        viewer.demand(permission)
        saved = request.query_params.get("saved")
        return _tab(
            request,
            session,
            viewer,
            tab,
            public_url=runtime.settings.public_url,
            notice="Saved." if saved else None,
        )

    return page


router.get("/settings", include_in_schema=False)(_show("brands"))
router.get("/settings/channels", include_in_schema=False)(_show("channels"))
router.get("/settings/users", include_in_schema=False)(_show("users", "users.manage"))
router.get("/settings/api-keys", include_in_schema=False)(_show("api-keys"))


def _refused(
    request: Request,
    runtime: RuntimeDep,
    session: Session,
    viewer: Viewer,
    tab: str,
    form: str,
    typed: dict[str, Any],
    exc: TactfulError,
) -> Response:
    return _tab(
        request,
        session,
        viewer,
        tab,
        public_url=runtime.settings.public_url,
        form=form,
        values_=typed,
        errors=errors_of(exc),
        status=exc.status_code,
    )


@router.post("/settings/brands", include_in_schema=False)
def brand_create(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    _demand_workspace(viewer, "settings.edit")
    typed = {"slug": text(form, "slug"), "name": text(form, "name")}
    try:
        body = parse(BrandIn, typed)
        with attempt(session):
            tenancy.create_brand(
                session,
                workspace_id=viewer.workspace_id,
                slug=body.slug,
                name=body.name,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "brands", "brand", typed, exc)
    return redirect("/settings?saved=1")


@router.post("/settings/prices", include_in_schema=False)
def price_set(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("settings.edit")
    typed = {name: text(form, name) for name in ("brand_id", "channel", "price", "provider")}
    try:
        body = parse(
            ChannelPriceIn,
            {
                "brand_id": optional_int(typed["brand_id"]),
                "channel": typed["channel"],
                "price": optional_int(typed["price"]),
                "provider": typed["provider"] or "default",
            },
        )
        viewer.demand("settings.edit", brand_id=body.brand_id)
        with attempt(session):
            tenancy.set_channel_price(
                session,
                workspace_id=viewer.workspace_id,
                brand_id=body.brand_id,
                channel=body.channel,
                price=body.price,
                provider=body.provider,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "brands", "price", typed, exc)
    return redirect("/settings?saved=1")


@router.post("/settings/providers", include_in_schema=False)
def provider_create(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("settings.edit")
    names = ("brand_id", "kind", "name", "config", "rate_per_second", "concurrency")
    typed = {name: text(form, name) for name in names}
    typed["config"] = str(form.get("config", ""))
    try:
        try:
            config = orjson.loads(typed["config"] or "{}")
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed(f"not valid JSON: {exc}", field="config") from exc
        body = parse(
            ProviderIn,
            {
                "brand_id": optional_int(typed["brand_id"]),
                "kind": typed["kind"],
                "name": typed["name"],
                "config": config,
                "rate_per_second": typed["rate_per_second"] or None,
                "concurrency": optional_int(typed["concurrency"]) if typed["concurrency"] else 4,
            },
        )
        viewer.demand("settings.edit", brand_id=body.brand_id)
        with attempt(session):
            messaging.create_provider(
                session, workspace_id=viewer.workspace_id, actor=viewer.actor, **body.model_dump()
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "channels", "provider", typed, exc)
    return redirect("/settings/channels?saved=1")


@router.post("/settings/senders", include_in_schema=False)
def sender_create(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("settings.edit")
    names = ("brand_id", "channel", "provider_id", "address", "name", "reply_to")
    typed: dict[str, Any] = {name: text(form, name) for name in names}
    typed["is_default"] = bool(text(form, "is_default"))
    try:
        body = parse(
            SenderIn,
            {
                **typed,
                "brand_id": optional_int(typed["brand_id"]),
                "provider_id": optional_int(typed["provider_id"]),
                "name": typed["name"] or None,
                "reply_to": typed["reply_to"] or None,
            },
        )
        viewer.demand("settings.edit", brand_id=body.brand_id)
        with attempt(session):
            messaging.create_sender(
                session, workspace_id=viewer.workspace_id, actor=viewer.actor, **body.model_dump()
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "channels", "sender", typed, exc)
    return redirect("/settings/channels?saved=1")


def _roles(role: str, brand: str) -> list[tuple[int | None, str]]:
    brand_id = optional_int(brand)
    if isinstance(brand_id, str):
        raise ValidationFailed("choose a brand or the whole workspace", field="brand_id")
    return [(brand_id, role)]


def _grants_allowed(viewer: Viewer, role: str) -> None:
    # only an owner makes owners: an admin cannot raise anyone above themselves
    if role == "owner" and not _is_owner(viewer):
        raise ValidationFailed("only an owner may make someone an owner", field="role")


def _is_owner(viewer: Viewer) -> bool:
    return any(b is None and role == "owner" for b, role in viewer.principal.brand_roles)


def _may_manage(session: Session, viewer: Viewer, user_id: int) -> None:
    """Admins manage people, but only an owner changes an owner (or themselves)."""
    target = users.principal_by_id(session, user_id)
    if target is not None and target.workspace_id != viewer.workspace_id:
        target = None
    if target is None:
        raise NotFound(f"user {user_id} does not exist", field="user_id")
    if user_id == viewer.user.id:
        raise Forbidden("you cannot change your own roles or account here")
    if any(role == "owner" for _b, role in target.brand_roles) and not _is_owner(viewer):
        raise Forbidden("only an owner may change an owner")


@router.post("/settings/users", include_in_schema=False)
def user_create(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    _demand_workspace(viewer, "users.manage")
    typed = {name: text(form, name) for name in ("email", "name", "role", "brand_id")}
    password = str(form.get("password", ""))
    try:
        _grants_allowed(viewer, typed["role"])
        with attempt(session):
            users.create_user(
                session,
                workspace_id=viewer.workspace_id,
                email=typed["email"],
                name=typed["name"],
                password=password,
                roles=_roles(typed["role"], typed["brand_id"]),
                actor=viewer.actor,
            )
    except TactfulError as exc:
        errors = errors_of(exc)
        if "roles.0.role" in errors:
            errors["role"] = errors.pop("roles.0.role")
        if "roles.0.brand_id" in errors:
            errors["brand_id"] = errors.pop("roles.0.brand_id")
        return _tab(
            request,
            session,
            viewer,
            "users",
            public_url=runtime.settings.public_url,
            form="user",
            values_=typed,
            errors=errors,
            status=exc.status_code,
        )
    return redirect("/settings/users?saved=1")


@router.post("/settings/users/{user_id}/roles", include_in_schema=False)
def user_roles(
    user_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
) -> Response:
    _demand_workspace(viewer, "users.manage")
    _may_manage(session, viewer, user_id)
    typed = {"role": text(form, "role"), "brand_id": text(form, "brand_id")}
    try:
        _grants_allowed(viewer, typed["role"])
        with attempt(session):
            users.set_roles(
                session,
                workspace_id=viewer.workspace_id,
                user_id=user_id,
                roles=_roles(typed["role"], typed["brand_id"]),
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "users", f"roles-{user_id}", typed, exc)
    return redirect("/settings/users?saved=1")


@router.post("/settings/users/{user_id}/disable", include_in_schema=False)
def user_disable(user_id: int, session: SessionDep, viewer: ViewerDep) -> Response:
    _demand_workspace(viewer, "users.manage")
    _may_manage(session, viewer, user_id)
    users.disable_user(
        session, workspace_id=viewer.workspace_id, user_id=user_id, actor=viewer.actor
    )
    return redirect("/settings/users?saved=1")


@router.post("/settings/api-keys", include_in_schema=False)
def key_issue(
    request: Request, runtime: RuntimeDep, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Issue a key: the page shows it this once (only its hash is kept)."""
    viewer.demand("settings.edit")
    typed: dict[str, Any] = {
        "name": text(form, "name"),
        "brand_id": text(form, "brand_id"),
        "scopes": values(form, "scopes"),
    }
    try:
        body = parse(
            ApiKeyIn,
            {**typed, "brand_id": optional_int(typed["brand_id"])},
        )
        if body.brand_id is None:
            _demand_workspace(viewer, "settings.edit")
        viewer.demand("settings.edit", brand_id=body.brand_id)
        with attempt(session):
            _key, plain = tenancy.issue_api_key(
                session,
                workspace_id=viewer.workspace_id,
                name=body.name,
                scopes=list(body.scopes),
                brand_id=body.brand_id,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return _refused(request, runtime, session, viewer, "api-keys", "key", typed, exc)
    return _tab(
        request,
        session,
        viewer,
        "api-keys",
        public_url=runtime.settings.public_url,
        secret=plain,
        notice="The key is issued: copy it now, it is not shown again.",
    )


@router.post("/settings/api-keys/{key_id}/revoke", include_in_schema=False)
def key_revoke(key_id: int, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("settings.edit")
    key = session.get(ApiKey, key_id)
    if key is not None and key.workspace_id == viewer.workspace_id:
        if key.brand_id is None:
            _demand_workspace(viewer, "settings.edit")
        viewer.demand("settings.edit", brand_id=key.brand_id)
    tenancy.revoke_api_key(
        session, workspace_id=viewer.workspace_id, key_id=key_id, actor=viewer.actor
    )
    return redirect("/settings/api-keys?saved=1")
