"""The web UI's routes, static files and HTML error pages, mounted by the app."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from tactful.core.errors import TactfulError
from tactful.web.pages import (
    auth,
    campaigns,
    customers,
    home,
    journeys,
    loyalty,
    message_templates,
    policy,
    segments,
    settings,
)
from tactful.web.ui import HERE, NotSignedIn, csrf_protect, render, to_login

PAGES = (
    home.router,
    customers.router,
    segments.router,
    message_templates.router,
    policy.router,
    loyalty.router,
    campaigns.router,
    journeys.router,
    settings.router,
)


def mount(app: FastAPI) -> None:
    """Add the pages (CSRF-protected), the sign-in pages and the static files."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(auth.router)
    protected = APIRouter(dependencies=[Depends(csrf_protect), Depends(_mark_web)])
    for router in PAGES:
        protected.include_router(router)
    app.include_router(protected)
    app.add_exception_handler(NotSignedIn, _not_signed_in)


async def _mark_web(request: Request) -> None:
    request.state.web = True


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotSignedIn)
    if request.headers.get("hx-request"):
        response = Response(status_code=204)
        response.headers["HX-Redirect"] = "/login"
        return response
    return to_login(exc.next_path)


def html_error(request: Request, exc: TactfulError) -> Response:
    """A web page's error as a page a person reads (API routes keep problem details)."""
    titles = {401: "Please sign in", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    return render(
        request,
        "error.html",
        None,
        status=exc.status_code,
        title=titles.get(exc.status_code, "Something is wrong"),
        message=exc.message,
    )
