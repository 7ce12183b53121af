"""Journeys' use cases, one module each; this package is what the API, the CLI, the jobs and
the wiring call."""

from __future__ import annotations

from tactful.journeys.service.engine import (
    ADVANCE_JOB,
    Entrant,
    EntryOutcome,
    Run,
    advance,
    enter,
    queue_due,
)
from tactful.journeys.service.journeys import (
    check_graph,
    check_journey,
    create_journey,
    get_instance,
    get_journey,
    get_version,
    list_instances,
    list_journeys,
    pause,
    publish,
    resume,
    stop,
    update_journey,
    versions,
)
from tactful.journeys.service.scenarios import SCENARIOS, create_from_scenario
from tactful.journeys.service.stats import (
    JourneyStats,
    StepStats,
    journey_stats,
    timeline_instances,
)
from tactful.journeys.service.steps import WEBHOOK_JOB, WEBHOOK_PURPOSE
from tactful.journeys.service.triggers import (
    ApiEntry,
    TriggerOutcome,
    date_journeys,
    enter_from_api,
    on_events,
    on_segment,
    on_tier_change,
    scan_dates,
)
from tactful.journeys.service.validation import Problem
from tactful.journeys.service.webhooks import call_webhook

__all__ = [
    "ADVANCE_JOB",
    "SCENARIOS",
    "WEBHOOK_JOB",
    "WEBHOOK_PURPOSE",
    "ApiEntry",
    "Entrant",
    "EntryOutcome",
    "JourneyStats",
    "Problem",
    "Run",
    "StepStats",
    "TriggerOutcome",
    "advance",
    "call_webhook",
    "check_graph",
    "check_journey",
    "create_from_scenario",
    "create_journey",
    "date_journeys",
    "enter",
    "enter_from_api",
    "get_instance",
    "get_journey",
    "get_version",
    "journey_stats",
    "list_instances",
    "list_journeys",
    "on_events",
    "on_segment",
    "on_tier_change",
    "pause",
    "publish",
    "queue_due",
    "resume",
    "scan_dates",
    "stop",
    "timeline_instances",
    "update_journey",
    "versions",
]
