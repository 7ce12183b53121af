"""The loyalty store's lot queries use the partial indexes made for them, and a redeeming
confirm's burst counts read only the window's transactions.

A partial index (``WHERE remaining > 0``) serves a query only when the planner can see that
the query's condition implies the index's. Written with a bound parameter (``remaining >
$1``), the condition hides that from PostgreSQL's generic plan of a prepared statement,
which then scans the lots table, so PostgreSQL plans the statement afresh at every execution
instead. These tests catch the statements as they are executed and ask each database for its
plan: PostgreSQL for the generic one, with table scans switched off so that only an unusable
index leaves one; SQLite (which looks at the bound values) for the plan it uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.loyalty import store
from tests.query_plans import plan_of

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def confirm_state(bursts: tuple[datetime, int, int] | None) -> Callable[[Session], object]:
    """A confirm's state read, without or with the redemption bursts."""
    return lambda s: store.confirm_state(
        s,
        program_id=1,
        key="pos:1",
        account_id=1,
        terminal_id="T1",
        since=NOW - timedelta(days=365),
        bursts=bursts,
    )


QUERIES: dict[str, tuple[Callable[[Session], object], str]] = {
    "a confirm's state (the open lots)": (confirm_state(None), "ix_loyalty_lots_open"),
    "a redeeming confirm's state": (
        confirm_state((NOW - timedelta(minutes=10), 5, 50)),
        "ix_loyalty_lots_open",
    ),
    "an account's open lots": (lambda s: store.open_lots(s, 1), "ix_loyalty_lots_open"),
    "lots due to expire": (
        lambda s: store.due_expiring_lots(s, NOW, 100),
        "ix_loyalty_lots_expiring",
    ),
    "pending lots due": (lambda s: store.due_pending_lots(s, NOW, 100), "ix_loyalty_lots_"),
}


@pytest.mark.parametrize("query", list(QUERIES))
def test_lot_queries_use_the_partial_indexes(runtime: Runtime, query: str) -> None:
    run, index = QUERIES[query]
    found = plan_of(runtime, "loyalty_lots", run)
    assert index in found, found
    assert not re.search(r"Seq Scan on loyalty_lots|SCAN loyalty_lots(?! USING)", found), found


def test_redemption_bursts_read_only_the_window_by_index(runtime: Runtime) -> None:
    """The burst counts read the transactions made since the window began, by the account's
    and the terminal's indexes (a busy terminal's older transactions are never read), and
    look up each one's lines by transaction."""
    found = plan_of(
        runtime, "loyalty_transactions", confirm_state((NOW - timedelta(minutes=10), 5, 50))
    )
    by_terminal = (
        r"ix_loyalty_transactions_terminal \(program_id=\? AND terminal_id=\? AND created_at>\?\)"
        if runtime.db.dialect == "sqlite"
        else r"ix_loyalty_transactions_terminal on loyalty_transactions \S+ [^\n]*\n\s+"
        r"Index Cond: [^\n]*\(program_id = [^\n]*terminal_id[^\n]*created_at > \$\d+"
    )
    assert re.search(by_terminal, found), found
    assert set(re.findall(r"ix_loyalty_lines_\w+", found)) == {"ix_loyalty_lines_transaction"}
