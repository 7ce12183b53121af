"""Loyalty operations in the event stream (metrics, segments, journeys) and in the customer
timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.customers.service import TimelineItem
from tactful.events.service import CustomerEvent, record_customer_events
from tactful.loyalty import store
from tactful.loyalty.service.programs import ProgramView

BONUS_ACCRUED = "Bonus Accrued"
BONUS_REDEEMED = "Bonus Redeemed"
BONUS_EXPIRED = "Bonus Expired"
TIER_CHANGED = "Loyalty Tier Changed"
GIFT_CARD_USED = "Gift Card Used"
# the domain event journeys can route to a job (wiring.ROUTES)
TIER_CHANGED_EVENT = "loyalty.tier_changed"


def emit(
    session: Session,
    *,
    program: ProgramView,
    customer_id: int,
    at: datetime,
    events: list[tuple[str, str, dict[str, Any]]],
) -> None:
    """Record ``(unique key, event name, properties)`` events about a customer; a repeated key
    is ignored, so a retried job never records an event twice."""
    if not events:
        return
    record_customer_events(
        session,
        workspace_id=program.workspace_id,
        events=[
            CustomerEvent(
                customer_id=customer_id,
                name=name,
                message_id=f"loyalty:{key}",
                occurred_at=at,
                properties={"program_id": program.id, **properties},
                source="loyalty",
                brand_id=program.brand_id,
            )
            for key, name, properties in events
        ],
    )


def emit_bonus(
    session: Session,
    *,
    program: ProgramView,
    customer_id: int,
    transaction_id: int,
    points: int,
    bonus: str,
    at: datetime,
) -> None:
    """A welcome or birthday bonus as a "Bonus Accrued" event."""
    emit(
        session,
        program=program,
        customer_id=customer_id,
        at=at,
        events=[
            (
                f"{transaction_id}:accrued",
                BONUS_ACCRUED,
                {"points": points, "bonus": bonus, "transaction_id": transaction_id},
            )
        ],
    )


_TITLES = {
    "purchase": "Purchase",
    "refund": "Refund",
    "cancel": "Purchase cancelled",
    "welcome": "Welcome bonus",
    "birthday": "Birthday bonus",
    "activation": "Points became available",
    "expiry": "Points expired",
    "adjustment": "Manual adjustment",
    "transfer_out": "Points moved to a merged profile",
    "transfer_in": "Points moved from a merged profile",
}


def timeline_items(
    runtime: Runtime,
    session: Session,
    workspace_id: int,
    customer_ids: list[int],
    before: datetime | None,
    limit: int,
) -> list[TimelineItem]:
    """Ledger operations of the customers' accounts, newest first (the timeline source)."""
    del runtime  # the ledger lives in the database only
    accounts = [
        a for a in store.accounts_of(session, customer_ids) if a.workspace_id == workspace_id
    ]
    if not accounts:
        return []
    items = []
    for txn in store.transactions_before(
        session, [a.id for a in accounts], before=before, limit=limit
    ):
        points = f"{txn.points:+d} points"
        receipt = f" (receipt {txn.receipt_id})" if txn.receipt_id else ""
        items.append(
            TimelineItem(
                at=txn.created_at,
                kind="loyalty",
                title=f"{_TITLES.get(txn.kind, txn.kind)}: {points}{receipt}",
                details={
                    "transaction_id": txn.id,
                    "program_id": txn.program_id,
                    "account_id": txn.account_id,
                    "kind": txn.kind,
                    "points": txn.points,
                    "amount": txn.amount,
                    "receipt_id": txn.receipt_id,
                    "store_id": txn.store_id,
                    "correlation_key": txn.correlation_key,
                    "reason": txn.reason,
                },
                source="loyalty",
            )
        )
    return items
