"""The FastAPI application: engines are built in the lifespan, every feature router mounted."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tactful import wiring
from tactful.campaigns import api as campaigns_api
from tactful.config import Settings
from tactful.core import clock
from tactful.core.api import EXCEPTION_HANDLERS, tactful_error_handler
from tactful.core.errors import TactfulError
from tactful.core.jobs import queue
from tactful.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from tactful.core.runtime import Runtime, build_runtime
from tactful.customers import api as customers_api
from tactful.events import api as events_api
from tactful.events import loader
from tactful.journeys import api as journeys_api
from tactful.loyalty import api as loyalty_api
from tactful.messaging import api as messaging_api
from tactful.metrics import api as metrics_api
from tactful.ops import api as ops_api
from tactful.policy import api as policy_api
from tactful.segments import api as segments_api
from tactful.tenancy import api as tenancy_api
from tactful.tenancy import service as tenancy_service
from tactful.web import router as web
from tactful.worker import start_in_thread

log = structlog.get_logger("tactful.http")

DESCRIPTION = """
Tactful keeps one profile per customer across shop, stores, app and loyalty card, computes
segments, and sends campaigns and journeys through one contact policy.

Authenticate with an API key: `Authorization: Bearer <key>`, or HTTP Basic with the key as
the user name (the way Segment libraries send a write key). Errors are RFC 9457 problem
details (`application/problem+json`) naming the field and the reason.
"""

ROUTERS = (
    tenancy_api.router,
    customers_api.router,
    events_api.router,
    loyalty_api.router,
    messaging_api.router,
    messaging_api.public,
    ops_api.router,
    policy_api.router,
    metrics_api.router,
    segments_api.router,
    campaigns_api.router,
    journeys_api.router,
)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("tactful_jobs", "Jobs by status", labels=["status"])
        with self.runtime.db.scope(readonly=True) as session:
            counts = queue.counts_by_status(session)
        for status in ("queued", "running", "done", "dead"):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        waiting, lag = loader.lag_seconds(self.runtime)
        yield GaugeMetricFamily(
            "tactful_loader_waiting_rows", "Inbox rows not yet in the warehouse", value=waiting
        )
        yield GaugeMetricFamily(
            "tactful_loader_lag_seconds",
            "Age of the oldest inbox row not yet in the warehouse",
            value=lag,
        )


class RequestContextMiddleware:
    """Request ids, access logs and HTTP metrics (pure ASGI, so streaming is untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(scope["method"], path, f"{status // 100}xx").inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(elapsed)
            if status >= 500:
                log.warning(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed * 1000, 1),
                    request_id=request_id,
                )


async def _error_for_api_or_page(request: Request, exc: Exception) -> Response:
    """Problem details for the API; a readable page for the web UI."""
    assert isinstance(exc, TactfulError)
    if getattr(request.state, "web", False):
        return web.html_error(request, exc)
    return await tactful_error_handler(request, exc)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    run_worker: bool | None = None,
    skip_jobs: frozenset[str] = frozenset(),
) -> FastAPI:
    """Build the app. With ``runtime`` given (tests, ``serve``) the caller owns it; its
    worker leaves the jobs named in ``skip_jobs`` to another process."""
    wiring.install()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or build_runtime(settings)
        app.state.runtime = rt
        registry = CollectorRegistry()
        registry.register(DatabaseCollector(rt))
        app.state.metrics_registry = registry
        worker = None
        want_worker = rt.settings.server.run_worker if run_worker is None else run_worker
        if want_worker:
            worker, _thread = start_in_thread(rt, skip=skip_jobs)
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if owned:
                rt.close()

    app = FastAPI(
        title="Tactful",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.state.authenticate_key = tenancy_service.authenticate_api_key
    app.state.record_key_use = tenancy_service.record_api_key_use
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.add_exception_handler(TactfulError, _error_for_api_or_page)
    app.add_middleware(RequestContextMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    web.mount(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness and readiness")
    async def healthz(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        checks: dict[str, Any] = {}

        def check_db() -> None:
            with rt.db.scope(readonly=True) as session:
                queue.counts_by_status(session)

        try:
            await run_in_threadpool(check_db)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc}"
        checks["warehouse"] = "open" if rt.warehouse.is_open else "not opened yet"
        healthy = checks["database"] == "ok"
        return JSONResponse(
            {
                "status": "ok" if healthy else "degraded",
                "time": clock.now().isoformat(),
                "checks": checks,
            },
            status_code=200 if healthy else 503,
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    async def metrics(request: Request) -> Response:
        registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)

        def render() -> bytes:
            body = generate_latest(REGISTRY)
            if registry is not None:
                body += generate_latest(registry)
            return body

        body = await run_in_threadpool(render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
