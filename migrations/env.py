"""Alembic environment: the engine comes from Tactful's runtime or the settings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy import Engine

from tactful.config import Settings
from tactful.core.db import Base, create_db_engine
from tactful.core.types import UTCDateTime
from tactful.wiring import import_models

import_models()
target_metadata = Base.metadata


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render Tactful's shared column types by name, so revisions stay readable."""
    if kind != "type":
        return False
    variants = getattr(obj, "_variant_mapping", {})
    autogen_context.imports.add("import tactful.core.types")
    if isinstance(obj, UTCDateTime):
        return "tactful.core.types.UTCDateTime()"
    if isinstance(obj, sa.JSON) and "postgresql" in variants:
        return "tactful.core.types.JSONType"
    if isinstance(obj, sa.BigInteger) and "sqlite" in variants:
        return "tactful.core.types.BigIntPK"
    return False


def run_migrations() -> None:
    engine: Engine | None = context.config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        engine = create_db_engine(Settings().database_url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                render_item=render_item,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


run_migrations()
