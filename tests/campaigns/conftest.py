"""Fixtures for campaigns: the messaging brand (a real SMTP server, templates), consenting
customers in chosen time zones, segments with materialised members, a second admin key
(four eyes), and a runner for the jobs campaigns and messaging write."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import func, insert, select, text

from tactful.campaigns import models
from tactful.core.dialect import copy_rows
from tactful.core.jobs import queue
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer, Identity
from tactful.events.warehouse import RECEIPTS, SCHEMAS, ensure_tables
from tactful.messaging import service as messaging
from tactful.messaging.models import Delivery
from tactful.policy.models import ContactDecision
from tactful.segments import service as segments
from tactful.segments.models import SegmentMembership
from tactful.tenancy import service as tenancy
from tests.conftest import Tenant
from tests.messaging.conftest import (
    Brand,
    HttpPeer,
    SmtpSink,
    add_provider,
    brand,
    email_setup,
    http_peer,
    smtp,
)
from tests.policy.conftest import AT, MakeCustomer, make_customer

__all__ = [
    "AT",
    "Brand",
    "HttpPeer",
    "MakeCustomer",
    "SmtpSink",
    "add_provider",
    "brand",
    "email_setup",
    "http_peer",
    "make_customer",
    "smtp",
]

EVERYONE = {"any": [{"type": "attribute", "attribute": "gender", "operator": "is_set"}]}
MakeSegment = Callable[..., int]
# jobs these tests run; other features' reactions (loader, metrics) are marked done unrun
WANTED_JOBS = ("campaigns.", "messaging.", "events.record_consent_change")


@pytest.fixture
def make_segment(runtime: Runtime, tenant: Tenant) -> MakeSegment:
    """A segment whose materialised members are ``customer_ids``."""
    names = itertools.count(1)

    def make(customer_ids: Sequence[int], name: str | None = None) -> int:
        with runtime.db.scope() as session:
            segment = segments.create_segment(
                session,
                workspace_id=tenant.workspace_id,
                name=name or f"segment {next(names)}",
                definition=EVERYONE,
                actor="test",
            )
            add_members(session, segment.id, customer_ids)
            return segment.id

    return make


def add_members(session: Any, segment_id: int, customer_ids: Sequence[int]) -> None:
    if customer_ids:
        session.execute(
            insert(SegmentMembership),
            [{"segment_id": segment_id, "customer_id": c, "entered_at": AT} for c in customer_ids],
        )


@pytest.fixture
def second_key(runtime: Runtime, tenant: Tenant) -> dict[str, str]:
    """Headers of another admin: the four-eyes approver."""
    with runtime.db.scope() as session:
        _key, plain = tenancy.issue_api_key(
            session, workspace_id=tenant.workspace_id, name="approver", scopes=["admin"]
        )
    return {"Authorization": f"Bearer {plain}"}


def sms_setup(runtime: Runtime, brand: Brand, peer: HttpPeer) -> int:
    """An SMS provider (a real local HTTP server) and sender for the brand."""
    peer.default = (200, {"id": "ok"})
    return add_provider(
        runtime,
        brand,
        "sms_generic",
        "sms",
        {"endpoint": f"{peer.url}/send", "idempotency_header": "Idempotency-Key"},
    )


def spec(brand: Brand, targets: Sequence[int], **kw: Any) -> dict[str, Any]:
    """The JSON body of a campaign: the brand's cart template by e-mail."""
    body: dict[str, Any] = {
        "brand_id": brand.tenant.brand_id,
        "name": "Spring sale",
        "template_id": brand.template_id,
        "topic": "promotions",
        "steps": [{"channel": "email"}],
        "target_segment_ids": list(targets),
        "requires_approval": False,
    }
    body.update(kw)
    return body


def run_jobs(worker: Worker, *, rounds: int = 200) -> int:
    """Run due campaign and messaging jobs until none is left."""
    ran = 0
    for _ in range(rounds):
        claimed = worker.claim(100)
        if not claimed:
            break
        for job in claimed:
            if job.name.startswith(WANTED_JOBS):
                worker.run_job(job)
                ran += 1
            else:
                with worker.runtime.db.scope() as session:
                    queue.complete(session, job, worker=worker.worker_id)
    return ran


def tick(worker: Worker) -> int:
    """What the monitors and workers do at the current (frozen) time."""
    from tactful.campaigns import service

    with worker.runtime.db.scope() as session:
        service.queue_due_runs(session)
        service.queue_due_checkpoints(session)
        messaging.queue_due(session)
    return run_jobs(worker)


def count(runtime: Runtime, model: Any, *where: Any) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def deliveries(runtime: Runtime, campaign_id: int) -> list[Delivery]:
    with runtime.db.scope(readonly=True) as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)
            )
        )


def decisions(runtime: Runtime, source: str) -> list[ContactDecision]:
    from tactful.policy.models import DecisionBatch

    with runtime.db.scope(readonly=True) as session:
        return list(
            session.scalars(
                select(ContactDecision)
                .join(DecisionBatch, DecisionBatch.id == ContactDecision.batch_id)
                .where(DecisionBatch.source == source)
                .order_by(ContactDecision.id)
            )
        )


def recipients(runtime: Runtime, campaign_id: int) -> list[models.CampaignRecipient]:
    with runtime.db.scope(readonly=True) as session:
        return list(
            session.scalars(
                select(models.CampaignRecipient)
                .where(models.CampaignRecipient.campaign_id == campaign_id)
                .order_by(models.CampaignRecipient.run_id, models.CampaignRecipient.customer_id)
            )
        )


def bulk_customers(
    session: Any, workspace_id: int, count: int, *, no_phone_every: int = 0
) -> list[int]:
    """``count`` customers (fresh ids) with a phone, except every ``no_phone_every``-th,
    written in bulk; enough for service messages by SMS."""
    stamp = AT if session.get_bind().dialect.name == "postgresql" else AT.replace(tzinfo=None)
    first = int(session.scalar(select(func.coalesce(func.max(Customer.id), 0)))) + 1
    ids = list(range(first, first + count))
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
        [(i, workspace_id, False, "Europe/Moscow", False, "{}", "{}", stamp, stamp) for i in ids],
    )
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
        [
            (workspace_id, i, "phone", "", f"+7950{i:07d}", True, "ok", stamp)
            for n, i in enumerate(ids)
            if not no_phone_every or n % no_phone_every
        ],
    )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT setval('customers_id_seq', (SELECT max(id) FROM customers))"))
    return ids


def add_receipts(
    runtime: Runtime, workspace_id: int, purchases: Sequence[tuple[int, datetime, int]]
) -> None:
    """Sale receipts (customer, time, amount in minor units) straight into the warehouse."""
    warehouse = runtime.warehouse
    ensure_tables(warehouse)
    start = int(warehouse.con.execute(warehouse.table(RECEIPTS).count()))
    rows = [
        {
            "seq": start + n,
            "workspace_id": workspace_id,
            "receipt_id": f"r{start + n}",
            "customer_id": customer_id,
            "store_id": "s1",
            "channel": "offline",
            "kind": "sale",
            "occurred_at": at,
            "lines": 1,
            "quantity": 1.0,
            "gross": amount,
            "discount": 0,
            "amount": amount,
            "signed_amount": amount,
            "bonus_accrued": 0,
            "bonus_spent": 0,
            "currency": "RUB",
            "source": "test",
            "historical": False,
        }
        for n, (customer_id, at, amount) in enumerate(purchases, start=1)
    ]
    warehouse.insert_arrow(
        RECEIPTS, pa.Table.from_pylist(rows, schema=SCHEMAS[RECEIPTS].to_pyarrow())
    )
