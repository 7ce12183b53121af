"""The dashboard: the size and health of the customer base, reach, data quality and this
week's messages (from the reports service)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import RuntimeDep, SessionDep, api_router
from tactful.reports import service as reports
from tactful.web.ui import ViewerDep, render

router = api_router()


@router.get("/", include_in_schema=False)
def home(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
    brand_id: int | None = None,
) -> Response:
    viewer.demand("dashboard.view")
    brand = viewer.brand(brand_id)
    board = reports.dashboard(runtime, session, workspace_id=viewer.workspace_id, brand_id=brand.id)
    sent_chart = [(channel, count) for channel, (count, _cost) in sorted(board.sent.items())]
    return render(request, "home.html", viewer, board=board, brand=brand, sent_chart=sent_chart)
