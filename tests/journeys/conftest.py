"""Fixtures for journeys: the messaging brand (a real SMTP server, templates, providers) and
consenting customers, helpers to create and publish journeys, ingest events over HTTP and run
the jobs a journey needs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.jobs import queue
from tactful.core.jobs.context import MonitorContext
from tactful.core.jobs.registry import MONITORS
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.journeys import service
from tactful.journeys.models import Journey, JourneyInstance, JourneyStepLog
from tactful.messaging.models import Delivery
from tests.conftest import Tenant
from tests.messaging.conftest import (
    AT,
    Brand,
    HttpPeer,
    MakeCustomer,
    SmtpSink,
    add_provider,
    brand,
    email_setup,
    http_peer,
    make_customer,
    smtp,
)

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

# the jobs a journey needs; the warehouse loader and metric refreshes (other features'
# reactions to the same events) are completed unrun to keep the tests fast
WANTED = ("journeys.", "messaging.", "events.resolve")


def run_jobs(worker: Worker, *, wanted: Iterable[str] = WANTED, rounds: int = 50) -> list[str]:
    """Run due jobs of the wanted kinds until none is left; returns their names in order."""
    prefixes = tuple(wanted)
    ran: list[str] = []
    for _ in range(rounds):
        claimed = worker.claim(100)
        if not claimed:
            break
        for job in claimed:
            if job.name.startswith(prefixes):
                status = worker.run_job(job)
                assert status in ("done", "queued"), f"{job.name} ended {status}"
                ran.append(job.name)
            else:
                with worker.runtime.db.scope() as session:
                    queue.complete(session, job, worker=worker.worker_id)
    return ran


def tick(worker: Worker) -> list[str]:
    """The due-wait monitor once, then the jobs it and anything else queued."""
    with worker.runtime.db.scope() as session:
        MONITORS["journeys.due"].fn(MonitorContext(worker.runtime, session, clock.now()))
    return run_jobs(worker)


def later(worker: Worker, delta: timedelta) -> list[str]:
    """Move the (frozen) clock on and let due waits run."""
    clock.advance(delta)
    return tick(worker)


def email_journey(brand: Brand, steps: list[dict[str, Any]], **graph: Any) -> dict[str, Any]:
    """A graph with an API trigger unless one is given."""
    return {"trigger": graph.pop("trigger", {"type": "api"}), "steps": steps, **graph}


def send(key: str, brand: Brand, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "type": "send",
        "template_id": brand.template_id,
        "channels": extra.pop("channels", ["email"]),
        "next": next_key,
        **extra,
    }


def publish(runtime: Runtime, brand: Brand, graph: dict[str, Any], name: str = "J") -> int:
    """Create and publish a journey; returns its id."""
    tenant = brand.tenant
    with runtime.db.scope() as session:
        journey = service.create_journey(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=tenant.brand_id,
            name=name,
            graph=graph,
            actor="test",
        )
        service.publish(
            session, workspace_id=tenant.workspace_id, journey_id=journey.id, actor="test"
        )
        return journey.id


def enter(
    client: TestClient, tenant: Tenant, journey_id: int, *customers: int, **entry: Any
) -> dict[str, Any]:
    response = client.post(
        f"/v1/journeys/{journey_id}/entries",
        headers=tenant.headers,
        json={"entries": [{"customer_id": c, **entry} for c in customers]},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def track(client: TestClient, tenant: Tenant, email: str, event: str, **properties: Any) -> None:
    """A Segment track call for a customer made by ``make_customer`` (user id ``p<n>``,
    e-mail ``p<n>@example.com``)."""
    response = client.post(
        "/v1/track",
        headers=tenant.headers,
        json={
            "userId": email.split("@", maxsplit=1)[0],
            "event": event,
            "properties": properties,
            "context": {"traits": {"email": email}},
            "timestamp": clock.now().isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text


def buy(client: TestClient, tenant: Tenant, email: str, receipt_id: str, price: int) -> None:
    """A sale receipt of one line for the customer with this e-mail."""
    response = client.post(
        "/v1/purchases",
        headers=tenant.headers,
        json={
            "receipt_id": receipt_id,
            "customer": {"email": email},
            "store_id": "S1",
            "occurred_at": clock.now().isoformat(),
            "lines": [{"product_id": "P1", "quantity": 1, "unit_price": price}],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text


def email_of(runtime: Runtime, customer_id: int) -> str:
    with runtime.db.scope(readonly=True) as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        assert customer.email is not None
        return customer.email


def instances(runtime: Runtime, journey_id: int | None = None) -> list[JourneyInstance]:
    with runtime.db.scope(readonly=True) as session:
        stmt = select(JourneyInstance).order_by(JourneyInstance.id)
        if journey_id is not None:
            stmt = stmt.where(JourneyInstance.journey_id == journey_id)
        return list(session.scalars(stmt))


def history(runtime: Runtime, instance_id: int) -> list[tuple[str, str]]:
    """(step, outcome) of every step an instance completed, in order."""
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(
            select(JourneyStepLog)
            .where(JourneyStepLog.instance_id == instance_id)
            .order_by(JourneyStepLog.visit)
        )
        return [(r.step_key, r.outcome) for r in rows]


def deliveries(runtime: Runtime) -> list[Delivery]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def count(runtime: Runtime, model: Any) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def journey_row(runtime: Runtime, journey_id: int) -> Journey:
    with runtime.db.scope(readonly=True) as session:
        found = session.get(Journey, journey_id)
        assert found is not None
        return found


@pytest.fixture
def frozen() -> Any:
    with clock.frozen(AT):
        yield
