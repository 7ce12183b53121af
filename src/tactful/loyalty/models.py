"""Loyalty programs, accounts, the append-only points ledger, app devices, gift cards and the
anti-fraud records.

The ledger is ``loyalty_transactions`` with their ``loyalty_lines``: rows are only ever
inserted. ``loyalty_lots`` (what is left of each accrual, for FIFO spending and expiry) and the
balances on ``loyalty_accounts`` are caches derived from the lines, written in the same
transaction under the account's lock; ``service.ledger.verify`` proves them equal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, literal_column, text
from sqlalchemy.orm import Mapped, mapped_column

from tactful.core.db import Base
from tactful.core.types import BigInt, BigIntPK

# Account statuses.
ACTIVE = "active"
BLOCKED = "blocked"  # redemptions refused (suspected fraud); accruals continue
MERGED = "merged"  # the customer was merged: the points moved to the survivor's account

# Lot states and line buckets.
PENDING = "pending"  # accrued, waiting for the return period to end
AVAILABLE = "available"

# Transaction kinds.
PURCHASE = "purchase"  # a confirmed POS receipt: redemption and accrual together
REFUND = "refund"  # a partial or full return against a purchase
CANCEL = "cancel"  # the rest of a purchase reversed
WELCOME = "welcome"
BIRTHDAY = "birthday"
ACTIVATION = "activation"  # pending points become available
EXPIRY = "expiry"
ADJUSTMENT = "adjustment"  # manual, by an admin, with a reason
TRANSFER_OUT = "transfer_out"  # a merged customer's points leave …
TRANSFER_IN = "transfer_in"  # … and arrive on the survivor's account
TRANSACTION_KINDS = (
    PURCHASE,
    REFUND,
    CANCEL,
    WELCOME,
    BIRTHDAY,
    ACTIVATION,
    EXPIRY,
    ADJUSTMENT,
    TRANSFER_OUT,
    TRANSFER_IN,
)

# Line kinds (what reports add up).
LINE_ACCRUAL = "accrual"
LINE_BONUS = "bonus"
LINE_REDEMPTION = "redemption"
LINE_EXPIRY = "expiry"
LINE_ACTIVATION = "activation"
LINE_ADJUSTMENT = "adjustment"
LINE_TRANSFER = "transfer"

# Gift card statuses and entry kinds.
CARD_ISSUED = "issued"
CARD_ACTIVE = "active"
CARD_ACTIVATION = "activation"
CARD_REDEMPTION = "redemption"
CARD_REFUND = "refund"


class Program(Base):
    """A loyalty program of one brand, or of the whole workspace (``brand_scope`` "ws")."""

    __tablename__ = "loyalty_programs"
    __table_args__ = (UniqueConstraint("workspace_id", "brand_scope"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    brand_scope: Mapped[str] = mapped_column(String(24))
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    # ProgramRules (schemas.py) as JSON; ``version`` grows with every change
    rules: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Account(Base):
    """One customer's account in one program, with cached balances (see the module doc)."""

    __tablename__ = "loyalty_accounts"
    __table_args__ = (
        UniqueConstraint("program_id", "customer_id"),
        Index("ix_loyalty_accounts_customer", "customer_id"),
        Index(
            "ix_loyalty_accounts_merged_into",
            "merged_into_id",
            sqlite_where=text("merged_into_id IS NOT NULL"),
            postgresql_where=text("merged_into_id IS NOT NULL"),
        ),
        Index(
            "ix_loyalty_accounts_review",
            "tier_review_at",
            sqlite_where=text("tier_review_at IS NOT NULL"),
            postgresql_where=text("tier_review_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    program_id: Mapped[int] = mapped_column(ForeignKey("loyalty_programs.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default=ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(String(300))
    merged_into_id: Mapped[int | None] = mapped_column(BigInt)
    tier: Mapped[str] = mapped_column(String(32))
    tier_since: Mapped[datetime]
    # when a tier above the base is next reviewed (downgrades happen only then)
    tier_review_at: Mapped[datetime | None]
    balance: Mapped[int] = mapped_column(BigInt, default=0)
    pending: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LedgerTransaction(Base):
    """One ledger operation; never updated or deleted (corrections are reversals)."""

    __tablename__ = "loyalty_transactions"
    __table_args__ = (
        UniqueConstraint("program_id", "idempotency_key"),
        Index("ix_loyalty_transactions_account_at", "account_id", "created_at"),
        Index("ix_loyalty_transactions_correlation", "program_id", "correlation_key"),
        Index("ix_loyalty_transactions_terminal", "program_id", "terminal_id", "created_at"),
        Index("ix_loyalty_transactions_store", "program_id", "store_id", "created_at"),
        Index("ix_loyalty_transactions_reverses", "reverses_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigInt)
    program_id: Mapped[int] = mapped_column(ForeignKey("loyalty_programs.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("loyalty_accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # ties together every operation of one receipt (the POS transaction id) or one lot
    correlation_key: Mapped[str | None] = mapped_column(String(200))
    reverses_id: Mapped[int | None] = mapped_column(BigInt)
    receipt_id: Mapped[str | None] = mapped_column(String(100))
    store_id: Mapped[str | None] = mapped_column(String(64))
    terminal_id: Mapped[str | None] = mapped_column(String(64))
    # receipt total (minor units) and its effect on the rolling spend that sets tiers
    amount: Mapped[int] = mapped_column(BigInt, default=0)
    spend: Mapped[int] = mapped_column(BigInt, default=0)
    # net change of the account's points (available + pending)
    points: Mapped[int] = mapped_column(BigInt)
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class LedgerLine(Base):
    """A signed number of points moved in or out of one lot, in one bucket."""

    __tablename__ = "loyalty_lines"
    __table_args__ = (
        Index("ix_loyalty_lines_transaction", "transaction_id"),
        Index("ix_loyalty_lines_account", "account_id"),
        Index("ix_loyalty_lines_lot", "lot_id"),
        Index("ix_loyalty_lines_program_at", "program_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("loyalty_transactions.id", ondelete="CASCADE")
    )
    account_id: Mapped[int] = mapped_column(BigInt)
    program_id: Mapped[int] = mapped_column(BigInt)
    lot_id: Mapped[int] = mapped_column(BigInt)
    bucket: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(20))
    points: Mapped[int] = mapped_column(BigInt)
    created_at: Mapped[datetime]


class Lot(Base):
    """Points credited together, with one expiry: what is left of them (a ledger cache)."""

    __tablename__ = "loyalty_lots"
    __table_args__ = (
        Index(
            "ix_loyalty_lots_open",
            "account_id",
            "expires_at",
            sqlite_where=text("remaining > 0"),
            postgresql_where=text("remaining > 0"),
        ),
        Index(
            "ix_loyalty_lots_expiring",
            "expires_at",
            sqlite_where=text("remaining > 0"),
            postgresql_where=text("remaining > 0"),
        ),
        Index(
            "ix_loyalty_lots_pending",
            "available_at",
            sqlite_where=text(f"state = '{PENDING}'"),
            postgresql_where=text(f"state = '{PENDING}'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("loyalty_accounts.id", ondelete="CASCADE"))
    program_id: Mapped[int] = mapped_column(BigInt)
    transaction_id: Mapped[int] = mapped_column(BigInt)
    state: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInt)
    remaining: Mapped[int] = mapped_column(BigInt)
    available_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


# The lot indexes' conditions, with their constants written into the SQL as the indexes have
# them. Compared with a bound parameter instead, PostgreSQL's generic plan of a prepared
# statement cannot use the partial index and scans the table, so PostgreSQL keeps planning
# such a statement afresh at every execution (about 1 ms for a POS confirm's state).
OPEN_LOT = Lot.remaining > literal_column("0")
PENDING_LOT = Lot.state == literal_column(f"'{PENDING}'")


class TierChange(Base):
    """A customer's tier moved up or down."""

    __tablename__ = "loyalty_tier_changes"
    __table_args__ = (Index("ix_loyalty_tier_changes_account", "account_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("loyalty_accounts.id", ondelete="CASCADE"))
    program_id: Mapped[int] = mapped_column(BigInt)
    from_tier: Mapped[str] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(20))
    spend: Mapped[int] = mapped_column(BigInt)
    at: Mapped[datetime]


class Device(Base):
    """A customer's app installation: its TOTP secret makes the rotating codes."""

    __tablename__ = "loyalty_devices"
    __table_args__ = (Index("ix_loyalty_devices_customer", "customer_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    # public reference printed in every code; the secret never leaves the enrolment response
    ref: Mapped[str] = mapped_column(String(16), unique=True)
    # sealed (AES-GCM, see service.codes); plain base32 in rows enrolled before sealing
    secret: Mapped[str] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(100))
    # the newest redemption time step used: a code at or before it is a replay
    last_redeem_step: Mapped[int | None] = mapped_column(BigInt)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class GiftCard(Base):
    """A prepaid gift card (money in minor units); its PIN is stored as an Argon2 hash."""

    __tablename__ = "loyalty_gift_cards"
    __table_args__ = (UniqueConstraint("workspace_id", "number"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(32))
    pin_hash: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), default=CARD_ISSUED)
    currency: Mapped[str] = mapped_column(String(3))
    initial_amount: Mapped[int] = mapped_column(BigInt)
    # cached sum of the card's entries
    balance: Mapped[int] = mapped_column(BigInt, default=0)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]


class GiftCardEntry(Base):
    """An append-only movement of a gift card's money."""

    __tablename__ = "loyalty_gift_card_entries"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_loyalty_gift_card_entries_card", "card_id"),
        Index("ix_loyalty_gift_card_entries_reverses", "reverses_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigInt)
    card_id: Mapped[int] = mapped_column(ForeignKey("loyalty_gift_cards.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInt)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    reverses_id: Mapped[int | None] = mapped_column(BigInt)
    store_id: Mapped[str | None] = mapped_column(String(64))
    terminal_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class FailedAttempts(Base):
    """Refused gift-card PINs per card or terminal in a fixed window (brute-force guard)."""

    __tablename__ = "loyalty_failed_attempts"
    __table_args__ = (UniqueConstraint("workspace_id", "scope", "subject", "window_start"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigInt)
    scope: Mapped[str] = mapped_column(String(10))
    subject: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[datetime]
    failures: Mapped[int] = mapped_column(default=0)


class RateCounter(Base):
    """Confirms of one card, terminal or store (``subject``: ``a<account id>``, ``t<terminal>``,
    ``s<store>``) in one fixed window: what velocity limits are checked against, in one
    indexed row instead of a count over every recent transaction."""

    __tablename__ = "loyalty_rate_counters"
    __table_args__ = (
        UniqueConstraint("program_id", "subject", "window_start"),
        Index("ix_loyalty_rate_counters_window", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    program_id: Mapped[int] = mapped_column(BigInt)
    subject: Mapped[str] = mapped_column(String(80))
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=0)


class FraudFlag(Base):
    """An anomaly worth a person's look (a redemption burst), raised once per window."""

    __tablename__ = "loyalty_fraud_flags"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        Index("ix_loyalty_fraud_flags_open", "workspace_id", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigInt)
    program_id: Mapped[int] = mapped_column(BigInt)
    account_id: Mapped[int | None] = mapped_column(BigInt)
    store_id: Mapped[str | None] = mapped_column(String(64))
    terminal_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolution: Mapped[str | None] = mapped_column(Text)
