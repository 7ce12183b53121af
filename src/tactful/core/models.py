"""Installation-wide rows that belong to no feature."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base


class Installation(Base):
    """A single row: the installation's signing secret."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
