"""Cascades: a step not delivered (or not read) within its time-out, or failed, falls
through to the next channel the policy allows."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.messaging import store
from tactful.messaging.models import CLICKED, DELIVERED, READ, Delivery
from tactful.messaging.service.deliveries import plan_next
from tactful.policy import service as policy

REACHED = {"delivered": (DELIVERED, READ, CLICKED), "read": (READ, CLICKED)}


def due_cascades(session: Session, *, limit: int = 1000) -> list[int]:
    """Deliveries whose cascade time has come."""
    return store.cascades_due(session, clock.now(), limit)


def fall_through(session: Session, *, delivery_id: int) -> Delivery | None:
    """Ask the policy for the next step of a delivery's cascade and plan it; returns the new
    delivery (scheduled or suppressed), or None when the step succeeded after all."""
    delivery = store.delivery(session, delivery_id)
    now = clock.now()
    if delivery is None or delivery.cascade_at is None or delivery.cascade_at > now:
        return None
    delivery.cascade_at = None
    if delivery.status in REACHED.get(delivery.wait_for or "delivered", REACHED["delivered"]):
        return None
    decision = policy.next_step(session, delivery.decision_id, now=now)
    return plan_next(session, delivery, decision, now)
