"""Metrics use cases: keep the warehouse's profile copy in sync, refresh metrics for customers
with new history, rebuild a workspace, and read metrics for segments and the API.

Segments read profiles and metrics through the functions at the end of this module
(``wiring.py`` hands them over), because metrics and segments sit on one layer and may not
import each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ibis
import orjson
import pyarrow as pa
from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.errors import NotFound
from tactful.core.jobs.queue import enqueue
from tactful.core.runtime import Runtime
from tactful.core.warehouse import Warehouse
from tactful.customers import service as customers
from tactful.customers.models import Customer
from tactful.events.warehouse import CUSTOMER_ALIASES
from tactful.metrics import store
from tactful.metrics import warehouse as wh
from tactful.metrics.catalog import METRICS, MetricSpec
from tactful.metrics.models import MetricsState
from tactful.tenancy import service as tenancy

REFRESHED_EVENT = "metrics.refreshed"
REBUILD_JOB = "metrics.rebuild"
SYNC_CHUNK = 2000
REACH_CHANNELS = ("email", "sms", "push", "viber", "telegram")

json_text = wh.json_text


@dataclass(frozen=True)
class SyncOutcome:
    """What a profile sync or metric refresh touched."""

    customers: int
    removed: int = 0


# -- profiles -----------------------------------------------------------------------------------


def _offset_minutes(name: str | None, fallback: str, at: datetime) -> int:
    for candidate in (name, fallback):
        if not candidate:
            continue
        try:
            offset = at.astimezone(ZoneInfo(candidate)).utcoffset()
        except (ZoneInfoNotFoundError, ValueError):
            continue
        if offset is not None:
            return int(offset.total_seconds() // 60)
    return 0


def _attribute_rows(workspace_id: int, customer: Customer) -> Iterable[dict[str, Any]]:
    for name, raw in sorted((customer.attributes or {}).items()):
        values = raw if isinstance(raw, list) else [raw]
        for value in values:
            row: dict[str, Any] = {
                "workspace_id": workspace_id,
                "customer_id": customer.id,
                "name": name,
                "text_value": None,
                "number_value": None,
                "bool_value": None,
                "time_value": None,
            }
            if isinstance(value, bool):
                row["bool_value"] = value
            elif isinstance(value, int | float):
                row["number_value"] = float(value)
            elif isinstance(value, str):
                row["text_value"] = value
                row["time_value"] = _parse_time(value)
            elif value is not None:
                row["text_value"] = orjson.dumps(value).decode()
            yield row


def _parse_time(text: str) -> datetime | None:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return clock.ensure_utc(parsed)


def _profile_tables(
    session: Session, workspace_id: int, ids: Sequence[int], brand_ids: Sequence[int]
) -> tuple[dict[str, pa.Table], set[int]]:
    workspace = customers.workspace_of(session, workspace_id)
    now = clock.now()
    rows = [
        c
        for c in store.customers(session, ids)
        if c.workspace_id == workspace_id and c.merged_into_id is None
    ]
    live = [c.id for c in rows]
    profiles = [
        {
            "workspace_id": workspace_id,
            "customer_id": c.id,
            "anonymous": c.anonymous,
            "is_test": c.is_test,
            "gender": c.gender,
            "birthday": c.birthday,
            "city": c.city,
            "locale": c.locale,
            "timezone": c.timezone or workspace.timezone,
            "utc_offset_minutes": _offset_minutes(c.timezone, workspace.timezone, now),
            "has_email": c.email is not None,
            "has_phone": c.phone is not None,
            "attributes": orjson.dumps(c.attributes or {}).decode(),
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "last_seen_at": c.last_seen_at,
        }
        for c in rows
    ]
    attributes = [row for c in rows for row in _attribute_rows(workspace_id, c)]
    reach: list[dict[str, Any]] = []
    for brand_id in brand_ids:
        contacts = customers.reachability(
            session,
            workspace_id=workspace_id,
            brand_id=brand_id,
            customer_ids=live,
            message_class="transactional",
        )
        marketing = customers.reachability(
            session, workspace_id=workspace_id, brand_id=brand_id, customer_ids=live
        )
        consented = store.marketing_consents(
            session,
            live,
            personal_scope=customers.brand_scope(None),
            brand_scope=customers.brand_scope(brand_id),
        )
        for cid in live:
            for channel in REACH_CHANNELS:
                has_contact = channel in contacts[cid].channels
                consent = channel in consented.get(cid, frozenset())
                if has_contact or consent:
                    reach.append(
                        {
                            "workspace_id": workspace_id,
                            "customer_id": cid,
                            "brand_id": brand_id,
                            "channel": channel,
                            "has_contact": has_contact,
                            "consent": consent,
                            "reachable": channel in marketing[cid].channels,
                        }
                    )
    tables = {
        wh.PROFILES: pa.Table.from_pylist(profiles, schema=wh.PROFILE_SCHEMA.to_pyarrow()),
        wh.ATTRIBUTES: pa.Table.from_pylist(attributes, schema=wh.ATTRIBUTE_SCHEMA.to_pyarrow()),
        wh.REACH: pa.Table.from_pylist(reach, schema=wh.REACH_SCHEMA.to_pyarrow()),
    }
    return tables, set(ids) - set(live)


def sync_profiles(
    runtime: Runtime,
    *,
    workspace_id: int,
    customer_ids: Sequence[int] | None = None,
    synced_to: datetime | None = None,
) -> SyncOutcome:
    """Copy profiles, custom attributes and reachability to the warehouse: of the given
    customers (merged ones are removed), or of the whole workspace.

    The profiles are read in a read-only transaction and copied outside any: on SQLite a
    write transaction would hold up every ingestion call for the length of the copy. The sync
    is recorded in a short transaction afterwards (with ``synced_to``, the end of the span of
    changes it covered); a crash in between repeats a copy that replaces the same rows.
    """
    warehouse = runtime.warehouse
    wh.ensure_metric_tables(warehouse)
    now = clock.now()
    with runtime.db.scope(readonly=True) as session:
        brand_ids = [b.id for b in tenancy.list_brands(session, workspace_id=workspace_id)]
        if customer_ids is None:
            batches: dict[str, list[pa.Table]] = {
                name: [] for name in (wh.PROFILES, wh.ATTRIBUTES, wh.REACH)
            }
            after = 0
            while page := store.customer_ids(
                session, workspace_id, after_id=after, limit=SYNC_CHUNK
            ):
                tables, _gone = _profile_tables(session, workspace_id, page, brand_ids)
                for name, table in tables.items():
                    batches[name].append(table)
                after = page[-1]
        else:
            ids = sorted(set(customer_ids))
            tables, gone = _profile_tables(session, workspace_id, ids, brand_ids)
    if customer_ids is None:
        for name, parts in batches.items():
            schema = wh.SCHEMAS[name].to_pyarrow()
            rows = pa.concat_tables(parts) if parts else schema.empty_table()
            wh.replace_rows(
                warehouse, name, workspace_id=workspace_id, customer_ids=None, rows=rows
            )
        outcome = SyncOutcome(sum(t.num_rows for t in batches[wh.PROFILES]))
    else:
        id_array = pa.array(ids, pa.int64())
        for name, table in tables.items():
            wh.replace_rows(
                warehouse, name, workspace_id=workspace_id, customer_ids=id_array, rows=table
            )
        if gone:
            wh.replace_rows(
                warehouse,
                wh.METRICS,
                workspace_id=workspace_id,
                customer_ids=pa.array(sorted(gone), pa.int64()),
                rows=wh.METRICS_SCHEMA.to_pyarrow().empty_table(),
            )
        outcome = SyncOutcome(tables[wh.PROFILES].num_rows, len(gone))
    with runtime.db.scope() as session:
        state = store.state(session, workspace_id)
        state.profiles_synced_at = now
        if synced_to is not None:
            state.profiles_synced_to = synced_to
        _announce(session, workspace_id, "profiles", customer_ids, now)
    return outcome


# Changes are looked for again this far before the end of the last sync: a profile updated
# just before it, in a transaction that committed after the sync read, is not missed.
SYNC_OVERLAP = timedelta(minutes=5)


def sync_changed_profiles(runtime: Runtime, *, workspace_id: int) -> SyncOutcome:
    """Sync the customers updated since the last sync (all of them the first time).

    The look-back overlaps the previous sync by ``SYNC_OVERLAP``; customers whose copy in
    the warehouse is already as new as their profile are not copied again (after an import
    of 15,000 customers every sweep for five minutes copied all of them, 3.4 s of work
    each 30 s beside the API)."""
    until = clock.now()
    with runtime.db.scope(readonly=True) as session:
        since = store.profiles_synced_to(session, workspace_id)
        changed = (
            None
            if since is None
            else store.changed_since(session, workspace_id, since - SYNC_OVERLAP, until)
        )
    if changed is None:
        return sync_profiles(runtime, workspace_id=workspace_id, synced_to=until)
    stale = wh.stale_profiles(runtime.warehouse, workspace_id=workspace_id, updated=changed)
    if not stale:
        if changed:  # all copied already: the next sweep looks back from here
            with runtime.db.scope() as session:
                store.state(session, workspace_id).profiles_synced_to = until
        return SyncOutcome(0)
    return sync_profiles(runtime, workspace_id=workspace_id, customer_ids=stale, synced_to=until)


# -- metrics ----------------------------------------------------------------------------------


def canonical_ids(
    warehouse: Warehouse, *, workspace_id: int, customer_ids: Sequence[int]
) -> list[int]:
    """The surviving customers of the given ids (merged ones map to their survivor)."""
    wh.ensure_metric_tables(warehouse)
    aliases = warehouse.table(CUSTOMER_ALIASES)
    ids = sorted(set(customer_ids))
    wanted = ibis.memtable(pa.table({"customer_id": pa.array(ids, pa.int64())}))
    found = warehouse.con.to_pyarrow(
        aliases.filter(
            aliases.workspace_id == workspace_id, aliases.customer_id.isin(wanted.customer_id)
        ).select("customer_id", "canonical_id")
    ).to_pylist()
    mapping = {r["customer_id"]: r["canonical_id"] for r in found}
    return sorted({mapping.get(i, i) for i in ids})


def refresh_metrics(
    runtime: Runtime, session: Session, *, workspace_id: int, customer_ids: Sequence[int]
) -> SyncOutcome:
    """Recompute the stored metrics of customers whose history changed."""
    warehouse = runtime.warehouse
    ids = canonical_ids(warehouse, workspace_id=workspace_id, customer_ids=customer_ids)
    if not ids:
        return SyncOutcome(0)
    now = wh.refresh_customers(
        warehouse,
        workspace_id=workspace_id,
        customer_ids=pa.array(ids, pa.int64()),
        now=clock.now(),
    )
    state = store.state(session, workspace_id)
    state.metrics_refreshed_at = now
    _announce(session, workspace_id, "metrics", ids, now)
    return SyncOutcome(len(ids))


def rebuild_metrics(runtime: Runtime, session: Session, *, workspace_id: int) -> SyncOutcome:
    """Recompute every customer's stored metrics (windows move daily; this catches up)."""
    warehouse = runtime.warehouse
    now = clock.now().replace(second=0, microsecond=0)  # as of the minute, like refreshes
    rows = wh.compute_metrics(warehouse, workspace_id=workspace_id, now=now)
    wh.replace_rows(warehouse, wh.METRICS, workspace_id=workspace_id, customer_ids=None, rows=rows)
    table = warehouse.table(wh.METRICS)
    count = int(warehouse.con.execute(table.filter(table.workspace_id == workspace_id).count()))
    state = store.state(session, workspace_id)
    state.metrics_rebuilt_at = state.metrics_refreshed_at = now
    _announce(session, workspace_id, "rebuild", None, now)
    return SyncOutcome(count)


def queue_rebuild(session: Session, *, workspace_id: int, profiles: bool = False) -> bool:
    """Ask the workers for a full rebuild (and profile resync when ``profiles``)."""
    return enqueue(
        session,
        REBUILD_JOB,
        {"workspace_id": workspace_id, "profiles": profiles},
        key=f"{REBUILD_JOB}:{workspace_id}:manual:{clock.now().isoformat()}",
    )


def record_failure(session: Session, *, workspace_id: int, error: str) -> None:
    """Keep the latest sync or refresh error for the status endpoint."""
    state = store.state(session, workspace_id)
    state.last_error, state.last_error_at = error[-4000:], clock.now()


def status(session: Session, *, workspace_id: int) -> MetricsState:
    """How fresh the workspace's profiles and metrics in the warehouse are (never synced:
    every moment empty). Writes nothing: the dashboard and the API read it read-only."""
    found = store.find_state(session, workspace_id)
    return found if found is not None else MetricsState(workspace_id=workspace_id)


def workspaces(session: Session) -> list[int]:
    """Every workspace id (for the periodic monitors)."""
    return store.workspace_ids(session)


def _announce(
    session: Session, workspace_id: int, what: str, ids: Sequence[int] | None, at: datetime
) -> None:
    """Tell continuous segments that profiles or metrics changed."""
    chosen = sorted(set(ids)) if ids is not None else None
    domain_events.publish(
        session,
        REFRESHED_EVENT,
        {"workspace_id": workspace_id, "what": what, "customer_ids": chosen},
        # every refresh is news (two in one minute too); a retried job re-publishes only if
        # its first attempt did not commit
        key=f"{workspace_id}:{what}:{at.isoformat()}:{uuid.uuid4().hex}",
    )


# -- reading (the API, and segments through wiring) -------------------------------------------


def metric_specs() -> tuple[MetricSpec, ...]:
    """Every metric with its type, meaning, window and formula."""
    return METRICS


def counted_from(metric: str) -> str | None:
    """The stored moment a whole-day metric (days since ...) counts from, if it is one."""
    return wh.COUNTED_FROM.get(metric)


def days_since_within(
    stamp: ibis.TimestampValue, *, now: datetime, low: int | None, high: int | None
) -> ibis.BooleanValue:
    """``low <= whole days since stamp <= high`` as a range on the stamp (either bound
    may be None)."""
    return wh.days_since_within(stamp, now=now, low=low, high=high)


def metrics_table(
    warehouse: Warehouse, *, workspace_id: int, now: datetime, names: Sequence[str]
) -> ibis.Table:
    """A workspace's stored metrics plus the derived ones named, relative to ``now``."""
    wh.ensure_metric_tables(warehouse)
    table = warehouse.table(wh.METRICS)
    table = table.filter(table.workspace_id == workspace_id)
    return wh.with_derived(table, now=now, names=names)


def profiles_table(warehouse: Warehouse, *, workspace_id: int) -> ibis.Table:
    """The workspace's customers as copied to the warehouse."""
    wh.ensure_metric_tables(warehouse)
    table = warehouse.table(wh.PROFILES)
    return table.filter(table.workspace_id == workspace_id)


def attributes_table(warehouse: Warehouse, *, workspace_id: int) -> ibis.Table:
    """Custom attributes as typed rows (one per list element)."""
    wh.ensure_metric_tables(warehouse)
    table = warehouse.table(wh.ATTRIBUTES)
    return table.filter(table.workspace_id == workspace_id)


def reach_table(warehouse: Warehouse, *, workspace_id: int) -> ibis.Table:
    """Contact, consent and reachability per customer, brand and channel."""
    wh.ensure_metric_tables(warehouse)
    table = warehouse.table(wh.REACH)
    return table.filter(table.workspace_id == workspace_id)


def customer_metrics(runtime: Runtime, *, workspace_id: int, customer_id: int) -> dict[str, Any]:
    """One customer's metrics, stored and derived, by name."""
    names = [spec.name for spec in METRICS]
    table = metrics_table(
        runtime.warehouse, workspace_id=workspace_id, now=clock.now(), names=names
    )
    rows = runtime.warehouse.con.to_pyarrow(
        table.filter(table.customer_id == customer_id)
    ).to_pylist()
    if not rows:
        raise NotFound(f"customer {customer_id} has no metrics yet", field="customer_id")
    row = rows[0]
    values: dict[str, Any] = {}
    for spec in METRICS:
        if spec.name == "top_categories":
            values[spec.name] = [
                c for c in (row["top_category"], row["top_category_2"], row["top_category_3"]) if c
            ]
        else:
            value = row.get(spec.name)
            values[spec.name] = clock.ensure_utc(value) if isinstance(value, datetime) else value
    values["computed_at"] = clock.ensure_utc(row["computed_at"])
    return values
