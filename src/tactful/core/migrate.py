"""Schema migrations: one Alembic tree, applied by ``tactful migrate`` and by ``serve``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import tactful


def migrations_dir() -> Path:
    """The Alembic script folder: inside an installed wheel, or at the top of a checkout."""
    package = Path(tactful.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations folder is missing from this installation")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> list[str]:
    """Bring the database to the newest schema; returns the revisions applied."""
    config = alembic_config(engine)
    script = ScriptDirectory.from_config(config)

    def applied(heads: list[str]) -> set[str]:
        if not heads:
            return set()
        return {rev.revision for rev in script.iterate_revisions(tuple(heads), "base")}

    before = applied(current_revisions(engine))
    command.upgrade(config, "heads")
    return sorted(applied(current_revisions(engine)) - before)


def current_revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(MigrationContext.configure(conn).get_current_heads())


def pending(engine: Engine) -> bool:
    """True when the database is behind the code's migrations."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    return set(current_revisions(engine)) != set(script.get_heads())
