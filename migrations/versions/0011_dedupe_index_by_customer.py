"""dedupe lookups by customer: the dedupe index gains the customer

A journey's send step gives every customer the same dedupe key, so finding whether a few
customers already hold it read every live decision with that key (all the customers the
journey ever messaged). With the customer as the index's third column the lookup is a seek
per customer; whole-base plans still read a key's decisions through the same index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = {
    "sqlite_where": sa.text("dedupe_key IS NOT NULL"),
    "postgresql_where": sa.text("dedupe_key IS NOT NULL"),
}


def _recreate(columns: list[str]) -> None:
    op.drop_index("ix_contact_decisions_dedupe", table_name="contact_decisions", **WHERE)
    op.create_index(
        "ix_contact_decisions_dedupe", "contact_decisions", columns, unique=False, **WHERE
    )


def upgrade() -> None:
    _recreate(["workspace_id", "dedupe_key", "customer_id"])


def downgrade() -> None:
    _recreate(["workspace_id", "dedupe_key"])
