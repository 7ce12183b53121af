"""Visits: a customer's receipts in one store within an hour of the previous one; receipts
at the same moment share a visit, which starts once, the same on DuckDB, PostgreSQL and
Spark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ibis
import pyarrow as pa

from tactful.core.warehouse import Warehouse
from tactful.events.warehouse import visit_starts

T0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
# (receipt, customer, store, minutes after T0) and the visit each belongs to
RECEIPTS = [
    # rows of one moment are listed against the order of their ids: whichever an engine
    # takes first, all of them get the same visit
    ("a2", 1, "S1", 0, 1),
    ("a1", 1, "S1", 0, 1),  # the same moment as a2
    ("a3", 1, "S1", 30, 1),  # within the hour
    ("a6", 1, "S1", 200, 2),  # a new visit that starts with three receipts at once
    ("a5", 1, "S1", 200, 2),
    ("a4", 1, "S1", 200, 2),
    ("a7", 1, "S2", 200, 1),  # another store: its own visits
    ("a9", 1, "S1", 261, 3),  # 61 minutes after a4-a6: a third visit, again of two
    ("a8", 1, "S1", 261, 3),
    ("b1", 2, "S1", 0, 1),
    ("b2", 2, "S1", 60, 1),  # exactly an hour later: the same visit
    ("b3", 2, "S1", 121, 2),
]


def test_each_visit_starts_once_at_its_first_receipts(any_warehouse: Warehouse) -> None:
    rows = pa.table(
        {
            "workspace_id": [1] * len(RECEIPTS),
            "receipt_id": [r[0] for r in RECEIPTS],
            "customer_id": [r[1] for r in RECEIPTS],
            "store_id": [r[2] for r in RECEIPTS],
            "occurred_at": pa.array(
                [T0 + timedelta(minutes=r[3]) for r in RECEIPTS], pa.timestamp("us", "UTC")
            ),
        }
    )
    starts = visit_starts(ibis.memtable(rows))
    got = any_warehouse.con.to_pyarrow(starts).to_pylist()
    found = sorted((r["customer_id"], r["store_id"], r["started_at"]) for r in got)
    # one start per visit: its first receipts' moment
    first: dict[tuple[int, str, int], datetime] = {}
    for _receipt, customer, store, minutes, visit in RECEIPTS:
        moment = T0 + timedelta(minutes=minutes)
        key = (customer, store, visit)
        first[key] = min(first.get(key, moment), moment)
    expected = sorted((customer, store, at) for (customer, store, _v), at in first.items())
    assert [(c, s, at.astimezone(UTC)) for c, s, at in found] == expected
    assert len(expected) == 6
