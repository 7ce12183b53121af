"""Conversions of a campaign's groups: purchases (sale receipts) in the warehouse by their
customers inside an attribution window (merged customers count for their survivor)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import ibis
import ibis.expr.datatypes as dt
import numpy as np
import pyarrow as pa

from tactful.core.warehouse import Warehouse
from tactful.events.warehouse import RECEIPTS, canonical, ensure_tables


@dataclass(frozen=True)
class Conversions:
    """What one group of customers bought in the window."""

    customers: int
    buyers: int
    purchases: int
    revenue: int  # minor units

    def value(self, kind: str) -> int:
        """The goal's measure: purchases, buyers or revenue."""
        return {"purchases": self.purchases, "buyers": self.buyers, "revenue": self.revenue}[kind]


def _ts(value: datetime) -> ibis.TimestampScalar:
    return ibis.literal(value, type=dt.Timestamp(timezone="UTC"))


def _sales(warehouse: Warehouse, workspace_id: int, start: datetime, end: datetime) -> ibis.Table:
    ensure_tables(warehouse)
    raw = warehouse.table(RECEIPTS)
    raw = raw.filter(
        raw.workspace_id == workspace_id,
        raw.kind == "sale",
        raw.occurred_at >= _ts(start),
        raw.occurred_at < _ts(end),
    )
    return canonical(warehouse, raw)


def conversions(
    warehouse: Warehouse,
    *,
    workspace_id: int,
    groups: Mapping[str, np.ndarray],
    start: datetime,
    end: datetime,
) -> dict[str, Conversions]:
    """Buyers, purchases and revenue of each group's customers in [start, end)."""
    found = {name: Conversions(len(ids), 0, 0, 0) for name, ids in groups.items()}
    named = [(name, ids) for name, ids in groups.items() if len(ids)]
    if not named or end <= start:
        return found
    members = ibis.memtable(
        pa.table(
            {
                "customer_id": pa.array(np.concatenate([ids for _n, ids in named]), pa.int64()),
                "grp": pa.array([name for name, ids in named for _ in range(len(ids))]),
            }
        )
    )
    sales = _sales(warehouse, workspace_id, start, end)
    joined = members.join(sales, "customer_id")
    per_group = joined.group_by("grp").aggregate(
        buyers=joined.customer_id.nunique(),
        purchases=joined.count(),
        revenue=joined.amount.sum(),
    )
    for row in warehouse.con.to_pyarrow(per_group).to_pylist():
        name = str(row["grp"])
        found[name] = Conversions(
            found[name].customers,
            int(row["buyers"] or 0),
            int(row["purchases"] or 0),
            int(row["revenue"] or 0),
        )
    return found


def converters(
    warehouse: Warehouse,
    *,
    workspace_id: int,
    customer_ids: np.ndarray,
    start: datetime,
    end: datetime,
) -> np.ndarray:
    """The customers among ``customer_ids`` who bought in [start, end) (sorted)."""
    if not len(customer_ids) or end <= start:
        return np.zeros(0, dtype=np.int64)
    members = ibis.memtable(pa.table({"customer_id": pa.array(customer_ids, pa.int64())}))
    sales = _sales(warehouse, workspace_id, start, end)
    buyers = sales.filter(sales.customer_id.isin(members.customer_id)).select("customer_id")
    column = warehouse.con.to_pyarrow(buyers.distinct())["customer_id"]
    return np.sort(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64))
