"""Reading deliveries and their history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from tactful.core.errors import NotFound
from tactful.messaging import store
from tactful.messaging.models import Delivery, DeliveryEvent


def get_delivery(session: Session, *, workspace_id: int, delivery_id: int) -> Delivery:
    """One delivery."""
    delivery = store.delivery(session, delivery_id)
    if delivery is None or delivery.workspace_id != workspace_id:
        raise NotFound(f"delivery {delivery_id} does not exist", field="delivery_id")
    return delivery


def list_deliveries(
    session: Session,
    *,
    workspace_id: int,
    customer_id: int | None = None,
    source: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries, newest first (page with ``before_id``)."""
    return store.deliveries(
        session,
        workspace_id,
        customer_id=customer_id,
        source=source,
        status=status,
        before_id=before_id,
        limit=min(max(limit, 1), 1000),
    )


def delivery_history(
    session: Session, *, workspace_id: int, delivery_id: int
) -> list[DeliveryEvent]:
    """Everything that happened to a delivery after it was planned."""
    get_delivery(session, workspace_id=workspace_id, delivery_id=delivery_id)
    return store.delivery_events(session, delivery_id)


def sent_by_channel(
    session: Session, *, workspace_id: int, since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """Messages handed to providers in a period, per channel: (count, cost in minor units)."""
    return store.sent_by_channel(session, workspace_id, since, until)
