"""Event use cases beyond ingestion: consent changes as events, the event catalog, reference
data (stores, products) and the customer timeline's events and purchases."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis
import orjson
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.db import database_name
from tactful.core.jobs.queue import enqueue_coalesced
from tactful.core.runtime import Runtime
from tactful.customers.service import TimelineItem
from tactful.events import store
from tactful.events.catalogue import products_by_id, stores_by_id, upsert_products, upsert_stores
from tactful.events.importing.context import ImportOptions
from tactful.events.importing.reader import load_mapping_file, parse_mapping
from tactful.events.importing.runs import (
    IMPORT_JOB,
    IMPORT_KINDS,
    check_import_file,
    check_import_kind,
    create_import_run,
    get_import_run,
    import_brand_id,
    import_file,
    import_workspace_id,
    list_import_runs,
    queue_import,
    run_import,
    uploads_dir,
)
from tactful.events.ingest import IngestContext, ingest_purchases, ingest_segment
from tactful.events.models import TRACK, EventCatalog
from tactful.events.resolver import LOAD_JOB
from tactful.events.schemas import IngestResponse
from tactful.events.warehouse import EVENTS, RECEIPTS, canonical, ensure_tables
from tactful.tenancy.models import Workspace

__all__ = [
    "IMPORT_JOB",
    "IMPORT_KINDS",
    "ImportOptions",
    "IngestContext",
    "check_import_file",
    "check_import_kind",
    "create_import_run",
    "get_import_run",
    "import_brand_id",
    "import_file",
    "import_workspace_id",
    "ingest_purchases",
    "ingest_segment",
    "list_import_runs",
    "load_mapping_file",
    "parse_mapping",
    "products_by_id",
    "queue_import",
    "run_import",
    "stores_by_id",
    "uploads_dir",
    "upsert_products",
    "upsert_stores",
]


@dataclass(frozen=True)
class CustomerEvent:
    """An event about a known customer, produced inside Tactful (not ingested)."""

    customer_id: int
    name: str
    message_id: str
    occurred_at: datetime
    properties: dict[str, Any]
    source: str
    brand_id: int | None = None


def record_customer_events(
    session: Session,
    *,
    workspace_id: int,
    events: Sequence[CustomerEvent],
) -> int:
    """Record events about known customers (message engagement, loyalty operations, consent
    changes) in the event stream; a repeated ``message_id`` is ignored. Returns how many were
    new."""
    if not events:
        return 0
    now = clock.now()
    rows: list[dict[str, Any]] = [
        {
            "workspace_id": workspace_id,
            "brand_id": e.brand_id,
            "message_id": e.message_id,
            "type": TRACK,
            "name": e.name,
            "user_id": None,
            "anonymous_id": None,
            "identities": [],
            "traits": {},
            "context": {},
            "properties": e.properties,
            "occurred_at": e.occurred_at,
            "received_at": now,
            "source": e.source,
            "historical": False,
            "customer_id": e.customer_id,
            "resolved_at": now,
        }
        for e in events
    ]
    inserted = store.insert_new_events(session, rows)
    _note_names(session, workspace_id, {e.name for e in events}, now)
    if inserted:
        enqueue_coalesced(session, LOAD_JOB, key=LOAD_JOB)
    return inserted


# Event names this process found already in the catalog, by (database, workspace, name),
# with when: noting them again is skipped for a while, which spares hot paths (a POS confirm
# records two events) a statement per call. Only names found present are kept, so a name
# whose first note is rolled back is noted again by the next call.
_CATALOGUED: dict[tuple[str, int, str], float] = {}
_CATALOGUED_FOR = 600.0  # seconds


def _note_names(session: Session, workspace_id: int, names: set[str], now: datetime) -> None:
    database = database_name(session)
    fresh = time.monotonic() - _CATALOGUED_FOR
    unknown = sorted(
        n for n in names if _CATALOGUED.get((database, workspace_id, n), -math.inf) < fresh
    )
    if not unknown:
        return
    added = store.note_catalog_names(
        session,
        [
            {
                "workspace_id": workspace_id,
                "type": TRACK,
                "name": name,
                "property": "",
                "value_type": "",
                "example": None,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for name in unknown
        ],
    )
    if len(_CATALOGUED) > 10_000:
        _CATALOGUED.clear()
    seen = time.monotonic()
    for name in set(unknown) - added:
        _CATALOGUED[(database, workspace_id, name)] = seen


def record_consent_change(session: Session, payload: dict[str, Any]) -> None:
    """A consent change becomes a "Subscribed" or "Unsubscribed" event."""
    name = "Unsubscribed" if payload["status"] == "revoked" else "Subscribed"
    record_customer_events(
        session,
        workspace_id=payload["workspace_id"],
        events=[
            CustomerEvent(
                customer_id=payload["customer_id"],
                name=name,
                message_id=f"consent:{payload['customer_id']}:{payload['kind']}:{payload['channel']}"
                f":{payload['topic']}:{payload['at']}",
                occurred_at=datetime.fromisoformat(payload["at"]),
                properties={
                    k: payload.get(k)
                    for k in ("kind", "channel", "topic", "brand_id", "previous", "source")
                },
                source="consent",
                brand_id=payload.get("brand_id"),
            )
        ],
    )


def catalog(session: Session, *, workspace_id: int) -> list[EventCatalog]:
    """Event names and properties seen, with inferred types."""
    return store.catalog(session, workspace_id)


def _event_item(
    name: str | None, kind: str, at: datetime, properties: dict[str, Any], source: str
) -> TimelineItem:
    title = name or kind
    return TimelineItem(
        at=clock.ensure_utc(at),
        kind="event",
        title=f"{kind}: {title}",
        details={"type": kind, "name": name, "properties": properties},
        source=source,
    )


def timeline_events(
    runtime: Runtime,
    session: Session,
    workspace_id: int,
    customer_ids: list[int],
    before: datetime | None,
    limit: int,
) -> list[TimelineItem]:
    """Events and purchases of a customer: the warehouse's history plus the inbox's newest."""
    items: dict[str, TimelineItem] = {}
    for row in store.customer_inbox(session, workspace_id, customer_ids, before, limit):
        if row.type == "purchase":
            items[f"r:{row.properties.get('receipt_id')}"] = _purchase_item(
                row.properties, row.occurred_at
            )
        else:
            items[f"e:{row.message_id}"] = _event_item(
                row.name, row.type, row.occurred_at, row.properties, row.source
            )
    ensure_tables(runtime.warehouse)
    con = runtime.warehouse.con
    ids = ibis.literal(customer_ids)
    for table_name in (EVENTS, RECEIPTS):
        table = canonical(runtime.warehouse, runtime.warehouse.table(table_name))
        query = table.filter(table.workspace_id == workspace_id, ids.contains(table.customer_id))
        if before is not None:
            query = query.filter(query.occurred_at < before)
        for record in con.to_pyarrow(
            query.order_by(ibis.desc("occurred_at")).limit(limit)
        ).to_pylist():
            if table_name == EVENTS:
                key = f"e:{record['event_id']}"
                props = orjson.loads(record["properties"] or "{}")
                items.setdefault(
                    key,
                    _event_item(
                        record["name"],
                        record["type"],
                        record["occurred_at"],
                        props,
                        record["source"],
                    ),
                )
            else:
                items.setdefault(
                    f"r:{record['receipt_id']}", _purchase_item(record, record["occurred_at"])
                )
    return sorted(items.values(), key=lambda i: i.at, reverse=True)[:limit]


def _purchase_item(body: dict[str, Any], at: datetime) -> TimelineItem:
    kind = body.get("kind", "sale")
    amount = body.get("total", body.get("amount"))
    return TimelineItem(
        at=clock.ensure_utc(at),
        kind="purchase",
        title=f"{'Return' if kind == 'return' else 'Purchase'} {body.get('receipt_id')} "
        f"in {body.get('store_id')}",
        details={
            "receipt_id": body.get("receipt_id"),
            "kind": kind,
            "amount": amount,
            "store_id": body.get("store_id"),
            "channel": body.get("channel"),
            "original_receipt_id": body.get("original_receipt_id"),
            "lines": body.get("lines"),
        },
        source="purchases",
    )


def workspace(session: Session, workspace_id: int) -> Workspace:
    """The workspace (its phone region is needed to normalise contacts)."""
    ws = session.get(Workspace, workspace_id)
    assert ws is not None
    return ws


def ingest_response_json(response: IngestResponse) -> bytes:
    """The answer to an ingestion call as JSON."""
    return orjson.dumps(
        {
            "success": response.success,
            "accepted": response.accepted,
            "duplicates": response.duplicates,
            "rejected": response.rejected,
            "results": response.results,
        }
    )


def inbox_range(session: Session, *, workspace_id: int, seq_from: int, seq_to: int) -> list[Any]:
    """Live inbox rows of a workspace between two sequence numbers (inclusive) that were
    resolved to a customer, in order: what a trigger reacting to "events.resolved" reads.
    Plain rows with ``seq``, ``workspace_id``, ``message_id``, ``type``, ``name``,
    ``customer_id``, ``properties`` and ``occurred_at``."""
    return store.live_range(session, workspace_id, seq_from, seq_to)
