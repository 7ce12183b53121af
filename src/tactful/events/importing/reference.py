"""Importing stores and products into the database's reference tables (any extra column
becomes an attribute). A row repeating what is stored already counts as a duplicate; within
one file, the last row of an id wins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.events import catalogue
from tactful.events.importing import reader
from tactful.events.importing.context import Counts, ImportContext
from tactful.events.models import Product, Store
from tactful.events.schemas import MAX_CODE

STORES = reader.KindSpec(
    kind="stores",
    fields=("store_id", "name", "city", "region", "timezone", "format"),
    aliases={"id": "store_id", "store": "store_id", "store_name": "name", "time_zone": "timezone"},
    required=(("store_id",), ("name",)),
    extras="attributes",
)
PRODUCTS = reader.KindSpec(
    kind="products",
    fields=(
        "product_id",
        "name",
        "category_id",
        "category",
        "brand",
        "price",
        "gender",
        "image_url",
        "url",
    ),
    aliases={
        "id": "product_id",
        "sku": "product_id",
        "product": "product_id",
        "product_name": "name",
        "title": "name",
        "image": "image_url",
    },
    required=(("product_id",), ("name",)),
    extras="attributes",
)
# text columns and their limits (the database's column sizes)
STORE_TEXT = {"name": 200, "city": 100, "region": 100, "timezone": 64, "format": 32}
PRODUCT_TEXT = {
    "name": 300,
    "category_id": MAX_CODE,
    "category": 300,
    "brand": 100,
    "gender": 1,
    "image_url": 500,
    "url": 500,
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return clock.ensure_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "not a time zone name such as Europe/Moscow"
    return None


def _gender(value: str) -> str | None:
    return None if value in ("f", "m") else "f (women), m (men) or empty (anyone)"


CHECKS: dict[str, Callable[[str], str | None]] = {"timezone": _timezone, "gender": _gender}


def _rows(
    ctx: ImportContext, key: str, texts: dict[str, int], wholes: Sequence[str]
) -> tuple[list[dict[str, Any]], int]:
    """Valid rows (the last of each id) and how many earlier rows of the same id there were."""
    source = ctx.source
    columns = [
        "line",
        f"{source.text(key)} AS {key}",
        *(f"{source.text(n)} AS {n}" for n in texts if source.has(n)),
        *(f"{source.whole(n)} AS {n}, {source.text(n)} AS {n}_text" for n in wholes),
        *(reader.quote(e) for e in source.extras),
    ]
    data = ctx.con.execute(f"SELECT {', '.join(columns)} FROM src ORDER BY line").to_arrow_table()  # noqa: S608
    rejects: list[tuple[int, str | None, str]] = []
    kept: dict[str, dict[str, Any]] = {}
    repeated = 0
    for row in data.to_pylist():
        line = int(row.pop("line"))
        problem = _problem(row, key, texts, wholes)
        if problem is not None:
            rejects.append((line, *problem))
            continue
        for name in wholes:
            row.pop(f"{name}_text")
        attributes = {e: _plain(row.pop(e)) for e in source.extras}
        if source.extras:
            row["attributes"] = {k: v for k, v in attributes.items() if v is not None}
        repeated += row[key] in kept
        kept[row[key]] = row
    reader.add_rejects(ctx.con, rejects)
    return list(kept.values()), repeated


def _problem(
    row: dict[str, Any], key: str, texts: dict[str, int], wholes: Sequence[str]
) -> tuple[str, str] | None:
    if row[key] is None:
        return key, "missing"
    if len(row[key]) > MAX_CODE:
        return key, f"longer than {MAX_CODE} characters"
    if row.get("name") is None:
        return "name", "missing"
    for name, limit in texts.items():
        value = row.get(name)
        if value is None:
            continue
        if len(value) > limit:
            return name, f"longer than {limit} characters"
        check = CHECKS.get(name)
        reason = check(value) if check else None
        if reason:
            return name, reason
    for name in wholes:
        if row[f"{name}_text"] is not None and (row[name] is None or row[name] < 0):
            return name, "not a whole number of minor units"
    return None


def _changed(stored: Store | Product | None, row: dict[str, Any]) -> bool:
    return stored is None or any(getattr(stored, k) != v for k, v in row.items())


def _import(
    ctx: ImportContext,
    key: str,
    texts: dict[str, int],
    wholes: Sequence[str],
    stored: Callable[[Session, list[str]], dict[str, Any]],
    upsert: Callable[[Session, list[dict[str, Any]]], int],
) -> Counts:
    ctx.progress("rows", 0, ctx.source.total)
    rows, repeated = _rows(ctx, key, texts, wholes)
    with ctx.runtime.db.scope() as session:
        known = stored(session, [r[key] for r in rows])
        changed = [r for r in rows if _changed(known.get(r[key]), r)]
        upsert(session, changed)
    ctx.progress("rows", ctx.source.total, ctx.source.total)
    return Counts(imported=len(changed), duplicate=repeated + len(rows) - len(changed))


def run_stores(ctx: ImportContext) -> Counts:
    """Create or update the stores of the staged file."""
    ws = ctx.workspace_id
    return _import(
        ctx,
        "store_id",
        STORE_TEXT,
        (),
        lambda s, ids: catalogue.stores_by_id(s, workspace_id=ws, store_ids=ids),
        lambda s, rows: catalogue.upsert_stores(s, workspace_id=ws, rows=rows),
    )


def run_products(ctx: ImportContext) -> Counts:
    """Create or update the products of the staged file."""
    ws = ctx.workspace_id
    return _import(
        ctx,
        "product_id",
        PRODUCT_TEXT,
        ("price",),
        lambda s, ids: catalogue.products_by_id(s, workspace_id=ws, product_ids=ids),
        lambda s, rows: catalogue.upsert_products(s, workspace_id=ws, rows=rows),
    )
