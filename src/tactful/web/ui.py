"""What every page shares: the signed-in viewer, CSRF, navigation by permission, rendering
with form errors that keep what the user typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tactful.core.api import SessionDep
from tactful.core.auth import Principal
from tactful.core.errors import Forbidden, TactfulError, ValidationFailed
from tactful.tenancy import users
from tactful.tenancy.models import Brand, User
from tactful.tenancy.service import list_brands
from tactful.web import session as web_session

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# (label, path, permission): the navigation a role sees
NAVIGATION = (
    ("Dashboard", "/", "dashboard.view"),
    ("Customers", "/customers", "customers.view"),
    ("Segments", "/segments", "segments.edit"),
    ("Templates", "/templates", "templates.edit"),
    ("Campaigns", "/campaigns", "campaigns.edit"),
    ("Journeys", "/journeys", "journeys.edit"),
    ("Contact policy", "/policy", "policy.view"),
    ("Loyalty", "/loyalty", "loyalty.view"),
    ("Settings", "/settings", "settings.view"),
)


class NotSignedIn(Exception):
    """Raised by pages when nobody is signed in; the app redirects to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass
class Viewer:
    """The signed-in person looking at a page."""

    principal: Principal
    user: User
    csrf: str
    brands: list[Brand] = field(default_factory=list)

    def can(self, permission: str, brand_id: int | None = None) -> bool:
        return self.principal.can(permission, brand_id=brand_id)

    def demand(self, permission: str, brand_id: int | None = None) -> None:
        self.principal.demand(permission, brand_id=brand_id)

    @property
    def navigation(self) -> list[tuple[str, str]]:
        return [(label, path) for label, path, permission in NAVIGATION if self.can(permission)]


def viewer(request: Request, session: SessionDep) -> Viewer:
    """The signed-in viewer, or a redirect to the sign-in page."""
    runtime = request.app.state.runtime
    state = web_session.read(runtime.signer, request.cookies.get(web_session.COOKIE))
    principal = users.principal_by_id(session, state.user_id) if state else None
    if state is None or principal is None or principal.user_id is None:
        raise NotSignedIn(request.url.path)
    user = users.get_user(session, workspace_id=principal.workspace_id, user_id=principal.user_id)
    brands = list_brands(session, workspace_id=principal.workspace_id)
    return Viewer(principal=principal, user=user, csrf=state.csrf, brands=brands)


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def csrf_protect(request: Request) -> None:
    """Every state-changing request carries the session's token (a form field ``csrf`` or
    the ``X-CSRF-Token`` header htmx sends)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    runtime = request.app.state.runtime
    state = web_session.read(runtime.signer, request.cookies.get(web_session.COOKIE))
    if state is None:
        raise NotSignedIn(request.headers.get("hx-current-url") or request.url.path)
    presented = request.headers.get("x-csrf-token")
    if not presented and "form" in request.headers.get("content-type", ""):
        presented = str((await request.form()).get("csrf") or "")
    if not web_session.csrf_ok(state, presented):
        raise Forbidden(
            "the form has expired or did not come from this site; reload the page and try again"
        )


async def form_data(request: Request) -> dict[str, Any]:
    """The submitted form as a dict (repeated fields as lists, without the CSRF token)."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    data.pop("csrf", None)
    return data


FormDep = Annotated[dict[str, Any], Depends(form_data)]


def render(
    request: Request, template: str, viewer_: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page (or an htmx fragment) with the viewer and navigation."""
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer_, "path": request.url.path, **context},
        status_code=status,
    )


def errors_of(exc: TactfulError) -> dict[str, str]:
    """Field -> reason for showing next to the inputs (the whole message under "_")."""
    if isinstance(exc, ValidationFailed) and exc.errors:
        return {e["field"]: e["reason"] for e in exc.errors}
    if exc.field:
        return {exc.field: exc.message}
    return {"_": exc.message}


def to_login(next_path: str) -> Response:
    return RedirectResponse(f"/login?next={quote(next_path)}", status_code=303)


def redirect(path: str) -> Response:
    """After a successful form post: see the result (htmx follows HX-Redirect)."""
    response = RedirectResponse(path, status_code=303)
    response.headers["HX-Redirect"] = path
    return response
