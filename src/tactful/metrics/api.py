"""Metrics over HTTP: the catalog, one customer's metrics, freshness and rebuilds."""

from __future__ import annotations

from typing import Annotated

from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.customers.service import get_customer
from tactful.metrics import service
from tactful.metrics.schemas import (
    CustomerMetricsOut,
    MetricOut,
    MetricsStatusOut,
    RebuildIn,
    RebuildOut,
)

router = api_router(prefix="/v1", tags=["metrics"])
Admin = Annotated[Principal, require_scope("admin")]


@router.get("/metrics", summary="Every customer metric: type, meaning, window and formula")
def list_metrics(principal: Admin) -> list[MetricOut]:
    return [
        MetricOut.model_validate({**spec.__dict__, "values": list(spec.values)})
        for spec in service.metric_specs()
    ]


@router.get("/metrics/status", summary="How fresh profiles and metrics in the warehouse are")
def metrics_status(session: SessionDep, principal: Admin) -> MetricsStatusOut:
    return MetricsStatusOut.model_validate(
        service.status(session, workspace_id=principal.workspace_id)
    )


@router.post(
    "/metrics/rebuild",
    status_code=202,
    summary="Queue a rebuild of every customer's metrics (optionally resyncing profiles)",
)
def rebuild(body: RebuildIn, session: SessionDep, principal: Admin) -> RebuildOut:
    queued = service.queue_rebuild(
        session, workspace_id=principal.workspace_id, profiles=body.profiles
    )
    return RebuildOut(queued=queued)


@router.get("/customers/{customer_id}/metrics", summary="A customer's metrics, stored and derived")
def customer_metrics(
    customer_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> CustomerMetricsOut:
    customer = get_customer(session, workspace_id=principal.workspace_id, customer_id=customer_id)
    values = service.customer_metrics(
        runtime, workspace_id=principal.workspace_id, customer_id=customer.id
    )
    computed_at = values.pop("computed_at")
    return CustomerMetricsOut(customer_id=customer.id, computed_at=computed_at, metrics=values)
