"""Queries for the metrics package (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tactful.core.dialect import insert_ignore, lock_rows
from tactful.customers.models import ADVERTISING, GRANTED, PERSONAL_DATA, Consent, Customer
from tactful.metrics.models import MetricsState
from tactful.tenancy.models import Workspace

CHUNK = 900


def state(session: Session, workspace_id: int) -> MetricsState:
    """The workspace's state row, created on first use and locked (a read-write
    transaction)."""
    session.execute(
        insert_ignore(
            session, MetricsState, {"workspace_id": workspace_id}, conflict=["workspace_id"]
        )
    )
    stmt = select(MetricsState).where(MetricsState.workspace_id == workspace_id)
    row = session.scalars(lock_rows(session, stmt)).one()
    session.refresh(row)
    return row


def find_state(session: Session, workspace_id: int) -> MetricsState | None:
    """The workspace's state row, if any, without writing (read-only transactions)."""
    return session.scalars(
        select(MetricsState).where(MetricsState.workspace_id == workspace_id)
    ).one_or_none()


def profiles_synced_to(session: Session, workspace_id: int) -> datetime | None:
    """Where the last sync of changed profiles ended (None: never synced), without
    writing."""
    value: datetime | None = session.scalar(
        select(MetricsState.profiles_synced_to).where(MetricsState.workspace_id == workspace_id)
    )
    return value


def workspace_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Workspace.id).order_by(Workspace.id)))


def customers(session: Session, ids: Sequence[int]) -> list[Customer]:
    """Customers by id, in chunks."""
    found: list[Customer] = []
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), CHUNK):
        found.extend(
            session.scalars(select(Customer).where(Customer.id.in_(wanted[start : start + CHUNK])))
        )
    return found


def customer_ids(session: Session, workspace_id: int, *, after_id: int, limit: int) -> list[int]:
    """A page of a workspace's customer ids."""
    return list(
        session.scalars(
            select(Customer.id)
            .where(Customer.workspace_id == workspace_id, Customer.id > after_id)
            .order_by(Customer.id)
            .limit(limit)
        )
    )


def changed_since(
    session: Session, workspace_id: int, since: datetime | None, until: datetime
) -> list[tuple[int, datetime]]:
    """Customers updated in ``(since, until]`` and when."""
    stmt = select(Customer.id, Customer.updated_at).where(
        Customer.workspace_id == workspace_id, Customer.updated_at <= until
    )
    if since is not None:
        stmt = stmt.where(Customer.updated_at > since)
    return [(int(i), at) for i, at in session.execute(stmt.order_by(Customer.id))]


def latest_update(session: Session, workspace_id: int) -> datetime | None:
    value: datetime | None = session.scalar(
        select(func.max(Customer.updated_at)).where(Customer.workspace_id == workspace_id)
    )
    return value


def marketing_consents(
    session: Session, ids: Sequence[int], *, personal_scope: str, brand_scope: str
) -> dict[int, set[str]]:
    """Channels each customer gave advertising consent for (with personal-data consent)."""
    wanted = sorted(set(ids))
    granted: dict[int, set[str]] = {}
    personal: set[int] = set()
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            select(Consent.customer_id, Consent.brand_scope, Consent.kind, Consent.channel).where(
                Consent.customer_id.in_(wanted[start : start + CHUNK]),
                Consent.status == GRANTED,
                Consent.topic == "",
                Consent.kind.in_((PERSONAL_DATA, ADVERTISING)),
                Consent.brand_scope.in_((personal_scope, brand_scope)),
            )
        )
        for customer_id, scope, kind, channel in rows:
            if kind == PERSONAL_DATA and scope == personal_scope:
                personal.add(customer_id)
            elif kind == ADVERTISING and scope == brand_scope:
                granted.setdefault(customer_id, set()).add(channel)
    return {cid: channels for cid, channels in granted.items() if cid in personal}
