"""Cancelling a sender's messages: what has not gone out never does, what went out stays,
the ledger frees the cancelled ones, and other senders are untouched."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.messaging.conftest import (
    AT,
    Brand,
    MakeCustomer,
    SmtpSink,
    deliveries,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
from tactful.policy.models import ContactDecision

# the module (the package exports a function of the same name)
dispatching = importlib.import_module("tactful.messaging.service.dispatch")


def test_cancel_stops_unsent_deliveries_only(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, _port = smtp
    with runtime.db.scope() as session:
        sent, queued, planned, other = (make_customer(session=session) for _ in range(4))
    later = AT + timedelta(hours=2)
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            service.send(session, [request(brand, sent, source="campaign:9")])
        run_jobs(worker)
        assert len(sink.messages) == 1
        with runtime.db.scope() as session:
            service.send(
                session,
                [
                    request(brand, queued, source="campaign:9", message_class="transactional"),
                    request(
                        brand,
                        planned,
                        source="campaign:9",
                        message_class="transactional",
                        not_before=later,
                    ),
                    request(
                        brand,
                        other,
                        source="campaign:10",
                        message_class="transactional",
                        not_before=later,
                    ),
                ],
            )
        before = {d.customer_id: d.status for d in deliveries(runtime)}
        assert before == {sent: "sent", queued: "queued", planned: "planned", other: "planned"}
        with runtime.db.scope() as session:
            assert (
                service.cancel_deliveries(
                    session, workspace_id=brand.tenant.workspace_id, source="campaign:9"
                )
                == 2
            )
    rows = {d.customer_id: d for d in deliveries(runtime)}
    assert {c: d.status for c, d in rows.items()} == {
        sent: "sent",
        queued: "cancelled",
        planned: "cancelled",
        other: "planned",
    }
    assert rows[queued].reason == rows[planned].reason == "cancelled"
    with runtime.db.scope(readonly=True) as session:
        ledger = {
            d.customer_id: d.status
            for d in session.scalars(select(ContactDecision).order_by(ContactDecision.id))
        }
    assert ledger == {sent: "sent", queued: "cancelled", planned: "cancelled", other: "scheduled"}

    # the queued one's dispatch job and the planned one's time come: nothing more of it goes
    with clock.frozen(later):
        with runtime.db.scope() as session:
            service.queue_due(session)
        run_jobs(worker)
    after = {d.customer_id: d for d in deliveries(runtime)}
    assert {c: d.status for c, d in after.items()} == {
        sent: "sent",
        queued: "cancelled",
        planned: "cancelled",
        other: "sent",
    }
    assert sorted(rcpt[0] for _f, rcpt, _r in sink.messages) == sorted(
        [after[sent].address, after[other].address]
    )


def test_a_delivery_cancelled_while_its_group_renders_is_not_sent(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dispatcher reads and renders a group before its write transaction; a delivery
    whose status changed meanwhile is left as it now is, the rest of the group goes out."""
    sink, _port = smtp
    with runtime.db.scope() as session:
        cancelled, kept = make_customer(session=session), make_customer(session=session)
    render_group = dispatching._render_group

    def cancel_meanwhile(*args: Any) -> None:
        render_group(*args)
        with runtime.db.scope() as other:
            service.cancel_deliveries(
                other, workspace_id=brand.tenant.workspace_id, source="campaign:9"
            )

    monkeypatch.setattr(dispatching, "_render_group", cancel_meanwhile)
    with clock.frozen(AT):
        with runtime.db.scope() as session:
            service.send(
                session,
                [
                    request(brand, cancelled, source="campaign:9"),
                    request(brand, kept, source="campaign:10"),
                ],
            )
        run_jobs(worker)
    rows = {d.customer_id: d for d in deliveries(runtime)}
    assert {c: (d.status, d.attempts, d.sending_at) for c, d in rows.items()} == {
        cancelled: ("cancelled", 0, None),
        kept: ("sent", 1, rows[kept].sending_at),
    }
    assert rows[kept].sending_at is not None
    assert [rcpt for _f, rcpt, _r in sink.messages] == [[rows[kept].address]]
    with runtime.db.scope(readonly=True) as session:
        ledger = {d.customer_id: d.status for d in session.scalars(select(ContactDecision))}
    assert ledger == {cancelled: "cancelled", kept: "sent"}
