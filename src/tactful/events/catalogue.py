"""Reference data: stores and products, created or updated by their ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.dialect import upsert
from tactful.events import store
from tactful.events.models import Product, Store


def upsert_stores(session: Session, *, workspace_id: int, rows: Sequence[dict[str, Any]]) -> int:
    """Create or update stores by ``store_id`` (every row names the same columns)."""
    return _upsert(session, Store, "store_id", workspace_id, rows)


def _upsert(
    session: Session,
    model: type[Store | Product],
    key: str,
    workspace_id: int,
    rows: Sequence[dict[str, Any]],
) -> int:
    """Insert or update reference rows; the columns given are the ones updated."""
    now = clock.now()
    values = [
        {"workspace_id": workspace_id, "attributes": {}, "updated_at": now, **row} for row in rows
    ]
    if not values:
        return 0
    given = [c for c in values[0] if c not in ("workspace_id", key)]
    if "attributes" not in rows[0]:
        given.remove("attributes")
    for start in range(0, len(values), 500):
        session.execute(
            upsert(
                session,
                model,
                values[start : start + 500],
                conflict=["workspace_id", key],
                update=given,
            )
        )
    return len(values)


def upsert_products(session: Session, *, workspace_id: int, rows: Sequence[dict[str, Any]]) -> int:
    """Create or update products by ``product_id`` (every row names the same columns)."""
    return _upsert(session, Product, "product_id", workspace_id, rows)


def stores_by_id(
    session: Session, *, workspace_id: int, store_ids: Sequence[str]
) -> dict[str, Store]:
    """Stores by their ids."""
    return store.reference_rows(session, Store, Store.store_id, workspace_id, store_ids)


def products_by_id(
    session: Session, *, workspace_id: int, product_ids: Sequence[str]
) -> dict[str, Product]:
    """Catalogue products by their ids (for templates and recommendations)."""
    return store.reference_rows(session, Product, Product.product_id, workspace_id, product_ids)
