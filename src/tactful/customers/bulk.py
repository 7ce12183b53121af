"""Bulk writes for imports: customers resolved from identity sets (known ones by a lookup, the
rest through :func:`resolve_profiles`), consents from files with the import as evidence, and
last-seen times from imported activity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.orm import Session

from tactful.core import domain_events
from tactful.customers import store
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import (
    GRANTED,
    MATCHABLE_KINDS,
    REVOKED,
    Consent,
    ConsentChange,
)
from tactful.customers.service import CONSENT_CHANGED_EVENT, brand_scope, consent_event
from tactful.tenancy.models import Workspace


def resolve_records(
    session: Session, *, workspace: Workspace, records: Sequence[ProfileRecord], actor: str
) -> list[int | None]:
    """The customer of each record (None for a record without a valid matchable identity).

    A record whose identities are all valid, matchable and owned by one customer needs only a
    lookup; every other record goes through :func:`resolve_profiles`, which creates customers,
    attaches new identities and merges. Purchases and events of a file usually name the
    same few identities again and again, so this keeps imports of history fast.
    """
    keys = {i.key for r in records for i in r.idents if i.valid and i.kind in MATCHABLE_KINDS}
    owners = store.identity_owners(session, workspace.id, keys)
    found: list[int | None] = [None] * len(records)
    rest: list[int] = []
    seen: dict[int, datetime] = {}
    for index, record in enumerate(records):
        if not any(i.valid and i.kind in MATCHABLE_KINDS for i in record.idents):
            continue
        known = {
            owners.get(i.key) if i.valid and i.kind in MATCHABLE_KINDS else None
            for i in record.idents
        }
        customer = known.pop() if len(known) == 1 else None
        if customer is None or record.traits or record.customer_id is not None:
            rest.append(index)
            continue
        found[index] = customer
        if record.seen and (customer not in seen or record.at > seen[customer]):
            seen[customer] = record.at
    if rest:
        resolution = resolve_profiles(
            session, workspace=workspace, records=[records[i] for i in rest], actor=actor
        )
        for index, customer in zip(rest, resolution.customer_ids, strict=True):
            found[index] = customer
    store.mark_seen(session, seen=seen)
    return found


def survivors(session: Session, customer_ids: Sequence[int]) -> dict[int, int]:
    """The surviving customer of each id (itself unless it was merged into another)."""
    found = {customer_id: customer_id for customer_id in customer_ids}
    found.update(store.merged_into(session, list(found)))
    return found


@dataclass(frozen=True)
class ConsentValue:
    """A consent as a file states it: given (True) or not (False)."""

    customer_id: int
    kind: str
    channel: str
    granted: bool
    evidence: dict[str, Any]
    brand_id: int | None = None
    topic: str = ""


def apply_consents(
    session: Session,
    *,
    workspace_id: int,
    values: Sequence[ConsentValue],
    source: str,
    actor: str,
    at: datetime,
    publish: bool = False,
) -> list[bool]:
    """Apply consents stated by a file, in order; returns, per value, whether it changed
    anything.

    True grants the consent; False revokes a granted one and records nothing where none was
    given (no consent and a refused one mean the same: nothing may be sent). Every change
    keeps its evidence in the history; ``publish`` also announces each change (live imports).
    """
    if not values:
        return []
    current = store.consent_status_by_key(session, sorted({v.customer_id for v in values}))
    created: dict[tuple[int, str, str, str, str], dict[str, Any]] = {}
    updated: dict[int, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    changed: list[bool] = []
    for value in values:
        scope = brand_scope(value.brand_id)
        key = (value.customer_id, scope, value.kind, value.channel, value.topic)
        consent_id, previous = current.get(key, (None, None))
        status = GRANTED if value.granted else REVOKED
        if previous == status or (previous is None and not value.granted):
            changed.append(False)
            continue
        changed.append(True)
        state = {"status": status, "source": source, "evidence": value.evidence, "changed_at": at}
        if consent_id is not None:
            updated[consent_id] = {"consent": consent_id, **state}
        elif key in created:
            created[key].update(state)
        else:
            created[key] = {
                "workspace_id": workspace_id,
                "customer_id": value.customer_id,
                "brand_scope": scope,
                "kind": value.kind,
                "channel": value.channel,
                "topic": value.topic,
                **state,
            }
        current[key] = (consent_id, status)
        history.append(
            {
                "workspace_id": workspace_id,
                "customer_id": value.customer_id,
                "brand_scope": scope,
                "kind": value.kind,
                "channel": value.channel,
                "topic": value.topic,
                "status": status,
                "previous_status": previous,
                "source": source,
                "evidence": value.evidence,
                "actor": actor,
                "at": at,
            }
        )
        if publish:
            events.append(
                consent_event(
                    workspace_id=workspace_id,
                    customer_id=value.customer_id,
                    brand_id=value.brand_id,
                    kind=value.kind,
                    channel=value.channel,
                    topic=value.topic,
                    status=status,
                    previous=previous,
                    source=source,
                    at=at,
                )
            )
    store.insert_rows(session, Consent, list(created.values()))
    if updated:
        table = Consent.__table__
        assert isinstance(table, Table)
        session.connection().execute(
            table.update()
            .where(table.c.id == bindparam("consent"))
            .values(
                status=bindparam("status"),
                source=bindparam("source"),
                evidence=bindparam("evidence"),
                changed_at=bindparam("changed_at"),
            ),
            list(updated.values()),
        )
    store.insert_rows(session, ConsentChange, history)
    if events:
        domain_events.publish_many(session, CONSENT_CHANGED_EVENT, events)
    return changed
