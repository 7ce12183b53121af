"""users and roles: people who sign in to the web UI, with roles per brand or workspace

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tactful.core.types

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", tactful.core.types.BigIntPK, nullable=False),
        sa.Column("workspace_id", tactful.core.types.BigIntPK, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", tactful.core.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", tactful.core.types.UTCDateTime(), nullable=False),
        sa.Column("last_login_at", tactful.core.types.UTCDateTime(), nullable=True),
        sa.Column("disabled_at", tactful.core.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_users_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("workspace_id", "email", name=op.f("uq_users_workspace_id_email")),
    )
    op.create_table(
        "role_grants",
        sa.Column("id", tactful.core.types.BigIntPK, nullable=False),
        sa.Column("user_id", tactful.core.types.BigIntPK, nullable=False),
        sa.Column("brand_id", tactful.core.types.BigIntPK, nullable=True),
        sa.Column("scope", sa.String(length=24), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["brands.id"],
            name=op.f("fk_role_grants_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_role_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grants")),
        sa.UniqueConstraint("user_id", "scope", name=op.f("uq_role_grants_user_id_scope")),
    )


def downgrade() -> None:
    op.drop_table("role_grants")
    op.drop_table("users")
