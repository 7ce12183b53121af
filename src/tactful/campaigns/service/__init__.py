"""Campaign use cases, one module each; this package is what the API, CLI and jobs call."""

from __future__ import annotations

from tactful.campaigns.service.checkpoints import (
    CHECK_JOB,
    check_checkpoint,
    queue_due_checkpoints,
)
from tactful.campaigns.service.definition import (
    create_campaign,
    get_campaign,
    list_campaigns,
    next_run_at,
    update_campaign,
)
from tactful.campaigns.service.lifecycle import (
    Estimate,
    approve,
    cancel,
    estimate,
    launch,
    reject,
    test_send,
)
from tactful.campaigns.service.sending import (
    START_JOB,
    WAVE_JOB,
    queue_due_runs,
    send_wave,
    start_run,
)
from tactful.campaigns.service.stats import (
    list_checkpoints,
    list_recipients,
    list_runs,
    stats,
)

__all__ = [
    "CHECK_JOB",
    "START_JOB",
    "WAVE_JOB",
    "Estimate",
    "approve",
    "cancel",
    "check_checkpoint",
    "create_campaign",
    "estimate",
    "get_campaign",
    "launch",
    "list_campaigns",
    "list_checkpoints",
    "list_recipients",
    "list_runs",
    "next_run_at",
    "queue_due_checkpoints",
    "queue_due_runs",
    "reject",
    "send_wave",
    "start_run",
    "stats",
    "test_send",
    "update_campaign",
]
