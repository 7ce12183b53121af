"""Each customer's messages in the profile timeline: what, when, channel, status, cost, and
for suppressed ones the policy's reason."""

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
    """A customer's deliveries, newest first."""
    del runtime
    items = []
    for d in store.customer_deliveries(
        session, workspace_id, customer_ids, before=before, limit=limit
    ):
        what = d.subject or f"template {d.template_id}"
        title = f"{d.channel or 'message'}: {what} ({d.status})"
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
                title=title,
                details=details,
                source="messaging",
            )
        )
    return items
