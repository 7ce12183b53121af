"""Signing in and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from tactful.core.api import SessionDep, api_router
from tactful.core.errors import Unauthorized
from tactful.core.security import hashes_match, random_token
from tactful.tenancy import users
from tactful.tenancy.service import first_workspace
from tactful.web import session as web_session
from tactful.web.ui import render

router = api_router()
LOGIN_COOKIE = "tactful_login"  # double-submit token: the sign-in form has no session yet


def _safe_next(value: str | None) -> str:
    # only paths of this site, never another host
    if value and value.startswith("/") and not value.startswith("//"):
        return value
    return "/"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/") -> Response:
    token = random_token(18)
    response = render(
        request, "login.html", None, csrf=token, next=_safe_next(next), email="", errors={}
    )
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", max_age=3600)
    return response


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    session: SessionDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hashes_match(expected, csrf):
        return render(
            request,
            "login.html",
            None,
            status=400,
            csrf=expected or random_token(),
            next=_safe_next(next),
            email=email,
            errors={"_": "the sign-in form expired; please try again"},
        )
    workspace = first_workspace(session)
    try:
        if workspace is None:
            raise Unauthorized("this installation has no workspace yet; run tactful init")
        principal = users.authenticate_user(
            session, workspace_id=workspace.id, email=email, password=password
        )
    except Unauthorized as exc:
        return render(
            request,
            "login.html",
            None,
            status=401,
            csrf=expected,
            next=_safe_next(next),
            email=email,
            errors={"_": exc.message},
        )
    assert principal.user_id is not None
    cookie, _state = web_session.issue(request.app.state.runtime.signer, principal.user_id)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        web_session.COOKIE, cookie, httponly=True, samesite="lax", max_age=web_session.MAX_AGE
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout", include_in_schema=False)
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(web_session.COOKIE)
    return response
