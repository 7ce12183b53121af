"""Messaging's use cases, one module each; this package is what other features call."""

from __future__ import annotations

from tactful.messaging.service.audience import RELEASE_JOB, RELEASE_SIZE, send_audience
from tactful.messaging.service.calltasks import complete_call_task, list_call_tasks, task_view
from tactful.messaging.service.cancelling import cancel_deliveries
from tactful.messaging.service.cascades import due_cascades, fall_through
from tactful.messaging.service.deliveries import (
    DISPATCH_JOB,
    advance,
    queue_batches,
    send,
    test_send,
)
from tactful.messaging.service.dispatch import (
    RunStats,
    dispatch,
    queue_due,
    recover_stuck,
    release,
)
from tactful.messaging.service.providers import (
    create_provider,
    create_sender,
    list_providers,
    list_senders,
    masked,
)
from tactful.messaging.service.queries import (
    delivery_history,
    get_delivery,
    list_deliveries,
    sent_by_channel,
)
from tactful.messaging.service.templates import (
    get_template,
    list_templates,
    preview,
    preview_draft,
    save_template,
    validate,
)
from tactful.messaging.service.timeline import timeline_messages
from tactful.messaging.service.tracking import (
    preferences,
    record_click,
    record_open,
    save_preferences,
    unsubscribe,
    unsubscribe_target,
    unsubscribe_view,
)
from tactful.messaging.service.webhooks import handle_callback

__all__ = [
    "DISPATCH_JOB",
    "RELEASE_JOB",
    "RELEASE_SIZE",
    "RunStats",
    "advance",
    "cancel_deliveries",
    "complete_call_task",
    "create_provider",
    "create_sender",
    "delivery_history",
    "dispatch",
    "due_cascades",
    "fall_through",
    "get_delivery",
    "get_template",
    "handle_callback",
    "list_call_tasks",
    "list_deliveries",
    "list_providers",
    "list_senders",
    "list_templates",
    "masked",
    "preferences",
    "preview",
    "preview_draft",
    "queue_batches",
    "queue_due",
    "record_click",
    "record_open",
    "recover_stuck",
    "release",
    "save_preferences",
    "save_template",
    "send",
    "send_audience",
    "sent_by_channel",
    "task_view",
    "test_send",
    "timeline_messages",
    "unsubscribe",
    "unsubscribe_target",
    "unsubscribe_view",
    "validate",
]
