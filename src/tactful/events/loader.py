"""Copying resolved inbox rows to the warehouse, idempotently, and measuring the lag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.runtime import Runtime
from tactful.events import store
from tactful.events.warehouse import append_batches, customer_ids_of, inbox_to_arrow

LOAD_BATCH = 5000
# A load takes about 0.1 s for anything from tens to hundreds of rows (reading them, one
# warehouse append and commit, marking them loaded). Asked for after every resolved batch of
# live events, it ran several times a second under load, in the process that also resolves
# events and runs triggers (a 30 s run at 500 events/s: 237 loads, 24 s of job time with
# waits included). It waits this long after being asked instead, so the events arriving
# meanwhile go in the same load: the warehouse (metrics, segments) trails the inbox by
# about this much more.
LOAD_DELAY = timedelta(seconds=1)
LOADED_EVENT = "events.loaded"


@dataclass(frozen=True)
class LoadOutcome:
    rows: int
    appended: dict[str, int]
    more: bool


def load_pending(runtime: Runtime, *, limit: int = LOAD_BATCH) -> LoadOutcome:
    """Copy the oldest resolved, unloaded inbox rows to the warehouse.

    The rows are read and appended outside any write transaction (the append is idempotent by
    event and receipt id), then marked loaded in a short one, so a crash in between only
    repeats an append that changes nothing.
    """
    with runtime.db.scope(readonly=True) as session:
        rows = store.unloaded(session, limit)
    if not rows:
        return LoadOutcome(0, {}, False)
    batches = inbox_to_arrow(rows)
    appended = append_batches(runtime.warehouse, batches)
    touched = list(customer_ids_of(batches))
    with runtime.db.scope() as session:
        store.mark_loaded(session, [r.seq for r in rows], clock.now())
        for workspace_id in sorted({r.workspace_id for r in rows}):
            domain_events.publish(
                session,
                LOADED_EVENT,
                {
                    "workspace_id": workspace_id,
                    "seq_from": rows[0].seq,
                    "seq_to": rows[-1].seq,
                    "customer_ids": touched,
                },
                key=f"{workspace_id}:{rows[0].seq}-{rows[-1].seq}",
            )
    return LoadOutcome(len(rows), appended, len(rows) == limit)


def lag_seconds(runtime: Runtime) -> tuple[int, float]:
    """Rows waiting to reach the warehouse and how long the oldest has waited."""
    with runtime.db.scope(readonly=True) as session:
        stats = store.inbox_stats(session)
    oldest = stats["oldest_unloaded_received_at"]
    if oldest is None:
        return 0, 0.0
    return int(stats["unloaded"]), max(
        0.0, (clock.now() - clock.ensure_utc(oldest)).total_seconds()
    )


def prune(session: Session, *, keep: timedelta) -> int:
    """Forget inbox rows loaded longer than ``keep`` ago (the warehouse keeps history)."""
    return store.prune_loaded(session, clock.now() - keep)
