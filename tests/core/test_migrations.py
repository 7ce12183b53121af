"""The Alembic tree builds exactly the schema the models declare (tables, columns, types,
indexes with their columns and conditions), on SQLite and PostgreSQL, and the newest
revision goes down and up again."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from tactful.core.db import Base, create_db_engine
from tactful.core.migrate import alembic_config
from tactful.wiring import import_models


def _differences(engine: Engine) -> list[Any]:
    import_models()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrations_build_the_models_schema(db_url: str) -> None:
    engine = create_db_engine(db_url)
    try:
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_the_newest_revision_goes_down_and_up_again(db_url: str) -> None:
    engine = create_db_engine(db_url)
    try:
        config = alembic_config(engine)
        head = _revision(engine)
        command.downgrade(config, "-1")
        assert _revision(engine) not in (None, head)
        assert _differences(engine) != []  # the downgrade did change the schema
        command.upgrade(config, "head")
        assert _revision(engine) == head
        assert _differences(engine) == []
    finally:
        engine.dispose()
