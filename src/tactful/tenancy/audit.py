"""The audit log helper every feature uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.tenancy.models import AuditEntry


def record_audit(
    session: Session,
    *,
    workspace_id: int,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int | None = None,
    details: dict[str, Any] | None = None,
    brand_id: int | None = None,
) -> AuditEntry:
    """Write one audit row in the caller's transaction."""
    entry = AuditEntry(
        workspace_id=workspace_id,
        brand_id=brand_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=details or {},
        at=clock.now(),
    )
    session.add(entry)
    return entry
