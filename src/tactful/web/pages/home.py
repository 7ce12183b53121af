"""The start page after signing in."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import SessionDep, api_router
from tactful.customers import service as customers
from tactful.web.ui import ViewerDep, render

router = api_router()


@router.get("/", include_in_schema=False)
def home(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    viewer.demand("dashboard.view")
    count = customers.count_customers(session, workspace_id=viewer.principal.workspace_id)
    return render(request, "home.html", viewer, customers=count)
