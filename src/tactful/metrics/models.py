"""Where each workspace's warehouse copies stand: profile sync cursor, refresh times."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base


class MetricsState(Base):
    """One row per workspace: how fresh its profiles and metrics in the warehouse are."""

    __tablename__ = "metrics_state"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    # profiles changed up to this moment (Customer.updated_at) are in the warehouse
    profiles_synced_to: Mapped[datetime | None]
    profiles_synced_at: Mapped[datetime | None]
    metrics_refreshed_at: Mapped[datetime | None]
    metrics_rebuilt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
