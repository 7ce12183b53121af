"""Planning a campaign through the whole contact policy, against a per-customer loop.

A data folder is filled with customers spread over nine time zones, their contacts and
consents, and a realistic history (about 1.5 marketing messages per customer in the last
week, some still scheduled), so caps, spacing and quiet hours all bite. The campaign is a
marketing message with a push -> e-mail -> SMS cascade. "Ours" is ``decide_audience`` (the
vectorised gate, including writing every decision to the ledger) and the commit that makes
the decisions durable. The baseline is the intent-by-intent gate — a straightforward
per-customer Python loop over the same rules and data — run on a sample and scaled linearly
to the audience (running it on a million takes too long to be useful); both are measured in
the same process on the same database.
"""

from __future__ import annotations

import collections
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tactful import wiring
from tactful.bench import BenchResult, serving_heap, stopwatch
from tactful.config import DatabaseSettings, Settings
from tactful.core.dialect import copy_rows
from tactful.core.migrate import upgrade
from tactful.core.runtime import build_runtime
from tactful.customers.models import Consent, Customer, Identity
from tactful.policy import gate
from tactful.policy import service as policy
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.schemas import ChannelStep, Intent
from tactful.tenancy import service as tenancy
from tactful.testing.postgres import temp_postgres

NAME = "policy"
TITLE = "a campaign through the whole contact policy vs a per-customer Python loop"
BASELINE = "intent-by-intent gate (per-customer loop), scaled from a sample"
SIZES = {"small": (50_000, 5_000), "full": (1_000_000, 20_000)}
NOW = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # night in European Russia, day in Asia
ZONES = [
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Vladivostok",
]


def _populate(session: Session, workspace_id: int, brand_id: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    sqlite = session.get_bind().dialect.name == "sqlite"

    def _text(moment: datetime) -> object:
        # SQLite keeps SQLAlchemy's text form; PostgreSQL takes the aware datetime
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else moment

    ids = np.arange(1, n + 1, dtype=np.int64)
    stamp = _text(NOW - timedelta(days=400))
    zones = rng.choice(len(ZONES), n, p=[0.03, 0.45, 0.08, 0.12, 0.05, 0.1, 0.07, 0.05, 0.05])
    copy_rows(
        session,
        Customer.__table__,  # type: ignore[arg-type]
        (
            "id",
            "workspace_id",
            "anonymous",
            "timezone",
            "is_test",
            "attributes",
            "attribute_sources",
            "created_at",
            "updated_at",
        ),
        [
            (int(i), workspace_id, 0, ZONES[z], 0, "{}", "{}", stamp, stamp)
            for i, z in zip(ids, zones, strict=True)
        ],
    )
    identities = []
    for kind, share, fmt in (
        ("email", 0.9, "c{}@example.com"),
        ("phone", 0.85, "+7900{:07d}"),
        ("push_token", 0.3, "fcm-{}"),
    ):
        for i in ids[rng.random(n) < share]:
            identities.append((workspace_id, int(i), kind, "", fmt.format(int(i)), 1, "ok", stamp))
    copy_rows(
        session,
        Identity.__table__,  # type: ignore[arg-type]
        (
            "workspace_id",
            "customer_id",
            "kind",
            "namespace",
            "value",
            "valid",
            "status",
            "created_at",
        ),
        identities,
    )
    consents = []
    for scope, kind, channel, share in (
        ("ws", "personal_data", "*", 0.95),
        (f"b{brand_id}", "advertising", "email", 0.8),
        (f"b{brand_id}", "advertising", "sms", 0.5),
        (f"b{brand_id}", "advertising", "push", 0.3),
    ):
        for i in ids[rng.random(n) < share]:
            consents.append(
                (workspace_id, int(i), scope, kind, channel, "", "granted", "import", "{}", stamp)
            )
    copy_rows(
        session,
        Consent.__table__,  # type: ignore[arg-type]
        (
            "workspace_id",
            "customer_id",
            "brand_scope",
            "kind",
            "channel",
            "topic",
            "status",
            "source",
            "evidence",
            "changed_at",
        ),
        consents,
    )
    batch = DecisionBatch(
        workspace_id=workspace_id,
        brand_id=brand_id,
        source="campaign:old",
        message_class="marketing",
        topic=None,
        tags=[],
        steps=[],
        exclusive_group=None,
        is_test=False,
        reference={},
        rule_versions={},
        intents=0,
        decided_at=NOW - timedelta(days=7),
    )
    session.add(batch)
    session.flush()
    per_customer = rng.poisson(1.5, n)
    owners = np.repeat(ids, per_customer)
    offsets = rng.integers(-7 * 24 * 3600, 12 * 3600, len(owners))
    history = []
    for owner, offset in zip(owners.tolist(), offsets.tolist(), strict=True):
        at = NOW + timedelta(seconds=offset)
        history.append(
            (
                batch.id,
                workspace_id,
                owner,
                "marketing",
                "sent" if offset < 0 else "scheduled",
                "ok",
                "email" if owner % 3 else "sms",
                0,
                10,
                _text(at),
                _text(at),
                _text(NOW),
                0,
                0.0,
            )
        )
    copy_rows(
        session,
        ContactDecision.__table__,  # type: ignore[arg-type]
        (
            "batch_id",
            "workspace_id",
            "customer_id",
            "message_class",
            "status",
            "reason",
            "channel",
            "step",
            "cost",
            "send_at",
            "expires_at",
            "updated_at",
            "priority",
            "expected_value",
        ),
        history,
    )
    return ids


def _vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE the freshly loaded PostgreSQL tables, as autovacuum would have done
    long before a real ledger's week of history is read. Otherwise the plan's first scan
    of the 1.5M history rows also sets their hint bits and writes the pages back (the
    history read took 4.5-5.0 s in scratch runs without it, 1.6-2.0 s with it)."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def run(scale: str) -> list[BenchResult]:
    size, sample = SIZES[scale]
    wiring.install()
    results = [_measure(size, sample, None)]
    with temp_postgres(fast=False) as server:
        results.append(_measure(size, sample, server.create_database("bench_policy")))
    return results


def _measure(size: int, sample: int, database_url: str | None) -> BenchResult:
    label = "PostgreSQL" if database_url else "SQLite (embedded)"
    with tempfile.TemporaryDirectory(prefix="tactful-bench-policy-") as folder:
        settings = Settings(data_dir=Path(folder), database=DatabaseSettings(url=database_url))
        runtime = build_runtime(settings)
        try:
            upgrade(runtime.db.engine)
            with runtime.db.scope() as session:
                init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
                workspace_id, brand_id = init.workspace.id, init.brand.id
                ids = _populate(session, workspace_id, brand_id, size)
            if database_url:
                _vacuum(runtime.db.engine)
            message = Intent(
                workspace_id=workspace_id,
                brand_id=brand_id,
                customer_id=0,
                message_class="marketing",
                source="campaign:spring",
                steps=(
                    ChannelStep("push", timedelta(hours=2)),
                    ChannelStep("email", timedelta(hours=24)),
                    ChannelStep("sms"),
                ),
                expires_at=NOW + timedelta(days=3),
            )
            rng = np.random.default_rng(11)
            chosen = rng.choice(ids, sample, replace=False)
            with runtime.db.scope() as session:
                nested = session.begin_nested()
                with stopwatch() as baseline_time:
                    loop = gate.decide(
                        session,
                        [Intent(**{**message.__dict__, "customer_id": int(c)}) for c in chosen],
                        now=NOW,
                    )
                nested.rollback()
            # the commit is part of planning: the decisions are durable only once it is done;
            # the collector set as in the worker processes that plan campaigns
            with serving_heap(), stopwatch() as ours_time, runtime.db.scope() as session:
                outcome = policy.decide_audience(session, message, ids, now=NOW)
            reasons = collections.Counter(outcome.reason.tolist())
            scheduled = int((outcome.status == "scheduled").sum())
            loop_reasons = collections.Counter(d.reason for d in loop)
            return BenchResult(
                benchmark=NAME,
                case=f"{size:,} recipients, {label}",
                ours_seconds=ours_time(),
                baseline=BASELINE,
                baseline_seconds=baseline_time() * size / sample,
                items=size,
                unit="recipients",
                target="< 10 s",
                extra={
                    "scheduled": scheduled,
                    "suppressed": size - scheduled,
                    "reasons (ours)": dict(reasons.most_common()),
                    "baseline sample": f"{sample:,} customers in "
                    f"{baseline_time():.2f} s, reasons "
                    f"{dict(loop_reasons.most_common(4))}",
                    "history rows": int(size * 1.5),
                },
            )
        finally:
            runtime.close()
