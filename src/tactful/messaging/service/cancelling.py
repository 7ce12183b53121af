"""Cancelling a sender's messages that have not gone out yet (a cancelled campaign)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.messaging import store
from tactful.policy import service as policy
from tactful.policy.schemas import CANCELLED


def cancel_deliveries(session: Session, *, workspace_id: int, source: str) -> int:
    """Cancel every delivery of ``source`` not handed to a provider yet (planned or
    queued) and stop its cascades; the policy ledger learns each, so caps free up.
    Returns how many deliveries were cancelled."""
    rows = store.unsent(session, workspace_id, source)
    ids = [delivery_id for delivery_id, _decision in rows]
    store.mark_cancelled(session, ids, clock.now())
    store.stop_cascades(session, workspace_id, source)
    decisions = [decision for _delivery, decision in rows]
    loaded = store.load_decisions(session, decisions)  # held: get() finds them
    for decision_id in decisions:
        policy.record_status(session, decision_id, CANCELLED)
    del loaded
    return len(ids)
