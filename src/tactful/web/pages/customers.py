"""Customers: search by any identity, a profile with attributes, metrics, consents, loyalty
balance, the unified timeline and why messages were (not) sent, and an audited export.
Roles without ``customers.view_pii`` (analysts) see masked contacts and search by id only."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tactful.core.api import RuntimeDep, SessionDep, api_router, writes
from tactful.core.errors import NotFound, TactfulError
from tactful.customers import service as customers
from tactful.customers.models import Customer
from tactful.loyalty.service import accounts as loyalty_accounts
from tactful.metrics import service as metrics
from tactful.policy import service as policy
from tactful.tenancy.service import record_audit
from tactful.web.ui import Viewer, ViewerDep, mask_email, mask_phone, redirect, render

router = api_router()
SEARCH_LIMIT = 50
EXPORT_LIMIT = 5000
PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{7,20}$")
# metrics shown on the profile, in this order
PROFILE_METRICS = (
    "lifecycle_stage",
    "receipts_count",
    "revenue",
    "avg_check",
    "days_since_last_purchase",
    "typical_interval_days",
    "favourite_store",
    "top_categories",
    "rfm_cell",
    "best_channel",
    "best_send_hour",
    "bonus_accrued",
    "bonus_spent",
)
MONEY_METRICS = frozenset({"revenue", "avg_check"})


def shown(viewer: Viewer, customer: Customer) -> dict[str, Any]:
    """A customer as a role may see them: contacts and names masked without PII rights."""
    pii = viewer.can("customers.view_pii")
    name = " ".join(p for p in (customer.first_name, customer.last_name) if p)
    if not pii:
        name = f"{name[:1]}." if name else ""
    return {
        "id": customer.id,
        "name": name or f"Customer {customer.id}",
        "email": customer.email if pii else mask_email(customer.email),
        "phone": customer.phone if pii else mask_phone(customer.phone),
        "city": customer.city,
        "created_at": customer.created_at,
        "is_test": customer.is_test,
        "anonymous": customer.anonymous,
    }


def _contact(viewer: Viewer, kind: str, value: str) -> str:
    """An identity's value, masked for roles without PII rights."""
    if viewer.can("customers.view_pii"):
        return value
    return mask_email(value) if kind == "email" else mask_phone(value)


def _exact_identity(session: SessionDep, viewer: Viewer, query: str) -> Customer | None:
    """The customer an e-mail or phone typed in any form belongs to."""
    kind = "email" if "@" in query else "phone" if PHONE_LIKE.match(query) else None
    if kind is None:
        return None
    try:
        return customers.find_customer(session, workspace=viewer.workspace, kind=kind, value=query)
    except TactfulError:
        return None


def _search(session: SessionDep, viewer: Viewer, query: str, limit: int) -> list[Customer]:
    if viewer.can("customers.view_pii"):
        return customers.search(
            session, workspace_id=viewer.workspace_id, query=query or None, limit=limit
        )
    if not query.isdigit():
        return []
    try:
        return [
            customers.get_customer(
                session, workspace_id=viewer.workspace_id, customer_id=int(query)
            )
        ]
    except NotFound:
        return []


@router.get("/customers", include_in_schema=False)
def customer_search(
    request: Request, session: SessionDep, viewer: ViewerDep, q: str = ""
) -> Response:
    viewer.demand("customers.view")
    query = q.strip()[:200]
    if query and viewer.can("customers.view_pii"):
        exact = _exact_identity(session, viewer, query)
        if exact is not None:
            return redirect(f"/customers/{exact.id}")
    found = _search(session, viewer, query, SEARCH_LIMIT)
    return render(
        request,
        "customers.html",
        viewer,
        q=query,
        found=[shown(viewer, c) for c in found],
        total=customers.count_customers(session, workspace_id=viewer.workspace_id),
    )


@router.get("/customers/export", include_in_schema=False)
@writes
def customer_export(session: SessionDep, viewer: ViewerDep, q: str = "") -> Response:
    """The search's customers with their contacts as CSV (audited)."""
    viewer.demand("customers.export")
    viewer.demand("customers.view_pii")
    query = q.strip()[:200]
    found = customers.search(
        session, workspace_id=viewer.workspace_id, query=query or None, limit=EXPORT_LIMIT
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "first_name", "last_name", "email", "phone", "city"])
    for c in found:
        writer.writerow([c.id, c.first_name, c.last_name, c.email, c.phone, c.city])
    record_audit(
        session,
        workspace_id=viewer.workspace_id,
        actor=viewer.actor,
        action="customers.exported",
        target_type="customer",
        target_id=None,
        details={"query": query, "rows": len(found)},
    )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
    )


def _metric_rows(runtime: RuntimeDep, viewer: Viewer, customer_id: int) -> list[tuple[str, Any]]:
    try:
        values = metrics.customer_metrics(
            runtime, workspace_id=viewer.workspace_id, customer_id=customer_id
        )
    except NotFound:
        return []
    return [(name, values.get(name)) for name in PROFILE_METRICS]


@router.get("/customers/{customer_id}", include_in_schema=False)
def customer_profile(
    customer_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    viewer: ViewerDep,
) -> Response:
    viewer.demand("customers.view")
    customer = customers.get_customer(
        session, workspace_id=viewer.workspace_id, customer_id=customer_id
    )
    if customer.id != customer_id:
        return redirect(f"/customers/{customer.id}")
    pii = viewer.can("customers.view_pii")
    identities = [
        {"kind": i.kind, "value": _contact(viewer, i.kind, i.value), "status": i.status}
        for i in customers.identities(session, customer.id)
        if pii or i.kind in ("email", "phone", "card")
    ]
    timeline = customers.timeline(
        runtime, session, workspace_id=viewer.workspace_id, customer_id=customer.id, before=None
    )
    accounts = (
        loyalty_accounts.accounts_of_customer(
            session, workspace_id=viewer.workspace_id, customer_id=customer.id
        )
        if viewer.can("loyalty.view")
        else []
    )
    return render(
        request,
        "customer.html",
        viewer,
        customer=shown(viewer, customer),
        attributes=sorted((customer.attributes or {}).items()) if pii else [],
        profile_fields=[
            ("gender", customer.gender),
            ("birthday", customer.birthday.isoformat() if customer.birthday and pii else None),
            ("city", customer.city),
            ("time zone", customer.timezone),
            ("locale", customer.locale),
        ],
        identities=identities,
        consents=customers.consents(
            session, workspace_id=viewer.workspace_id, customer_id=customer.id
        ),
        metrics=_metric_rows(runtime, viewer, customer.id),
        money_metrics=MONEY_METRICS,
        accounts=accounts,
        timeline=timeline,
        decisions=policy.why(
            session, workspace_id=viewer.workspace_id, customer_id=customer.id, limit=50
        ),
    )
