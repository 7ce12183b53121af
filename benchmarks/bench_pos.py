"""POS calculate + confirm with 50 concurrent terminals on PostgreSQL, beside the bare SQL
transactions doing the same reads and writes (the ceiling).

What runs: a durable throwaway PostgreSQL server (fsync on), seeded with customers holding
cards, app devices and 1,000 points each. 50 terminals (2 forked processes × 25 threads, each
thread with its own connection) each run a stream of operations; an operation is a
``calculate`` transaction then a ``confirm`` transaction for a 3-line receipt, and every
fourth one also spends 10 points with a fresh redemption code from the customer's app.

Why the service layer and not HTTP: on this 2-core machine an HTTP load generator would
compete with the server for the same cores and the figure would measure the client as much
as the server. The service calls are what each POS request runs inside its transaction
(identification, rules, the account lock, the ledger writes, the event stream, tier and
fraud checks); API-key authentication and JSON encoding are left out, as is everything in
the baseline.

The baseline is psycopg with hand-written SQL doing the same statements per operation: find
the card, read the account and its lots, then lock the account, check the idempotency key,
use the code, insert the transaction, lot and lines, update the lots and the account and
append the events. Same processes, threads, connections and customers.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import psycopg
import pyotp
from sqlalchemy import text

from tactful.bench import BenchResult
from tactful.core import clock
from tactful.core.db import Database, create_db_engine
from tactful.core.migrate import upgrade
from tactful.loyalty.schemas import FraudLimits, ProgramRules, TierRule
from tactful.loyalty.service import codes, pos, programs
from tactful.loyalty.service.rules import ReceiptLine
from tactful.tenancy import service as tenancy
from tactful.testing.postgres import temp_postgres

NAME = "pos"
TITLE = "POS calculate + confirm, 50 concurrent terminals on PostgreSQL vs bare SQL"
BASELINE = "bare SQL (psycopg) doing the same reads and writes"
TARGET = "p95 < 50 ms, ≥ 500 op/s"
SIZES = {"small": (3_000, 1_500), "full": (12_000, 10_000)}  # customers, operations
PROCESSES = 2
THREADS = 25
WARMUP = 3  # operations per terminal before the clock starts


class Customer(NamedTuple):
    card: str
    customer_id: int
    account_id: int
    device_id: int
    ref: str
    secret: str


class Setup(NamedTuple):
    url: str
    workspace_id: int
    program_id: int
    customers: list[Customer]


def _rules() -> ProgramRules:
    return ProgramRules(
        tiers=[
            TierRule(key="base", name="Base", min_spend=0, accrual_bp=500),
            TierRule(key="silver", name="Silver", min_spend=3_000_000, accrual_bp=700),
        ],
        redeem_requires_code=True,
        # a load test, not a store: terminals here run far faster than cashiers do
        limits=FraudLimits(
            account_per_hour=10_000, terminal_per_minute=100_000, store_per_minute=1_000_000
        ),
    )


def _seed(url: str, count: int) -> Setup:
    engine = create_db_engine(url, pool_size=2)
    upgrade(engine)
    db = Database(engine)
    now = clock.now()
    with db.scope() as session:
        init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
        program = programs.create_program(
            session, workspace_id=init.workspace.id, name="Club", rules=_rules(), actor="bench"
        )
        workspace_id, program_id = init.workspace.id, program.id
    secrets = [pyotp.random_base32() for _ in range(count)]
    params = {"ws": workspace_id, "program": program_id, "n": count, "now": now}
    statements = [
        """INSERT INTO customers (workspace_id, anonymous, first_name, is_test, attributes,
               attribute_sources, created_at, updated_at)
           SELECT :ws, false, 'Customer ' || i, false, '{}', '{}', :now, :now
           FROM generate_series(1, :n) AS i""",
        """INSERT INTO identities (workspace_id, customer_id, kind, namespace, value, raw_value,
               valid, status, source, created_at)
           SELECT :ws, id, 'card', '', (7000000000 + id)::text, (7000000000 + id)::text, true,
               'ok', 'bench', :now
           FROM customers WHERE workspace_id = :ws""",
        """INSERT INTO loyalty_accounts (workspace_id, program_id, customer_id, status, tier,
               tier_since, balance, pending, created_at, updated_at)
           SELECT :ws, :program, id, 'active', 'base', :now, 1000, 0, :now, :now
           FROM customers WHERE workspace_id = :ws""",
        """INSERT INTO loyalty_transactions (workspace_id, program_id, account_id, kind,
               idempotency_key, correlation_key, amount, spend, points, actor, details, created_at)
           SELECT :ws, :program, id, 'welcome', 'welcome:' || id, NULL, 0, 0, 1000, 'bench', '{}',
               :now
           FROM loyalty_accounts WHERE program_id = :program""",
        """INSERT INTO loyalty_lots (account_id, program_id, transaction_id, state, points,
               remaining, expires_at, created_at)
           SELECT account_id, :program, id, 'available', 1000, 1000, :now + interval '1 year', :now
           FROM loyalty_transactions WHERE program_id = :program AND kind = 'welcome'""",
        """INSERT INTO loyalty_lines (transaction_id, account_id, program_id, lot_id, bucket, kind,
               points, created_at)
           SELECT transaction_id, account_id, :program, id, 'available', 'bonus', 1000, :now
           FROM loyalty_lots WHERE program_id = :program""",
    ]
    with db.scope() as session:
        for sql in statements:
            session.execute(text(sql), params)
        rows = session.execute(
            text(
                """SELECT c.id, a.id, i.value FROM customers c
                   JOIN loyalty_accounts a ON a.customer_id = c.id
                   JOIN identities i ON i.customer_id = c.id
                   WHERE c.workspace_id = :ws ORDER BY c.id"""
            ),
            params,
        ).all()
        refs = [
            f"{n:08d}".translate(str.maketrans("0123456789", "ABCDEFGHIJ")) for n in range(count)
        ]
        session.execute(
            text(
                """INSERT INTO loyalty_devices (workspace_id, customer_id, ref, secret, created_at)
                   VALUES (:ws, :customer, :ref, :secret, :now)"""
            ),
            [
                {"ws": workspace_id, "customer": row[0], "ref": ref, "secret": secret, "now": now}
                for row, ref, secret in zip(rows, refs, secrets, strict=True)
            ],
        )
        device_ids = dict(
            session.execute(text("SELECT ref, id FROM loyalty_devices")).tuples().all()
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    customers = [
        Customer(row[2], row[0], row[1], device_ids[ref], ref, secret)
        for row, ref, secret in zip(rows, refs, secrets, strict=True)
    ]
    return Setup(url, workspace_id, program_id, customers)


class Op(NamedTuple):
    pos_id: str
    customer: Customer
    lines: tuple[ReceiptLine, ...]
    redeem: int


def _ops(setup: Setup, run: str, count: int, offset: int) -> list[Op]:
    ops = []
    for n in range(count):
        customer = setup.customers[(offset + n) % len(setup.customers)]
        base = 10_000 + (n * 7919) % 90_000
        lines = (
            ReceiptLine(1, f"P{n % 500}", f"C{n % 20}", base),
            ReceiptLine(2, f"P{(n + 1) % 500}", f"C{(n + 3) % 20}", base // 2),
            ReceiptLine(3, f"P{(n + 2) % 500}", None, 4_990),
        )
        ops.append(Op(f"{run}-{n}", customer, lines, 10 if n % 4 == 0 else 0))
    return ops


# -- ours: the service layer --------------------------------------------------------------


def _ours(setup: Setup) -> Callable[[Op, str], None]:
    db = Database(create_db_engine(setup.url, pool_size=THREADS + 2))

    def operate(op: Op, terminal: str) -> None:
        code = (
            codes.make_code(op.customer.secret, op.customer.ref, "R", clock.now())
            if op.redeem
            else None
        )
        common: dict[str, Any] = {
            "workspace_id": setup.workspace_id,
            "brand_id": None,
            "program_id": setup.program_id,
            "kind": "card",
            "value": op.customer.card,
            "lines": op.lines,
            "redeem_points": op.redeem,
            "redeem_code": code,
            "store_id": f"S{int(terminal[1:]) % 10}",
        }
        with db.scope() as session:
            pos.calculate(session, **common)
        with db.scope() as session:
            pos.confirm(
                session,
                **common,
                pos_transaction_id=op.pos_id,
                receipt_id=op.pos_id,
                terminal_id=terminal,
                actor="bench",
            )

    return operate


# -- the baseline: hand-written SQL ----------------------------------------------------------

_FIND = """SELECT customer_id FROM identities WHERE workspace_id = %s AND kind = 'card'
           AND namespace = '' AND value = %s AND valid"""
_ACCOUNT = """SELECT id, tier, balance, pending FROM loyalty_accounts
              WHERE program_id = %s AND customer_id = %s"""
_LOTS = """SELECT id, remaining FROM loyalty_lots WHERE account_id = %s AND remaining > 0
           ORDER BY expires_at IS NULL, expires_at, id"""


def _bare(setup: Setup) -> Callable[[Op, str], None]:
    local = threading.local()

    def connection() -> psycopg.Connection[Any]:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(setup.url)
        return conn

    def operate(op: Op, terminal: str) -> None:
        conn = connection()
        now = datetime.now(UTC)
        total = sum(line.amount for line in op.lines)
        accrued = (total - op.redeem * 100) * 500 // 1_000_000
        with conn.transaction():  # calculate
            (customer_id,) = conn.execute(
                _FIND, (setup.workspace_id, op.customer.card)
            ).fetchone() or (0,)
            conn.execute(_ACCOUNT, (setup.program_id, customer_id)).fetchone()
            conn.execute(_LOTS, (op.customer.account_id,)).fetchall()
        with conn.transaction():  # confirm
            (customer_id,) = conn.execute(
                _FIND, (setup.workspace_id, op.customer.card)
            ).fetchone() or (0,)
            account = conn.execute(
                _ACCOUNT + " FOR UPDATE", (setup.program_id, customer_id)
            ).fetchone()
            assert account is not None
            conn.execute(
                """SELECT id FROM loyalty_transactions
                   WHERE program_id = %s AND idempotency_key = %s""",
                (setup.program_id, f"pos:{op.pos_id}"),
            ).fetchone()
            lots = conn.execute(_LOTS, (account[0],)).fetchall()
            if op.redeem:
                step = int(now.timestamp()) // 30
                conn.execute(
                    """UPDATE loyalty_devices SET last_redeem_step = %s WHERE id = %s
                       AND (last_redeem_step IS NULL OR last_redeem_step < %s)""",
                    (step, op.customer.device_id, step),
                )
            (txn_id,) = conn.execute(
                """INSERT INTO loyalty_transactions (workspace_id, program_id, account_id, kind,
                       idempotency_key, correlation_key, receipt_id, store_id, terminal_id, amount,
                       spend, points, actor, details, created_at)
                   VALUES (%s, %s, %s, 'purchase', %s, %s, %s, %s, %s, %s, %s, %s, 'bench', '{}',
                       %s)
                   RETURNING id""",
                (
                    setup.workspace_id,
                    setup.program_id,
                    account[0],
                    f"pos:{op.pos_id}",
                    op.pos_id,
                    op.pos_id,
                    "S1",
                    terminal,
                    total,
                    total,
                    accrued - op.redeem,
                    now,
                ),
            ).fetchone() or (0,)
            (lot_id,) = conn.execute(
                """INSERT INTO loyalty_lots (account_id, program_id, transaction_id, state, points,
                       remaining, available_at, expires_at, created_at)
                   VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, %s) RETURNING id""",
                (
                    account[0],
                    setup.program_id,
                    txn_id,
                    accrued,
                    accrued,
                    now + timedelta(days=14),
                    now + timedelta(days=365),
                    now,
                ),
            ).fetchone() or (0,)
            lines = [
                (txn_id, account[0], setup.program_id, lot_id, "pending", "accrual", accrued, now)
            ]
            if op.redeem:
                lines.append(
                    (
                        txn_id,
                        account[0],
                        setup.program_id,
                        lots[0][0],
                        "available",
                        "redemption",
                        -op.redeem,
                        now,
                    )
                )
                conn.execute(
                    "UPDATE loyalty_lots SET remaining = remaining - %s WHERE id = %s",
                    (op.redeem, lots[0][0]),
                )
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO loyalty_lines (transaction_id, account_id, program_id, lot_id,
                           bucket, kind, points, created_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    lines,
                )
            conn.execute(
                """UPDATE loyalty_accounts SET balance = balance - %s, pending = pending + %s,
                       updated_at = %s WHERE id = %s""",
                (op.redeem, accrued, now, account[0]),
            )
            for name in ("Bonus Accrued", "Bonus Redeemed")[: 2 if op.redeem else 1]:
                conn.execute(
                    """INSERT INTO event_inbox (workspace_id, message_id, type, name, identities,
                           traits, properties, context, occurred_at, received_at, source,
                           historical, customer_id, resolved_at)
                       VALUES (%s, %s, 'track', %s, '[]', '{}', '{}', '{}', %s, %s, 'loyalty',
                           false, %s, %s)
                       ON CONFLICT DO NOTHING""",
                    (setup.workspace_id, f"bare:{txn_id}:{name}", name, now, now, customer_id, now),
                )

    return operate


# -- the driver -----------------------------------------------------------------------------------


def _process(
    setup: Setup,
    kind: str,
    streams: list[tuple[str, list[Op], list[Op]]],
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    operate = _ours(setup) if kind == "ours" else _bare(setup)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    warmed = threading.Barrier(len(streams) + 1)

    def terminal(name: str, warmup: list[Op], ops: list[Op]) -> None:
        for op in warmup:
            operate(op, name)
        warmed.wait()
        start.wait()
        mine: list[float] = []
        for op in ops:
            began = time.perf_counter()
            try:
                operate(op, name)
            except Exception as exc:  # counted and reported, the run goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=terminal, args=stream) for stream in streams]
    for thread in threads:
        thread.start()
    warmed.wait()
    ready.put(True)
    for thread in threads:
        thread.join()
    results.put((time.time(), latencies, errors[:5], len(errors)))


class Run(NamedTuple):
    seconds: float
    latencies: list[float]
    errors: int
    sample_errors: list[str]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _drive(setup: Setup, kind: str, count: int, offset: int) -> Run:
    context = multiprocessing.get_context("fork")
    terminals = PROCESSES * THREADS
    ops = _ops(setup, kind, count, offset)
    warm = _ops(setup, f"{kind}-warm", terminals * WARMUP, offset + count)
    streams = [
        (f"T{t}", warm[t * WARMUP : (t + 1) * WARMUP], ops[t::terminals]) for t in range(terminals)
    ]
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_process,
            args=(setup, kind, streams[p * THREADS : (p + 1) * THREADS], ready, start, results),
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=600)
    began = time.time()
    start.set()
    outcomes = [results.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    return Run(
        seconds=max(o[0] for o in outcomes) - began,
        latencies=[x for o in outcomes for x in o[1]],
        errors=sum(o[3] for o in outcomes),
        sample_errors=[e for o in outcomes for e in o[2]],
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run(scale: str) -> list[BenchResult]:
    """Seed, then run our service layer and the bare SQL with 50 terminals each."""
    customers, operations = SIZES.get(scale, SIZES["small"])
    with temp_postgres(fast=False) as server:
        setup = _seed(server.create_database("bench"), customers)
        ours = _drive(setup, "ours", operations, 0)
        # different customers for the baseline, so no redemption code step is shared
        bare = _drive(setup, "bare", operations, customers // 2)
    done = operations - ours.errors
    extra = {
        "terminals": f"{PROCESSES * THREADS} ({PROCESSES} processes × {THREADS} threads)",
        "operation": "calculate + confirm (2 transactions); every 4th spends 10 points",
        "ours p50 / p95 / p99": " / ".join(_ms(ours.percentile(q)) for q in (0.5, 0.95, 0.99)),
        "bare p50 / p95 / p99": " / ".join(_ms(bare.percentile(q)) for q in (0.5, 0.95, 0.99)),
        "ours operations/s": f"{done / ours.seconds:,.0f}",
        "bare operations/s": f"{(operations - bare.errors) / bare.seconds:,.0f}",
        "errors (ours, bare)": f"{ours.errors}, {bare.errors}",
    }
    if ours.sample_errors or bare.sample_errors:
        extra["first errors"] = "; ".join((ours.sample_errors + bare.sample_errors)[:3])
    met = ours.percentile(0.95) < 0.05 and done / ours.seconds >= 500
    return [
        BenchResult(
            benchmark=NAME,
            case=f"{operations:,} operations, {customers:,} customers",
            ours_seconds=ours.seconds,
            baseline=BASELINE,
            baseline_seconds=bare.seconds,
            items=operations,
            unit="op",
            target=f"{TARGET}: {'met' if met else 'NOT met'}",
            extra=extra,
        )
    ]
