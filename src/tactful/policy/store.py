"""Queries over rule sets and the decision ledger (never commits)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from tactful.policy.models import ContactDecision, PolicyRuleSet
from tactful.policy.schemas import BUNDLED, COUNTED, SCHEDULED

CHUNK = 900


def active_rule_sets(
    session: Session, workspace_id: int, scopes: Sequence[str]
) -> dict[str, PolicyRuleSet]:
    """The active rule set of each scope ("ws", "b<id>")."""
    rows = session.scalars(
        select(PolicyRuleSet).where(
            PolicyRuleSet.workspace_id == workspace_id,
            PolicyRuleSet.scope.in_(scopes),
            PolicyRuleSet.active.is_(True),
        )
    )
    return {row.scope: row for row in rows}


def latest_version(session: Session, workspace_id: int, scope: str) -> int:
    value = session.scalar(
        select(func.max(PolicyRuleSet.version)).where(
            PolicyRuleSet.workspace_id == workspace_id, PolicyRuleSet.scope == scope
        )
    )
    return int(value or 0)


def deactivate(session: Session, workspace_id: int, scope: str) -> None:
    session.execute(
        update(PolicyRuleSet)
        .where(
            PolicyRuleSet.workspace_id == workspace_id,
            PolicyRuleSet.scope == scope,
            PolicyRuleSet.active.is_(True),
        )
        .values(active=False)
        .execution_options(synchronize_session=False)
    )


def rule_history(session: Session, workspace_id: int, scope: str) -> list[PolicyRuleSet]:
    return list(
        session.scalars(
            select(PolicyRuleSet)
            .where(PolicyRuleSet.workspace_id == workspace_id, PolicyRuleSet.scope == scope)
            .order_by(PolicyRuleSet.version.desc())
        )
    )


def history(
    session: Session, customer_ids: Sequence[int], since: datetime
) -> dict[int, list[ContactDecision]]:
    """Counted decisions (sent or scheduled) of customers since ``since``, by customer."""
    found: dict[int, list[ContactDecision]] = defaultdict(list)
    ids = list(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), CHUNK):
        rows = session.scalars(
            select(ContactDecision).where(
                ContactDecision.customer_id.in_(ids[start : start + CHUNK]),
                ContactDecision.status.in_(COUNTED),
                ContactDecision.send_at >= since,
            )
        )
        for row in rows:
            found[row.customer_id].append(row)
    return found


def active_dedupe_keys(
    session: Session, workspace_id: int, pairs: Sequence[tuple[int, str]], now: datetime
) -> set[tuple[int, str]]:
    """Which (customer, dedupe key) pairs are taken by a live decision."""
    taken: set[tuple[int, str]] = set()
    keys = sorted({key for _, key in pairs})
    for start in range(0, len(keys), CHUNK):
        rows = session.execute(
            select(ContactDecision.customer_id, ContactDecision.dedupe_key).where(
                ContactDecision.workspace_id == workspace_id,
                ContactDecision.dedupe_key.in_(keys[start : start + CHUNK]),
                ContactDecision.dedupe_until > now,
                ContactDecision.status.in_((*COUNTED, BUNDLED)),
            )
        )
        taken.update((cid, str(key)) for cid, key in rows)
    return taken & set(pairs) if pairs else taken


def open_bundles(
    session: Session, customer_ids: Sequence[int], keys: Sequence[str], now: datetime
) -> dict[tuple[int, str], ContactDecision]:
    """Scheduled, not yet sent leaders that later intents of the same kind may join."""
    found: dict[tuple[int, str], ContactDecision] = {}
    if not keys:
        return found
    ids = list(dict.fromkeys(customer_ids))
    for start in range(0, len(ids), CHUNK):
        rows = session.scalars(
            select(ContactDecision)
            .where(
                ContactDecision.customer_id.in_(ids[start : start + CHUNK]),
                ContactDecision.bundle_key.in_(list(set(keys))),
                ContactDecision.status == SCHEDULED,
                ContactDecision.bundle_leader_id.is_(None),
                ContactDecision.send_at > now,
            )
            .order_by(ContactDecision.id)
        )
        for row in rows:
            found.setdefault((row.customer_id, str(row.bundle_key)), row)
    return found


def insert_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ledger rows in bulk; returns their ids in order."""
    ids: list[int] = []
    if not rows:
        return ids
    size = max(1, 30_000 // len(rows[0]))
    for start in range(0, len(rows), size):
        result = session.execute(
            insert(ContactDecision).returning(ContactDecision.id, sort_by_parameter_order=True),
            list(rows[start : start + size]),
        )
        ids.extend(r[0] for r in result)
    return ids


def bundle_members(session: Session, leader_id: int) -> list[ContactDecision]:
    return list(
        session.scalars(
            select(ContactDecision)
            .where(ContactDecision.bundle_leader_id == leader_id)
            .order_by(ContactDecision.id)
        )
    )


def decisions_for(
    session: Session,
    workspace_id: int,
    customer_id: int,
    *,
    source: str | None,
    limit: int,
) -> list[ContactDecision]:
    stmt = select(ContactDecision).where(
        ContactDecision.workspace_id == workspace_id, ContactDecision.customer_id == customer_id
    )
    if source:
        stmt = stmt.where(ContactDecision.source == source)
    return list(session.scalars(stmt.order_by(ContactDecision.id.desc()).limit(limit)))
