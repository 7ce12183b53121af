"""Writing one ledger posting: its transaction, the lot it opens (if any), its lines, the lots
it draws from and the account's cached balances. Never commits.

On PostgreSQL the whole posting is one statement (data-modifying ``WITH`` queries, which run
exactly once and see each other's new rows only through ``RETURNING``): a POS confirm spends a
round trip on it instead of five. Elsewhere, or for a posting that opens more than one lot (a
merge), the same rows are written statement by statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.orm import Session

from tactful.core import direct
from tactful.loyalty import store
from tactful.loyalty.models import LedgerTransaction, Lot


@dataclass(frozen=True)
class NewLotRow:
    """The lot a posting opens (its transaction id is the posting's)."""

    state: str
    points: int
    available_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class LineRow:
    """One line; ``lot_id`` None: the posting's new lot number ``new_lot``."""

    lot_id: int | None
    new_lot: int
    bucket: str
    kind: str
    points: int


_TRANSACTION_COLUMNS = (
    "workspace_id, program_id, account_id, kind, idempotency_key, correlation_key, "
    "reverses_id, receipt_id, store_id, terminal_id, amount, spend, points, actor, reason, "
    "details, created_at"
)
_STATEMENTS: dict[tuple[bool, int, int], TextClause] = {}


def _statement(new_lot: bool, lines: int, updates: int) -> TextClause:
    """The PostgreSQL statement for a posting of this shape, built once (only fixed text and
    numbered placeholders go into it; every value is a bound parameter)."""
    key = (new_lot, lines, updates)
    found = _STATEMENTS.get(key)
    if found is not None:
        return found
    values = ", ".join(f":{c.strip()}" for c in _TRANSACTION_COLUMNS.split(","))
    parts = [
        f"t AS (INSERT INTO loyalty_transactions ({_TRANSACTION_COLUMNS}) VALUES ({values}) "  # noqa: S608
        "RETURNING id)"
    ]
    if new_lot:
        parts.append(
            "l AS (INSERT INTO loyalty_lots (account_id, program_id, transaction_id, state, "
            "points, remaining, available_at, expires_at, created_at) "
            "SELECT CAST(:account_id AS BIGINT), CAST(:program_id AS BIGINT), t.id, "
            "CAST(:lot_state AS VARCHAR), CAST(:lot_points AS BIGINT), "
            "CAST(:lot_points AS BIGINT), :lot_available_at, :lot_expires_at, :created_at "
            "FROM t RETURNING id)"
        )
    else:
        parts.append("l AS (SELECT CAST(NULL AS BIGINT) AS id)")
    if lines:
        rows = ", ".join(
            f"(CAST(:lot{i} AS BIGINT), CAST(:bucket{i} AS VARCHAR), "
            f"CAST(:kind{i} AS VARCHAR), CAST(:points{i} AS BIGINT))"
            for i in range(lines)
        )
        parts.append(
            "n AS (INSERT INTO loyalty_lines (transaction_id, account_id, program_id, lot_id, "  # noqa: S608
            "bucket, kind, points, created_at) "
            "SELECT t.id, CAST(:account_id AS BIGINT), CAST(:program_id AS BIGINT), "
            "COALESCE(v.lot_id, l.id), v.bucket, v.kind, v.points, :created_at "
            f"FROM t LEFT JOIN l ON true CROSS JOIN (VALUES {rows}) "
            "AS v(lot_id, bucket, kind, points))"
        )
    if updates:
        rows = ", ".join(
            f"(CAST(:u_id{i} AS BIGINT), CAST(:u_remaining{i} AS BIGINT), "
            f"CAST(:u_state{i} AS VARCHAR))"
            for i in range(updates)
        )
        parts.append(
            "u AS (UPDATE loyalty_lots SET remaining = v.remaining, state = v.state "  # noqa: S608
            f"FROM (VALUES {rows}) AS v(id, remaining, state) WHERE loyalty_lots.id = v.id)"
        )
    parts.append(
        "a AS (UPDATE loyalty_accounts SET balance = CAST(:balance AS BIGINT), "
        "pending = CAST(:pending AS BIGINT), updated_at = :created_at "
        "WHERE id = CAST(:account_id AS BIGINT))"
    )
    stamp = LedgerTransaction.created_at.type
    stmt = text(
        "WITH " + ", ".join(parts) + " SELECT t.id, l.id FROM t LEFT JOIN l ON true"  # noqa: S608
    ).bindparams(
        bindparam("details", type_=LedgerTransaction.details.type),
        bindparam("created_at", type_=stamp),
        *(
            [
                bindparam("lot_available_at", type_=Lot.available_at.type),
                bindparam("lot_expires_at", type_=Lot.expires_at.type),
            ]
            if new_lot
            else []
        ),
    )
    _STATEMENTS[key] = stmt
    return stmt


def write_posting(
    session: Session,
    *,
    transaction: dict[str, Any],
    lots: Sequence[NewLotRow],
    lines: Sequence[LineRow],
    lot_updates: Sequence[tuple[int, int, str]],
    balance: int,
    pending: int,
) -> tuple[int, list[int]]:
    """Write a posting (``transaction`` holds the ``loyalty_transactions`` row; each lot update
    is ``(lot id, remaining, state)``; ``balance`` and ``pending`` are the account's new cached
    balances, the caller holding its lock). Returns the transaction's id and the new lots'."""
    account_id, program_id, at = (
        transaction["account_id"],
        transaction["program_id"],
        transaction["created_at"],
    )
    if len(lots) <= 1 and session.get_bind().dialect.name == "postgresql":
        lot = lots[0] if lots else None
        params = dict(transaction)
        if lot is not None:
            params.update(
                lot_state=lot.state,
                lot_points=lot.points,
                lot_available_at=lot.available_at,
                lot_expires_at=lot.expires_at,
            )
        for i, line in enumerate(lines):
            params.update(
                {
                    f"lot{i}": line.lot_id,
                    f"bucket{i}": line.bucket,
                    f"kind{i}": line.kind,
                    f"points{i}": line.points,
                }
            )
        for i, (lot_id, remaining, state) in enumerate(lot_updates):
            params.update({f"u_id{i}": lot_id, f"u_remaining{i}": remaining, f"u_state{i}": state})
        params.update(balance=balance, pending=pending)
        stmt = _statement(lot is not None, len(lines), len(lot_updates))
        row = direct.execute(session, stmt, params).one()
        return int(row[0]), [] if row[1] is None else [int(row[1])]
    transaction_id = store.insert_transaction(session, transaction)
    lot_ids = [
        store.insert_lot(
            session,
            {
                "account_id": account_id,
                "program_id": program_id,
                "transaction_id": transaction_id,
                "state": lot.state,
                "points": lot.points,
                "remaining": lot.points,
                "available_at": lot.available_at,
                "expires_at": lot.expires_at,
                "created_at": at,
            },
        )
        for lot in lots
    ]
    store.insert_lines(
        session,
        [
            {
                "transaction_id": transaction_id,
                "account_id": account_id,
                "program_id": program_id,
                "lot_id": lot_ids[line.new_lot] if line.lot_id is None else line.lot_id,
                "bucket": line.bucket,
                "kind": line.kind,
                "points": line.points,
                "created_at": at,
            }
            for line in lines
        ],
    )
    store.update_lots(
        session,
        [
            {"lot_id": lot_id_, "remaining": remaining, "state": state}
            for lot_id_, remaining, state in lot_updates
        ],
    )
    store.update_balances(session, account_id, balance=balance, pending=pending, at=at)
    return transaction_id, lot_ids
