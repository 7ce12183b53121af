"""Call tasks: the task list a person works through, with the customer's context, and the
outcome (reached, no answer, refused) recorded as an event."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.messaging import store
from tactful.messaging.models import CALL_OUTCOMES, DELIVERED, FAILED, NO_ANSWER, CallTask
from tactful.messaging.service.deliveries import advance
from tactful.messaging.service.templates import customer_context


def list_call_tasks(
    session: Session, *, workspace_id: int, status: str | None = "open", limit: int = 100
) -> list[CallTask]:
    """Call tasks, the earliest due first."""
    return store.call_tasks(session, workspace_id, status=status, limit=min(max(limit, 1), 1000))


def task_view(session: Session, task: CallTask) -> dict[str, Any]:
    """A task with the customer's current profile beside the message context."""
    customer = customers.get_customer(
        session, workspace_id=task.workspace_id, customer_id=task.customer_id
    )
    return {
        **{
            c: getattr(task, c)
            for c in (
                "id",
                "brand_id",
                "customer_id",
                "delivery_id",
                "phone",
                "script",
                "status",
                "outcome",
                "note",
                "due_at",
                "completed_at",
                "completed_by",
            )
        },
        "context": {"customer": customer_context(customer), **task.context},
    }


def complete_call_task(
    session: Session,
    *,
    workspace_id: int,
    task_id: int,
    outcome: str,
    note: str | None,
    actor: str,
) -> CallTask:
    """Record a call's outcome; the customer gets a "Call Task Completed" event."""
    if outcome not in CALL_OUTCOMES:
        raise ValidationFailed(f"outcome must be one of {list(CALL_OUTCOMES)}", field="outcome")
    task = store.call_task(session, workspace_id, task_id)
    if task is None:
        raise NotFound(f"call task {task_id} does not exist", field="task_id")
    if task.status != "open":
        raise Conflict(f"call task {task_id} is already {task.status}")
    now = clock.now()
    task.status, task.outcome, task.note = "done", outcome, note
    task.completed_at, task.completed_by = now, actor
    if task.delivery_id is not None:
        delivery = store.delivery(session, task.delivery_id)
        if delivery is not None:
            status = FAILED if outcome == NO_ANSWER else DELIVERED
            advance(session, delivery, status, at=now, details={"outcome": outcome})
    events.record_customer_events(
        session,
        workspace_id=workspace_id,
        events=[
            events.CustomerEvent(
                customer_id=task.customer_id,
                name="Call Task Completed",
                message_id=f"call-task:{task.id}:done",
                occurred_at=now,
                properties={
                    "outcome": outcome,
                    "task_id": task.id,
                    "delivery_id": task.delivery_id,
                    "brand_id": task.brand_id,
                    "note": note,
                },
                source="messaging",
                brand_id=task.brand_id,
            )
        ],
    )
    session.flush()
    return task
