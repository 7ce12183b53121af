"""Each customer's messages in the profile timeline: what, when, channel, status, cost, and
for suppressed ones the policy's reason (bulk sends keep those in the ledger only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.customers.service import TimelineItem
from tactful.messaging import store
from tactful.policy.schemas import REASONS


def timeline_messages(
    runtime: Runtime,
    session: Session,
    workspace_id: int,
    customer_ids: list[int],
    before: datetime | None,
    limit: int,
) -> list[TimelineItem]:
    """A customer's deliveries and ledger-only suppressions, newest first."""
    del runtime
    items = []
    for d in store.customer_deliveries(
        session, workspace_id, customer_ids, before=before, limit=limit
    ):
        what = d.subject or f"template {d.template_id}"
        details = {
            "delivery_id": d.id,
            "template_id": d.template_id,
            "source": d.source,
            "channel": d.channel,
            "status": d.status,
            "cost": d.cost,
            "subject": d.subject,
            "send_at": d.send_at.isoformat() if d.send_at else None,
            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
        }
        if d.reason:
            details["reason"] = d.reason
            details["explanation"] = REASONS.get(d.reason, d.reason)
        items.append(
            TimelineItem(
                at=d.sent_at or d.created_at,
                kind="message",
                title=f"{d.channel or 'message'}: {what} ({d.status})",
                details=details,
                source="messaging",
            )
        )
    for decision, batch in store.ledger_only_suppressions(
        session, workspace_id, customer_ids, before=before, limit=limit
    ):
        reference = {**batch.reference, **(decision.reference or {})}
        items.append(
            TimelineItem(
                at=batch.decided_at,
                kind="message",
                title=f"message: template {reference.get('template_id')} (suppressed)",
                details={
                    "delivery_id": None,
                    "decision_id": decision.id,
                    "template_id": reference.get("template_id"),
                    "source": batch.source,
                    "channel": None,
                    "status": decision.status,
                    "cost": 0,
                    "subject": None,
                    "send_at": None,
                    "sent_at": None,
                    "reason": decision.reason,
                    "explanation": REASONS.get(decision.reason, decision.reason),
                },
                source="messaging",
            )
        )
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]
