"""POS calculate + confirm with 50 concurrent terminals on PostgreSQL, beside the bare SQL
transactions doing the same reads and writes (the ceiling).

What runs: a durable throwaway PostgreSQL server (fsync on), seeded with customers holding
cards, app devices and 1,000 points each. 50 terminals (2 forked processes × 25 threads, each
thread with its own connection) each run a stream of operations; an operation is a
``calculate`` (read-only: its statements run outside a transaction, as the calculate route's
read-only scope runs them on PostgreSQL) then a ``confirm`` transaction for a 3-line receipt,
and every fourth one also spends 10 points with a fresh redemption code from the customer's
app. The clock starts once every terminal has run its 20 warm-up operations: by then each
pooled connection has run each statement often enough for PostgreSQL to have settled on its
plan, as on a server that has been up a while (a new connection plans a statement afresh on
each of its first runs).

Redemption codes are single use: a device's code is refused once any code of the same or an
earlier 30-second step was spent, so one device can pay at most once per step. A benchmark
running hundreds of operations a second would otherwise present codes already used (the same
customer again within a step, across cases or warm-ups) and measure refusals. So every
redeeming operation, in every case and warm-up, pays with a device no other operation uses:
the seed gives each customer as many app devices as the whole run needs (1 at small scale, 2
at full, like a phone and a tablet), and a redeeming receipt belongs to that device's owner.
The other three receipts of four only accrue, from consecutive customers. Nothing is retried
or skipped: every refusal or failure, warm-ups included, is counted and printed beside the
figures, and a case that stalls (no answer within ``STALL`` seconds, a process that dies)
stops the benchmark with an error instead of waiting forever.

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

Beside the rates and latencies each case prints the CPU it cost per measured operation: the
whole machine's (all cores, the database server included; from /proc/stat, so Linux only),
then the measuring processes' own (the terminals' processes; over HTTP the load generator's,
which the machine's figure includes): how the cost splits between the service's processes
and the rest, and how much of the two cores a paced run leaves free. This machine's speed
drifts by a third within minutes, so compare runs made one right after the other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

import orjson
import psycopg
import pyotp
import uvicorn
from sqlalchemy import text

from tactful.app import create_app
from tactful.bench import BenchResult
from tactful.config import DatabaseSettings, SecuritySettings, Settings
from tactful.core import clock
from tactful.core.db import Database, create_db_engine
from tactful.core.migrate import upgrade
from tactful.core.runtime import build_runtime, prepare_heap_for_serving
from tactful.core.security import Signer, random_token
from tactful.loyalty.schemas import FraudLimits, ProgramRules, TierRule
from tactful.loyalty.service import codes, pos, programs
from tactful.loyalty.service.rules import ReceiptLine
from tactful.tenancy import service as tenancy
from tactful.testing.postgres import temp_postgres

NAME = "pos"
TITLE = "POS calculate + confirm, 50 concurrent terminals on PostgreSQL vs bare SQL"
BASELINE = "bare SQL (psycopg) doing the same reads and writes"
TARGET_RATE = 500.0  # operations/s: the target throughput, and the pace latency is taken at
SIZES = {"small": (3_000, 1_500), "full": (12_000, 10_000)}  # customers, operations
PROCESSES = 2
THREADS = 25
# operations per terminal before the clock starts: enough that every pooled connection has run
# each statement of an operation until PostgreSQL settled on its plan (about the seventh run),
# as on a server that has been up a while; the first runs on a new connection plan afresh
WARMUP = 20
STALL = 120  # seconds: waiting longer than this for anything is an error, not a hang
# whose CPU a case's second CPU figure is (the first is the whole machine's)
TERMINALS, GENERATOR = f"the {PROCESSES} terminal processes'", "the load generator's"


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
    signing_secret: str  # the installation's: device secrets are sealed under it
    pos_key: str  # an API key with the pos scope (for the HTTP runs)
    # one entry per app device (a customer's second device is a second entry): each redeeming
    # operation of the whole benchmark takes the next one, so no code is ever presented twice
    redeemers: list[Customer]


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


def _seed(url: str, count: int, devices: int = 1) -> Setup:
    """``count`` customers with a card, 1,000 points and ``devices`` app devices each."""
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
        _key, pos_key = tenancy.issue_api_key(
            session, workspace_id=workspace_id, name="tills", scopes=["pos"]
        )
    secrets = [pyotp.random_base32() for _ in range(count * devices)]
    signing_secret = random_token(32)
    signer = Signer(signing_secret)
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
        # device n belongs to customer n % count: a customer's second device comes after
        # every customer's first
        refs = [
            f"{n:08d}".translate(str.maketrans("0123456789", "ABCDEFGHIJ"))
            for n in range(count * devices)
        ]
        owners = [rows[n % count] for n in range(count * devices)]
        session.execute(
            text(
                """INSERT INTO loyalty_devices (workspace_id, customer_id, ref, secret, created_at)
                   VALUES (:ws, :customer, :ref, :secret, :now)"""
            ),
            [
                {
                    "ws": workspace_id,
                    "customer": row[0],
                    "ref": ref,
                    "secret": codes.seal_secret(signer, ref, secret),
                    "now": now,
                }
                for row, ref, secret in zip(owners, refs, secrets, strict=True)
            ],
        )
        device_ids = dict(
            session.execute(text("SELECT ref, id FROM loyalty_devices")).tuples().all()
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    redeemers = [
        Customer(row[2], row[0], row[1], device_ids[ref], ref, secret)
        for row, ref, secret in zip(owners, refs, secrets, strict=True)
    ]
    customers = redeemers[:count]
    return Setup(url, workspace_id, program_id, customers, signing_secret, pos_key, redeemers)


class Op(NamedTuple):
    pos_id: str
    customer: Customer
    lines: tuple[ReceiptLine, ...]
    redeem: int


def _ops(
    setup: Setup, run: str, count: int, offset: int, redeemers: Iterator[Customer]
) -> list[Op]:
    """``count`` receipts from consecutive customers starting at ``offset``; every fourth
    spends 10 points, by the next unused device from ``redeemers`` (and that device's owner)."""
    ops = []
    for n in range(count):
        redeem = 10 if n % 4 == 0 else 0
        customer = (
            next(redeemers) if redeem else setup.customers[(offset + n) % len(setup.customers)]
        )
        base = 10_000 + (n * 7919) % 90_000
        lines = (
            ReceiptLine(1, f"P{n % 500}", f"C{n % 20}", base),
            ReceiptLine(2, f"P{(n + 1) % 500}", f"C{(n + 3) % 20}", base // 2),
            ReceiptLine(3, f"P{(n + 2) % 500}", None, 4_990),
        )
        ops.append(Op(f"{run}-{n}", customer, lines, redeem))
    return ops


def redemptions(operations: int) -> int:
    """How many devices a whole run of the benchmark uses: 6 cases, each with its warm-up."""
    per_case = -(-operations // 4) + -(-(PROCESSES * THREADS * WARMUP) // 4)
    return 6 * per_case


# -- ours: the service layer --------------------------------------------------------------


def _ours(setup: Setup) -> Callable[[Op, str], None]:
    db = Database(create_db_engine(setup.url, pool_size=THREADS + 2))
    signer = Signer(setup.signing_secret)

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
            "signer": signer,
        }
        with db.scope(readonly=True) as session:  # as the calculate route runs it
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
            # autocommit: the calculate's reads run outside a transaction, as ours do; the
            # confirm's transaction() block sends BEGIN and COMMIT
            conn = local.conn = psycopg.connect(setup.url, autocommit=True)
        return conn

    def operate(op: Op, terminal: str) -> None:
        conn = connection()
        now = datetime.now(UTC)
        total = sum(line.amount for line in op.lines)
        accrued = (total - op.redeem * 100) * 500 // 1_000_000
        # calculate: reads outside a transaction
        found = conn.execute(_FIND, (setup.workspace_id, op.customer.card)).fetchone()
        customer_id = found[0] if found else 0
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
                """SELECT id, (SELECT coalesce(sum(spend), 0) FROM loyalty_transactions
                       WHERE account_id = %s AND created_at > %s)
                   FROM loyalty_transactions
                   WHERE program_id = %s AND idempotency_key = %s""",
                (account[0], now - timedelta(days=365), setup.program_id, f"pos:{op.pos_id}"),
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
                    f"S{int(terminal[1:]) % 10}",
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
                spent = (lots[0][0], "available", "redemption", -op.redeem, now)
                lines.append((txn_id, account[0], setup.program_id, *spent))
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
            # the velocity counters: card per hour, terminal and store per minute
            hour = now.replace(minute=0, second=0, microsecond=0)
            minute = now.replace(second=0, microsecond=0)
            conn.execute(
                """INSERT INTO loyalty_rate_counters (program_id, subject, window_start, count)
                   VALUES (%s, %s, %s, 1), (%s, %s, %s, 1), (%s, %s, %s, 1)
                   ON CONFLICT (program_id, subject, window_start)
                   DO UPDATE SET count = loyalty_rate_counters.count + 1
                   RETURNING count""",
                (
                    *(setup.program_id, f"a{account[0]}", hour),
                    *(setup.program_id, f"t{terminal}", minute),
                    *(setup.program_id, f"s{int(terminal[1:]) % 10}", minute),
                ),
            ).fetchall()

    return operate


# -- the driver -----------------------------------------------------------------------------------


class Outcome(NamedTuple):
    """What one process (or the HTTP load generator) sends back, as a plain tuple: the
    harness loads this module under a name pickle cannot import, and a queue's feeder thread
    drops what it cannot pickle (the process then ends normally, having sent nothing)."""

    finished: float  # time.monotonic() when its last operation ended
    latencies: list[float]
    sample_errors: list[str]
    errors: int  # measured operations refused or failed
    warmup_errors: int  # the same during the warm-up
    cpu: float  # seconds of CPU this process spent while the clock ran (all its threads)
    busy: float | None = None  # the machine's meanwhile (the load generator measures it)


def _process(
    setup: Setup,
    kind: str,
    streams: list[tuple[str, list[Op], list[Op]]],
    interval: float | None,
    ready: Any,
    start: Any,
    start_at: Any,
    results: Any,
) -> None:
    """Run this process's terminals. With ``interval`` each terminal starts an operation every
    ``interval`` seconds (an open loop: latency runs from the scheduled start, so waiting
    behind a slow operation counts); without, each starts the next as soon as one ends."""
    operate = _ours(setup) if kind == "ours" else _bare(setup)
    prepare_heap_for_serving()  # as `tactful serve` does before its first request
    latencies: list[float] = []
    errors: list[str] = []
    warmup_errors: list[str] = []
    lock = threading.Lock()
    # a broken barrier (a terminal died, or the parent gave up) ends the run instead of
    # leaving the others waiting forever
    warmed = threading.Barrier(len(streams) + 1, timeout=STALL)
    terminals = PROCESSES * THREADS

    def terminal(index: int, name: str, warmup: list[Op], ops: list[Op]) -> None:
        for op in warmup:
            try:
                operate(op, name)
            except Exception as exc:  # counted and reported like a measured one
                with lock:
                    warmup_errors.append(f"warm-up {type(exc).__name__}: {exc}")
        warmed.wait()
        if not start.wait(STALL):
            return
        mine: list[float] = []
        # terminals spread evenly over one interval, so the load is smooth
        first = start_at.value + (interval or 0) * index / terminals
        for n, op in enumerate(ops):
            due = first + n * interval if interval else time.monotonic()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                operate(op, name)
            except Exception as exc:  # counted and reported, the run goes on
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            mine.append(time.monotonic() - due)
        with lock:
            latencies.extend(mine)

    threads = [
        threading.Thread(target=terminal, args=(int(stream[0][1:]), *stream), daemon=True)
        for stream in streams
    ]
    for thread in threads:
        thread.start()
    warmed.wait()
    ready.put(True)
    start.wait(STALL)
    cpu = time.process_time()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu
    results.put(
        tuple(
            Outcome(
                time.monotonic(),
                latencies,
                (warmup_errors[:2] + errors[:3]) if warmup_errors else errors[:5],
                len(errors),
                len(warmup_errors),
                cpu,
            )
        )
    )


def _busy(since: float | None = 0.0) -> float | None:
    """The machine's busy CPU seconds (all cores: not idle, not waiting for I/O, not stolen
    by the host, from Linux's /proc/stat) after ``since``; None where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            user, nice, system, _, _, irq, softirq = map(int, stat.readline().split()[1:8])
    except (OSError, ValueError):
        return None
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return None if since is None else busy - since


class Run(NamedTuple):
    seconds: float
    latencies: list[float]
    errors: int
    warmup_errors: int
    sample_errors: list[str]
    cpu: float  # the measuring processes' CPU seconds while the clock ran
    busy: float | None  # the whole machine's, when it could be read

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def latency(self) -> str:
        return " / ".join(_ms(self.percentile(q)) for q in (0.5, 0.95, 0.99))

    def cpu_per_operation(self) -> str:
        """The machine's CPU per measured operation, then the measuring processes' share."""
        count = len(self.latencies)
        if self.busy is None or not count:
            return "not measured"
        return f"{_ms(self.busy / count)} / {_ms(self.cpu / count)}"


def _gather(
    queue: Any,
    senders: list[Any],
    deadline: float,
    what: str,
    watched: tuple[Any, ...] = (),
) -> list[Any]:
    """One item from each of ``senders`` (processes) through ``queue``: an error, not a hang,
    when one of them ends without having sent it (whatever its exit code), one of ``watched``
    (processes that must stay up meanwhile) ends, or the deadline passes."""
    got: list[Any] = []
    while len(got) < len(senders):
        try:
            got.append(queue.get(timeout=1.0))
            continue
        except Empty:
            pass
        ended = [p for p in senders if p.exitcode is not None]
        if len(ended) > len(got):
            try:  # what an ended process sent may still be in the pipe
                got.append(queue.get(timeout=5.0))
                continue
            except Empty:
                pass
        reason = None
        if len(ended) > len(got):
            reason = f"a process ended (exit code {ended[0].exitcode}) without its results"
        elif down := [p for p in watched if p.exitcode is not None]:
            reason = f"a server process ended (exit code {down[0].exitcode})"
        elif time.monotonic() > deadline:
            reason = "no results before the deadline"
        if reason:
            for process in (*senders, *watched):
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5)
            raise RuntimeError(f"bench pos, {what}: {reason}")
    return got


def _deadline(count: int) -> float:
    """When a case is given up: far beyond any sane run (10 op/s), but never forever."""
    return time.monotonic() + STALL + count / 10


def _streams(
    setup: Setup, label: str, count: int, offset: int, redeemers: Iterator[Customer]
) -> list[tuple[str, list[Op], list[Op]]]:
    terminals = PROCESSES * THREADS
    ops = _ops(setup, label, count, offset, redeemers)
    warm = _ops(setup, f"{label}-warm", terminals * WARMUP, offset + count, redeemers)
    return [
        (f"T{t}", warm[t * WARMUP : (t + 1) * WARMUP], ops[t::terminals]) for t in range(terminals)
    ]


def _drive(
    setup: Setup,
    kind: str,
    count: int,
    offset: int,
    rate: float | None,
    redeemers: Iterator[Customer],
) -> Run:
    """``count`` operations over 50 terminals, paced at ``rate`` operations/s in total (or as
    fast as they go)."""
    context = multiprocessing.get_context("fork")
    terminals = PROCESSES * THREADS
    label = f"{kind}-{'paced' if rate else 'open'}"
    streams = _streams(setup, label, count, offset, redeemers)
    interval = terminals / rate if rate else None
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    start_at = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=_process,
            args=(
                setup,
                kind,
                streams[p * THREADS : (p + 1) * THREADS],
                interval,
                ready,
                start,
                start_at,
                results,
            ),
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    deadline = _deadline(count)
    _gather(ready, processes, time.monotonic() + STALL, f"{label} warm-up")
    start_at.value = time.monotonic() + 0.2
    busy = _busy()  # the machine's from here to the last result
    start.set()
    outcomes = [Outcome(*o) for o in _gather(results, processes, deadline, label)]
    busy = _busy(busy)
    for process in processes:
        process.join(timeout=STALL)
    return Run(
        seconds=max(o.finished for o in outcomes) - start_at.value,
        latencies=[x for o in outcomes for x in o.latencies],
        errors=sum(o.errors for o in outcomes),
        warmup_errors=sum(o.warmup_errors for o in outcomes),
        sample_errors=[e for o in outcomes for e in o.sample_errors],
        cpu=sum(o.cpu for o in outcomes),
        busy=busy,
    )


# -- through HTTP: the real app under uvicorn, a raw HTTP/1.1 load generator --------------------


def _serve(setup: Setup, sock: socket.socket, data_dir: str) -> None:
    """One API process: the app with its real middleware, routing, authentication and
    per-request transaction, on a listening socket shared with the other API process."""
    settings = Settings(
        data_dir=Path(data_dir),
        database=DatabaseSettings(url=setup.url, pool_size=THREADS + 2),
        security=SecuritySettings(secret_key=setup.signing_secret),
    )
    runtime = build_runtime(settings)
    config = uvicorn.Config(
        create_app(runtime=runtime, run_worker=False),
        log_level="warning",
        access_log=False,
        # a terminal may sit idle longer than uvicorn's default 5 s (a slow warm-up elsewhere,
        # the wait for the start): the connection must still be there
        timeout_keep_alive=STALL,
    )
    prepare_heap_for_serving()  # as `tactful serve` does
    uvicorn.Server(config).run(sockets=[sock])


def _request(path: str, key: str, body: dict[str, Any]) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


def _body(setup: Setup, op: Op, index: int, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "program_id": setup.program_id,
        "customer": {"kind": "card", "value": op.customer.card},
        "lines": [
            {
                "line_no": x.line_no,
                "product_id": x.product_id,
                "category_id": x.category_id,
                "amount": x.amount,
            }
            for x in op.lines
        ],
        "redeem_points": op.redeem,
        "store_id": f"S{index % 10}",
        "terminal_id": name,
    }
    if op.redeem:
        body["redeem_code"] = codes.make_code(op.customer.secret, op.customer.ref, "R", clock.now())
    return body


def _generate(
    setup: Setup,
    port: int,
    streams: list[tuple[str, list[Op], list[Op]]],
    interval: float | None,
    results: Any,
) -> None:
    """50 terminals as keep-alive connections in one asyncio process (a few dozen µs of CPU
    per request, so the generator takes as little as possible from the server's cores).

    Every failure is counted (a refusal, a dropped connection, an answer later than
    ``STALL`` seconds); a terminal whose connection broke opens a new one and goes on."""
    latencies: list[float] = []
    errors: list[str] = []
    warmup_errors: list[str] = []
    terminals = len(streams)

    warmed = 0  # terminals done with their warm-up
    started = asyncio.Event()  # set, with ``start``, when the last one is
    start = 0.0
    at_start: tuple[float, float | None] = (0.0, None)  # this process's CPU, the machine's

    async def terminal(index: int, name: str, warmup: list[Op], ops: list[Op]) -> None:
        nonlocal warmed, start, at_start
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

        async def operate(op: Op) -> str | None:
            """One calculate + confirm; what failed, if anything."""
            nonlocal connection
            body = _body(setup, op, index, name)
            confirm = {**body, "pos_transaction_id": op.pos_id, "receipt_id": op.pos_id}
            try:
                if connection is None:
                    connection = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), STALL
                    )
                for path, payload in (
                    ("/v1/loyalty/pos/calculate", body),
                    ("/v1/loyalty/pos/confirm", confirm),
                ):
                    status, answer = await asyncio.wait_for(
                        _exchange(*connection, _request(path, setup.pos_key, payload)), STALL
                    )
                    if status != 200:
                        return f"{path} {status}: {answer[:200].decode(errors='replace')}"
            except (OSError, EOFError, TimeoutError, ValueError, IndexError) as exc:
                if connection is not None:
                    connection[1].close()
                connection = None
                return f"{type(exc).__name__}: {exc}"
            return None

        for op in warmup:
            if failed := await operate(op):
                warmup_errors.append(failed)
        # the clock starts once every terminal is warmed up
        warmed += 1
        if warmed == terminals:
            start = time.monotonic() + 0.2
            at_start = (time.process_time(), _busy())
            started.set()
        await asyncio.wait_for(started.wait(), STALL)
        first = start + (interval or 0) * index / terminals
        for n, op in enumerate(ops):
            due = first + n * interval if interval else time.monotonic()
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            if failed := await operate(op):
                errors.append(failed)
            else:
                latencies.append(time.monotonic() - due)
        if connection is not None:
            connection[1].close()

    async def main() -> tuple[float, float]:
        await asyncio.gather(*(terminal(i, *stream) for i, stream in enumerate(streams)))
        return start, time.monotonic()

    start, finished = asyncio.run(main())
    cpu, busy = time.process_time() - at_start[0], _busy(at_start[1])
    sample = (warmup_errors[:2] + errors[:3]) if warmup_errors else errors[:5]
    outcome = Outcome(finished, latencies, sample, len(errors), len(warmup_errors), cpu, busy)
    results.put((finished - start, tuple(outcome)))


def _drive_http(
    setup: Setup, count: int, offset: int, rate: float | None, redeemers: Iterator[Customer]
) -> Run:
    """The same operations over HTTP: 2 API processes, one load generator process."""
    context = multiprocessing.get_context("fork")
    terminals = PROCESSES * THREADS
    label = f"http-{'paced' if rate else 'open'}"
    streams = _streams(setup, label, count, offset, redeemers)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    results = context.Queue()
    with tempfile.TemporaryDirectory(prefix="tactful-bench-") as data_dir:
        servers = [
            context.Process(target=_serve, args=(setup, sock, data_dir)) for _ in range(PROCESSES)
        ]
        generator = context.Process(
            target=_generate,
            args=(setup, port, streams, terminals / rate if rate else None, results),
        )
        try:
            for server in servers:
                server.start()
            _wait_ready(port, servers)
            generator.start()
            ((seconds, sent),) = _gather(
                results, [generator], _deadline(count), label, watched=tuple(servers)
            )
            outcome = Outcome(*sent)
            generator.join(timeout=STALL)
        finally:
            for process in (generator, *servers):
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=STALL)
                if process.is_alive():
                    process.kill()
                    process.join()
    sock.close()
    return Run(
        seconds=seconds,
        latencies=outcome.latencies,
        errors=outcome.errors,
        warmup_errors=outcome.warmup_errors,
        sample_errors=outcome.sample_errors,
        cpu=outcome.cpu,
        busy=outcome.busy,
    )


def _wait_ready(port: int, servers: list[Any]) -> None:
    deadline = time.monotonic() + STALL
    while time.monotonic() < deadline:
        if any(server.exitcode is not None for server in servers):
            raise RuntimeError("bench pos: an API process exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.settimeout(5)
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"bench pos: the API processes did not start within {STALL} s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def run(scale: str) -> list[BenchResult]:
    """Seed, then run our service layer and the bare SQL with 50 terminals each, as fast as
    they go (throughput) and paced at the target rate (latency under that load); then the
    same through HTTP (the real app), against the same bare SQL figures."""
    customers, operations = SIZES.get(scale, SIZES["small"])
    devices = -(-redemptions(operations) // customers)
    load_before = _load()
    with temp_postgres(fast=False) as server:
        setup = _seed(server.create_database("bench"), customers, devices)
        # every redeeming operation of every case (warm-ups included) takes a device no other
        # operation uses: a code is never presented twice, whatever the timing
        redeemers = iter(setup.redeemers)
        # the other operations: each case starts at another sixth of the customers
        sixth = customers // 6
        ours = _drive(setup, "ours", operations, 0, None, redeemers)
        bare = _drive(setup, "bare", operations, sixth, None, redeemers)
        ours_paced = _drive(setup, "ours", operations, 2 * sixth, TARGET_RATE, redeemers)
        bare_paced = _drive(setup, "bare", operations, 3 * sixth, TARGET_RATE, redeemers)
        http = _drive_http(setup, operations, 4 * sixth, None, redeemers)
        http_paced = _drive_http(setup, operations, 5 * sixth, TARGET_RATE, redeemers)
    common = {
        "terminals": f"{PROCESSES * THREADS} ({PROCESSES} processes × {THREADS} threads; "
        f"over HTTP: {PROCESSES} API processes, 1 load generator process with "
        f"{PROCESSES * THREADS} keep-alive connections)",
        "operation": "calculate (reads) + confirm (a transaction); every 4th spends 10 points "
        f"with a fresh redemption code from its own app device ({devices} per customer)",
        "load average (1/5/15 min) before / after": f"{load_before} → {_load()}",
    }
    rows = []
    flat, paced = "as fast as they go (throughput)", f"paced at {TARGET_RATE:.0f} op/s (latency)"
    for case, mine, theirs, measured in (
        (f"service layer, {flat}", ours, bare, TERMINALS),
        (f"service layer, {paced}", ours_paced, bare_paced, TERMINALS),
        (f"HTTP, {flat}", http, bare, GENERATOR),
        (f"HTTP, {paced}", http_paced, bare_paced, GENERATOR),
    ):
        extra = {
            **common,
            "ours p50 / p95 / p99": mine.latency(),
            "bare p50 / p95 / p99": theirs.latency(),
            "ours operations/s": f"{mine.rate:,.0f}",
            "bare operations/s": f"{theirs.rate:,.0f}",
            f"ours CPU per operation: the machine's / {measured}": mine.cpu_per_operation(),
            f"bare CPU per operation: the machine's / {TERMINALS}": theirs.cpu_per_operation(),
            "ours operations done / errors / warm-up errors": (
                f"{len(mine.latencies):,} / {mine.errors:,} / {mine.warmup_errors:,}"
            ),
            "bare operations done / errors / warm-up errors": (
                f"{len(theirs.latencies):,} / {theirs.errors:,} / {theirs.warmup_errors:,}"
            ),
        }
        if mine.sample_errors or theirs.sample_errors:
            extra["first errors"] = "; ".join((mine.sample_errors + theirs.sample_errors)[:3])
        rows.append(
            BenchResult(
                benchmark=NAME,
                case=f"{case}: {operations:,} operations, {customers:,} customers",
                ours_seconds=mine.seconds,
                baseline=BASELINE,
                baseline_seconds=theirs.seconds,
                items=operations,
                unit="op",
                extra=extra,
            )
        )
    for row, fast in zip(rows[::2], (ours, http), strict=True):
        throughput_met = fast.rate >= TARGET_RATE and not fast.errors
        row.target = f"≥ {TARGET_RATE:.0f} op/s: {'met' if throughput_met else 'NOT met'}"
    for row, paced in zip(rows[1::2], (ours_paced, http_paced), strict=True):
        latency_met = (
            paced.percentile(0.95) < 0.05 and paced.rate >= TARGET_RATE * 0.98 and not paced.errors
        )
        row.target = f"p95 < 50 ms at {TARGET_RATE:.0f} op/s: {'met' if latency_met else 'NOT met'}"
    return rows
