"""Queries over workspaces, brands, keys and the audit log (never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from tactful.core import direct
from tactful.tenancy.models import ApiKey, AuditEntry, Brand, Workspace


def first_workspace(session: Session) -> Workspace | None:
    return session.scalar(select(Workspace).order_by(Workspace.id).limit(1))


def workspace_by_slug(session: Session, slug: str) -> Workspace | None:
    return session.scalar(select(Workspace).where(Workspace.slug == slug))


def brand_by_slug(session: Session, workspace_id: int, slug: str) -> Brand | None:
    return session.scalar(
        select(Brand).where(Brand.workspace_id == workspace_id, Brand.slug == slug)
    )


def brands(session: Session, workspace_id: int) -> Sequence[Brand]:
    return session.scalars(
        select(Brand).where(Brand.workspace_id == workspace_id).order_by(Brand.id)
    ).all()


@dataclass(frozen=True)
class KeyRow:
    """What authenticating a key reads of it."""

    id: int
    workspace_id: int
    brand_id: int | None
    key_hash: str
    scopes: list[str]
    last_used_at: datetime | None
    revoked_at: datetime | None


_KEY_BY_PREFIX = select(
    ApiKey.id,
    ApiKey.workspace_id,
    ApiKey.brand_id,
    ApiKey.key_hash,
    ApiKey.scopes,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
).where(ApiKey.prefix == bindparam("prefix"))


def api_key_by_prefix(session: Session, prefix: str) -> KeyRow | None:
    """The key with this prefix (every API request reads one: straight on the driver)."""
    row = direct.execute(session, _KEY_BY_PREFIX, {"prefix": prefix}).first()
    return KeyRow(*row) if row is not None else None


def record_api_key_use(session: Session, key_id: int, at: datetime) -> None:
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at))
        .values(last_used_at=at)
    )


def api_keys(session: Session, workspace_id: int) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.id)
    ).all()


def audit_entries(
    session: Session,
    workspace_id: int,
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    before_id: int | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.workspace_id == workspace_id)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if before_id:
        stmt = stmt.where(AuditEntry.id < before_id)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    return session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)).all()
