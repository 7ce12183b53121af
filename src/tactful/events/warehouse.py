"""The event history in the warehouse: table schemas, loading inbox rows as Arrow batches,
the merged-customer alias map, and visits (receipts of one customer in one store close in
time)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import ibis
import orjson
import pyarrow as pa

from tactful.core.warehouse import Warehouse
from tactful.events.models import PURCHASE
from tactful.events.store import UnloadedRow

EVENTS = "events"
RECEIPTS = "receipts"
RECEIPT_LINES = "receipt_lines"
CUSTOMER_ALIASES = "customer_aliases"

TS = "timestamp('UTC')"
SCHEMAS: dict[str, ibis.Schema] = {
    EVENTS: ibis.schema(
        {
            "seq": "int64",
            "workspace_id": "int64",
            "event_id": "string",
            "type": "string",
            "name": "string",
            "customer_id": "int64",
            "anonymous_id": "string",
            "user_id": "string",
            "occurred_at": TS,
            "received_at": TS,
            "channel": "string",
            "properties": "string",
            "source": "string",
            "historical": "boolean",
            "brand_id": "int64",
        }
    ),
    RECEIPTS: ibis.schema(
        {
            "seq": "int64",
            "workspace_id": "int64",
            "receipt_id": "string",
            "customer_id": "int64",
            "store_id": "string",
            "channel": "string",
            "kind": "string",
            "original_receipt_id": "string",
            "occurred_at": TS,
            "lines": "int64",
            "quantity": "float64",
            "gross": "int64",
            "discount": "int64",
            "amount": "int64",
            "signed_amount": "int64",
            "bonus_accrued": "int64",
            "bonus_spent": "int64",
            "currency": "string",
            "source": "string",
            "historical": "boolean",
        }
    ),
    RECEIPT_LINES: ibis.schema(
        {
            "seq": "int64",
            "workspace_id": "int64",
            "receipt_id": "string",
            "line_no": "int64",
            "customer_id": "int64",
            "store_id": "string",
            "channel": "string",
            "kind": "string",
            "occurred_at": TS,
            "product_id": "string",
            "category_id": "string",
            "quantity": "float64",
            "unit_price": "int64",
            "discount": "int64",
            "amount": "int64",
            "signed_amount": "int64",
        }
    ),
    CUSTOMER_ALIASES: ibis.schema(
        {
            "workspace_id": "int64",
            "customer_id": "int64",
            "canonical_id": "int64",
        }
    ),
}
KEYS: dict[str, list[str]] = {
    EVENTS: ["workspace_id", "event_id"],
    RECEIPTS: ["workspace_id", "receipt_id"],
    RECEIPT_LINES: ["workspace_id", "receipt_id", "line_no"],
}


def ensure_tables(warehouse: Warehouse) -> None:
    """Create the event tables if they are missing."""
    for name, schema in SCHEMAS.items():
        warehouse.ensure_table(name, schema)


def _arrow(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = SCHEMAS[name].to_pyarrow()
    return pa.Table.from_pylist(rows, schema=schema)


def _channel(row: UnloadedRow) -> str | None:
    context = row.context or {}
    if row.type == "screen" or (isinstance(context.get("app"), dict) and context["app"]):
        return "app"
    if isinstance(context.get("page"), dict) or row.type == "page":
        return "web"
    return None


def inbox_to_arrow(rows: Sequence[UnloadedRow]) -> dict[str, pa.Table]:
    """Inbox rows as warehouse batches: events, receipts and receipt lines."""
    events: list[dict[str, Any]] = []
    receipts: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for row in rows:
        if row.type != PURCHASE:
            events.append(
                {
                    "seq": row.seq,
                    "workspace_id": row.workspace_id,
                    "event_id": row.message_id,
                    "type": row.type,
                    "name": row.name,
                    "customer_id": row.customer_id,
                    "anonymous_id": row.anonymous_id,
                    "user_id": row.user_id,
                    "occurred_at": row.occurred_at,
                    "received_at": row.received_at,
                    "channel": _channel(row),
                    "properties": orjson.dumps(row.properties or {}).decode(),
                    "source": row.source,
                    "historical": row.historical,
                    "brand_id": row.brand_id,
                }
            )
            continue
        body = row.properties
        sign = -1 if body.get("kind") == "return" else 1
        gross = discount = 0
        quantity = 0.0
        for line in body.get("lines", []):
            line_gross = round(float(line["quantity"]) * int(line["unit_price"]))
            gross += line_gross
            discount += int(line.get("discount") or 0)
            quantity += float(line["quantity"])
            lines.append(
                {
                    "seq": row.seq,
                    "workspace_id": row.workspace_id,
                    "receipt_id": body["receipt_id"],
                    "line_no": int(line["line_no"]),
                    "customer_id": row.customer_id,
                    "store_id": body["store_id"],
                    "channel": body.get("channel"),
                    "kind": body.get("kind", "sale"),
                    "occurred_at": row.occurred_at,
                    "product_id": line["product_id"],
                    "category_id": line.get("category_id"),
                    "quantity": float(line["quantity"]),
                    "unit_price": int(line["unit_price"]),
                    "discount": int(line.get("discount") or 0),
                    "amount": int(line["amount"]),
                    "signed_amount": sign * int(line["amount"]),
                }
            )
        receipts.append(
            {
                "seq": row.seq,
                "workspace_id": row.workspace_id,
                "receipt_id": body["receipt_id"],
                "customer_id": row.customer_id,
                "store_id": body["store_id"],
                "channel": body.get("channel"),
                "kind": body.get("kind", "sale"),
                "original_receipt_id": body.get("original_receipt_id"),
                "occurred_at": row.occurred_at,
                "lines": len(body.get("lines", [])),
                "quantity": quantity,
                "gross": gross,
                "discount": discount,
                "amount": int(body.get("total") or 0),
                "signed_amount": sign * int(body.get("total") or 0),
                "bonus_accrued": int(body.get("bonus_accrued") or 0),
                "bonus_spent": int(body.get("bonus_spent") or 0),
                "currency": body.get("currency", "RUB"),
                "source": row.source,
                "historical": row.historical,
            }
        )
    return {
        EVENTS: _arrow(EVENTS, events),
        RECEIPTS: _arrow(RECEIPTS, receipts),
        RECEIPT_LINES: _arrow(RECEIPT_LINES, lines),
    }


def append_batches(warehouse: Warehouse, batches: dict[str, pa.Table]) -> dict[str, int]:
    """Append each batch idempotently; returns the new rows per table."""
    ensure_tables(warehouse)
    return {
        name: warehouse.append_new(name, table, key=KEYS[name], since_column="seq")
        if table.num_rows
        else 0
        for name, table in batches.items()
    }


# -- merged customers -------------------------------------------------------------------------


def apply_alias(
    warehouse: Warehouse, *, workspace_id: int, merged_id: int, survivor_id: int | None
) -> None:
    """Point a merged customer's history at its survivor (``None`` undoes it)."""
    ensure_tables(warehouse)
    current = warehouse.con.to_pyarrow(warehouse.table(CUSTOMER_ALIASES)).to_pylist()
    mapping = {(r["workspace_id"], r["customer_id"]): r["canonical_id"] for r in current}
    if survivor_id is None:
        mapping.pop((workspace_id, merged_id), None)
    else:
        for key, canonical in list(mapping.items()):
            if key[0] == workspace_id and canonical == merged_id:
                mapping[key] = survivor_id
        mapping[(workspace_id, merged_id)] = survivor_id
    rows = [
        {"workspace_id": w, "customer_id": c, "canonical_id": t}
        for (w, c), t in sorted(mapping.items())
    ]
    warehouse.replace_table(CUSTOMER_ALIASES, _arrow(CUSTOMER_ALIASES, rows))


def canonical(warehouse: Warehouse, table: ibis.Table) -> ibis.Table:
    """``table`` with ``customer_id`` replaced by the surviving customer of merged ones."""
    ensure_tables(warehouse)
    aliases = warehouse.table(CUSTOMER_ALIASES)
    joined = table.left_join(
        aliases,
        [table.workspace_id == aliases.workspace_id, table.customer_id == aliases.customer_id],
    )
    return joined.select(
        *[
            ibis.coalesce(aliases.canonical_id, table.customer_id).name("customer_id")
            if column == "customer_id"
            else table[column]
            for column in table.columns
        ]
    )


def visit_starts(receipts: ibis.Table, *, gap: timedelta = timedelta(hours=1)) -> ibis.Table:
    """One row per visit (``customer_id``, ``store_id``, ``started_at``): a customer's
    receipts in one store belong to one visit while each follows the previous one within
    ``gap``. A visit starts at the receipt that has no previous one within ``gap``; of
    receipts at the same moment only the first in the engine's order can be that one (the
    others follow it at no distance), so each visit has exactly one start."""
    window = ibis.window(
        group_by=[receipts.workspace_id, receipts.customer_id, receipts.store_id],
        order_by=receipts.occurred_at,
    )
    previous = receipts.occurred_at.lag().over(window)
    gap_seconds = gap.total_seconds()
    marked = receipts.mutate(
        starts=previous.isnull()
        | ((receipts.occurred_at.epoch_seconds() - previous.epoch_seconds()) > gap_seconds)
    )
    starts = marked.filter(marked.starts)  # on the column: engines filter no window function
    return starts.select("customer_id", "store_id", started_at=starts.occurred_at)


def customer_ids_of(batches: dict[str, pa.Table]) -> Iterable[int]:
    """Customers whose history a batch touched (for incremental metric refresh)."""
    seen: set[int] = set()
    for table in batches.values():
        if "customer_id" in table.column_names:
            seen.update(c for c in table["customer_id"].to_pylist() if c is not None)
    return sorted(seen)
