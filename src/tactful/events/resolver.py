"""Resolving inbox rows to customers, in batches, in arrival order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.jobs.queue import enqueue_coalesced
from tactful.customers import service as customers
from tactful.customers.contacts import Ident, normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import ANONYMOUS, EXTERNAL, MATCHABLE_KINDS
from tactful.customers.profile import infer_type
from tactful.events import store
from tactful.events.ingest import USER_ID_NAMESPACE
from tactful.events.models import ALIAS, IDENTIFY, PURCHASE
from tactful.tenancy.models import Workspace

RESOLVE_BATCH = 2000
LOAD_JOB = "events.load"
RESOLVED_EVENT = "events.resolved"


@dataclass(frozen=True)
class ResolveOutcome:
    rows: int
    more: bool


def _alias_idents(session: Session, workspace: Workspace, row: store.UnresolvedRow) -> list[Ident]:
    """An alias call joins ``previousId`` (an anonymous id or an old user id) to ``userId``."""
    previous = str(row.properties.get("previousId", ""))
    candidates = [
        normalise(EXTERNAL, previous, region=workspace.phone_region, namespace=USER_ID_NAMESPACE),
        normalise(ANONYMOUS, previous, region=workspace.phone_region),
    ]
    known = customers.identity_owners(
        session, workspace_id=workspace.id, keys=[c.key for c in candidates]
    )
    chosen = [c for c in candidates if c.key in known] or candidates[1:]
    return [Ident.from_list(i) for i in row.identities] + chosen


def _source(row: store.UnresolvedRow) -> str:
    return row.source.split(":", 1)[0]


def catalog_rows(
    items: Iterable[tuple[int, str, str | None, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Event catalog rows for ``(workspace, type, name, properties)`` items: each event
    name, and each property with its inferred type and an example."""
    now = clock.now()
    found: dict[tuple[int, str, str, str], tuple[str, str]] = {}
    for workspace_id, kind, name, properties in items:
        if kind in (IDENTIFY, ALIAS, "group"):
            continue
        label = name or ""
        found.setdefault((workspace_id, kind, label, ""), ("", ""))
        for key, value in list((properties if kind != PURCHASE else {}).items())[:100]:
            found.setdefault(
                (workspace_id, kind, label, str(key)[:200]),
                (infer_type(value), str(value)[:200]),
            )
    return [
        {
            "workspace_id": w,
            "type": t,
            "name": n[:200],
            "property": p,
            "value_type": vt,
            "example": ex or None,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        for (w, t, n, p), (vt, ex) in found.items()
    ]


def resolve_pending(session: Session, *, limit: int = RESOLVE_BATCH) -> ResolveOutcome:
    """Resolve the oldest unresolved inbox rows; the loader is asked to run afterwards."""
    rows = store.unresolved(session, limit)
    if not rows:
        return ResolveOutcome(0, False)
    now = clock.now()
    by_workspace: dict[int, list[store.UnresolvedRow]] = defaultdict(list)
    for row in rows:
        by_workspace[row.workspace_id].append(row)
    assignments: list[tuple[int, int | None]] = []
    for workspace_id, ws_rows in by_workspace.items():
        workspace = customers.workspace_of(session, workspace_id)
        records: list[ProfileRecord] = []
        owners: list[store.UnresolvedRow] = []
        for row in ws_rows:
            idents = (
                _alias_idents(session, workspace, row)
                if row.type == ALIAS
                else [Ident.from_list(i) for i in row.identities]
            )
            if not any(i.valid and i.kind in MATCHABLE_KINDS for i in idents):
                assignments.append((row.seq, None))  # nobody to attach it to
                continue
            traits = row.traits if row.type == IDENTIFY else {}
            records.append(
                ProfileRecord(idents=idents, source=_source(row), at=row.occurred_at, traits=traits)
            )
            owners.append(row)
        resolution = resolve_profiles(
            session, workspace=workspace, records=records, actor="resolver"
        )
        customers.note_attributes(
            session, workspace_id=workspace_id, values=resolution.custom_attributes
        )
        assignments.extend(
            (row.seq, cid) for row, cid in zip(owners, resolution.customer_ids, strict=True)
        )
        live = [r for r in ws_rows if not r.historical]
        if live:
            domain_events.publish(
                session,
                RESOLVED_EVENT,
                {"workspace_id": workspace_id, "seq_from": live[0].seq, "seq_to": live[-1].seq},
                key=f"{workspace_id}:{live[0].seq}-{live[-1].seq}",
            )
    store.mark_resolved(session, assignments, now)
    store.note_catalog(
        session, catalog_rows((r.workspace_id, r.type, r.name, r.properties) for r in rows)
    )
    enqueue_coalesced(session, LOAD_JOB, key=LOAD_JOB)
    return ResolveOutcome(len(rows), len(rows) == limit)
