"""What-if: replay the last days' real intents under proposed rules before they go live.

Every intent the gate saw is in the ledger (with the moment it asked for), so a proposal can
be judged on what really happened: inside a savepoint the period's decisions are set aside,
each batch is decided again at its own time with the proposed rules, the outcomes are
tallied, and the savepoint is rolled back. Consents and contacts are today's.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.policy import bulk, gate
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.placement import to_seconds
from tactful.policy.rules import scope_of
from tactful.policy.schemas import BUNDLED, CANCELLED, COUNTED, SCHEDULED, Intent, RuleSet

SENT_LIKE = frozenset(COUNTED)


def _outcome(status: str) -> str:
    return SCHEDULED if status in SENT_LIKE else (BUNDLED if status == BUNDLED else "suppressed")


def _intent(row: ContactDecision, batch: DecisionBatch) -> Intent:
    base = gate.intent_of(row, batch)
    window = (row.dedupe_until - batch.decided_at) if row.dedupe_until else None
    return Intent(
        **{
            **base.__dict__,
            "not_before": row.requested_at,
            "dedupe_key": row.dedupe_key,
            "dedupe_window": window,
            "bundle_key": row.bundle_key,
            "bundle_item": row.bundle_item,
        }
    )


def replay(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    proposed: RuleSet,
    days: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """How the last ``days`` of intents would have fared under ``proposed``."""
    now = now or clock.now()
    since = now - timedelta(days=days)
    batches = list(
        session.scalars(
            select(DecisionBatch)
            .where(DecisionBatch.workspace_id == workspace_id, DecisionBatch.decided_at >= since)
            .order_by(DecisionBatch.decided_at, DecisionBatch.id)
        )
    )
    if brand_id is not None:
        batches = [b for b in batches if b.brand_id == brand_id]
    actual: Counter[tuple[str, str]] = Counter()
    proposal: Counter[tuple[str, str]] = Counter()
    cost_actual = cost_proposed = 0
    changed = 0
    savepoint = session.begin_nested()
    try:
        rows_by_batch: dict[int, list[ContactDecision]] = {}
        for batch in batches:
            rows = list(
                session.scalars(
                    select(ContactDecision)
                    .where(
                        ContactDecision.batch_id == batch.id, ContactDecision.previous_id.is_(None)
                    )
                    .order_by(ContactDecision.id)
                )
            )
            rows_by_batch[batch.id] = rows
            for row in rows:
                actual[(_outcome(row.status), row.reason)] += 1
                if row.status in SENT_LIKE:
                    cost_actual += row.cost
        session.execute(
            update(ContactDecision)
            .where(ContactDecision.batch_id.in_([b.id for b in batches]))
            .values(status=CANCELLED)
            .execution_options(synchronize_session=False)
        )
        scope = (scope_of(brand_id), proposed)
        for batch in batches:
            rows = rows_by_batch[batch.id]
            if not rows:
                continue
            intents = [_intent(row, batch) for row in rows]
            if bulk.eligible(intents, gate.BULK_THRESHOLD):
                ids = np.fromiter(
                    (i.customer_id for i in intents), dtype=np.int64, count=len(intents)
                )
                outcome = bulk.decide_audience(
                    session, intents[0], ids, now=to_seconds(batch.decided_at), proposed=scope
                )
                decisions = outcome.decisions()
            else:
                decisions = gate.decide(session, intents, now=batch.decided_at, proposed=scope)
            for row, decision in zip(rows, decisions, strict=True):
                proposal[(decision.outcome, decision.reason)] += 1
                cost_proposed += decision.cost if decision.outcome == SCHEDULED else 0
                if decision.outcome != _outcome(row.status):
                    changed += 1
    finally:
        savepoint.rollback()

    def summary(counts: Counter[tuple[str, str]], cost: int) -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        for (outcome, _), count in counts.items():
            outcomes[outcome] += count
        deferred = sum(
            c for (o, r), c in counts.items() if o == SCHEDULED and r.startswith("deferred")
        )
        return {
            "scheduled": outcomes[SCHEDULED],
            "deferred": deferred,
            "bundled": outcomes[BUNDLED],
            "suppressed": outcomes["suppressed"],
            "by_reason": {f"{o}:{r}": c for (o, r), c in sorted(counts.items())},
            "cost": cost,
        }

    return {
        "from": since,
        "to": now,
        "batches": len(batches),
        "intents": sum(actual.values()),
        "actual": summary(actual, cost_actual),
        "proposed": summary(proposal, cost_proposed),
        "outcomes_changed": changed,
    }
