"""One readable table: which domain event starts which job.

Features publish domain events (``core.domain_events.publish``); the jobs listed here react.
Importing this module also imports every feature's models and job handlers, so the worker,
the app and the migrations see all of them.
"""

from __future__ import annotations

import importlib

from tactful.core import domain_events
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.journeys import service as journeys
from tactful.loyalty.service import events as loyalty_events
from tactful.messaging import service as messaging
from tactful.metrics import service as metrics
from tactful.segments import service as segments

FEATURES = (
    "tenancy",
    "customers",
    "events",
    "policy",
    "loyalty",
    "messaging",
    "metrics",
    "segments",
    "campaigns",
    "journeys",
)

# (domain event, job that reacts)
ROUTES: tuple[tuple[str, str], ...] = (
    ("customers.merged", "events.apply_merge"),
    ("customers.unmerged", "events.apply_merge"),
    ("customers.consent_changed", "events.record_consent_change"),
    ("customers.merged", "loyalty.merge_accounts"),
    ("customers.unmerged", "loyalty.unmerge_accounts"),
    ("events.loaded", "metrics.refresh"),
    ("customers.consent_changed", "metrics.sync_customer"),
    ("customers.contact_status_changed", "metrics.sync_customer"),
    ("customers.merged", "metrics.apply_merge"),
    ("customers.unmerged", "metrics.apply_merge"),
    ("metrics.refreshed", "segments.refresh_continuous"),
    ("events.resolved", "journeys.on_events"),
    ("segments.membership_changed", "journeys.on_segment"),
    ("loyalty.tier_changed", "journeys.on_tier_change"),
)

# Features above customers add their entries to the customer timeline.
TIMELINE_SOURCES = (
    ("events", events.timeline_events),
    ("loyalty", loyalty_events.timeline_items),
    ("messaging", messaging.timeline_messages),
    ("journeys", journeys.timeline_instances),
)


def import_models() -> None:
    """Import every feature's ORM models (for migrations and metadata)."""
    importlib.import_module("tactful.core.models")
    importlib.import_module("tactful.core.jobs.models")
    for feature in FEATURES:
        _import_optional(f"tactful.{feature}.models")


def import_jobs() -> None:
    """Import every feature's job handlers and monitors (registers them)."""
    importlib.import_module("tactful.ops.jobs")
    for feature in FEATURES:
        _import_optional(f"tactful.{feature}.jobs")


def _import_optional(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise


def install() -> None:
    """Register models, jobs and the event → job routes (idempotent)."""
    import_models()
    import_jobs()
    for event, job_name in ROUTES:
        domain_events.route(event, job_name)
    for name, source in TIMELINE_SOURCES:
        customers.register_timeline_source(name, source)
    # segments read profiles and metrics through the metrics service (same layer)
    segments.use_metrics(metrics)
