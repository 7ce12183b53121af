"""The bulk path: one message to a whole audience (a campaign).

The policy decides the audience with its vectorised gate (one bulk insert into the ledger);
each scheduled decision gets one ``planned`` delivery, written with one bulk insert, and a
few keyed release jobs per send time hand them to dispatch when their time comes.
Suppressed decisions get no delivery row: the ledger keeps them with their reason (the
timeline and ``policy.why`` read them from there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.db import is_sqlite
from tactful.core.errors import ValidationFailed
from tactful.core.jobs.queue import enqueue_many
from tactful.messaging import store
from tactful.messaging.models import PLANNED
from tactful.messaging.schemas import AudienceOutcome, SendRequest
from tactful.messaging.service.deliveries import (
    check_requests,
    intent_of,
    source_ids,
    steps_of,
)
from tactful.messaging.service.templates import enrich_contexts
from tactful.policy import service as policy
from tactful.policy.schemas import SCHEDULED

RELEASE_JOB = "messaging.release"
# deliveries one release job hands to dispatch
RELEASE_SIZE = 20_000
# send times closer than this share release jobs (run when the latest of them is due)
RELEASE_SPREAD = 60

COLUMNS = (
    "id",
    "workspace_id",
    "brand_id",
    "customer_id",
    "decision_id",
    "template_id",
    "source",
    "campaign_id",
    "journey_id",
    "message_class",
    "topic",
    "channel",
    "provider_id",
    "sender_id",
    "status",
    "step",
    "is_test",
    "context",
    "cost",
    "send_at",
    "expires_at",
    "attempts",
    "steps",
    "wait_for",
    "created_at",
    "updated_at",
)


def send_audience(
    session: Session,
    *,
    request: SendRequest,
    customer_ids: Sequence[int] | np.ndarray,
    now: datetime | None = None,
) -> AudienceOutcome:
    """``send`` for one message to a whole audience (``request.customer_id`` is ignored):
    the policy decides every customer at once and each scheduled decision gets a planned
    delivery; nothing is sent before the transaction commits."""
    now = now or clock.now()
    check_requests(session, [request], where="request")
    senders = store.default_senders(session, [request.brand_id])
    for n, step in enumerate(request.steps):
        if (request.brand_id, step.channel) not in senders:
            raise ValidationFailed(
                f"brand {request.brand_id} has no {step.channel} sender",
                field=f"request.steps[{n}].channel",
            )
    ids = np.asarray(customer_ids, dtype=np.int64)
    if not len(ids):
        return AudienceOutcome(None, 0, 0, 0, {}, 0, 0)
    [context] = enrich_contexts(
        session, workspace_id=request.workspace_id, contexts=[request.context]
    )
    outcome = policy.decide_audience(session, intent_of(request, 0), ids, now=now)
    scheduled = np.flatnonzero(outcome.status == SCHEDULED)
    prices = store.provider_prices(session, [request.brand_id])
    cost = np.asarray(outcome.cost, dtype=np.int64).copy()
    steps = steps_of(request)
    per_step = []
    for n, step in enumerate(request.steps):
        sender, provider = senders[(request.brand_id, step.channel)]
        at_step = scheduled[outcome.step[scheduled] == n]
        price = prices.get((request.brand_id, step.channel, provider.name))
        if price is not None:
            cost[at_step] = price
        per_step.append((sender.id, provider.id, steps[n].get("wait_for")))
    delivery_ids = _write(session, request, context, steps, per_step, outcome, scheduled, cost, now)
    _enqueue_releases(session, delivery_ids, outcome.send_at[scheduled])
    reasons = Counter(outcome.reason.tolist())
    return AudienceOutcome(
        decision_batch_id=store.decision_batch(session, int(outcome.decision_ids[0])),
        scheduled=len(scheduled),
        suppressed=int(np.count_nonzero(outcome.status != SCHEDULED)),
        bundled=0,
        by_reason={str(k): int(v) for k, v in sorted(reasons.items())},
        deliveries=len(delivery_ids),
        estimated_cost=int(cost[scheduled].sum()),
    )


def _write(
    session: Session,
    request: SendRequest,
    context: dict[str, Any],
    steps: list[dict[str, Any]],
    per_step: list[tuple[int, int, str | None]],
    outcome: Any,
    scheduled: np.ndarray,
    cost: np.ndarray,
    now: datetime,
) -> np.ndarray:
    """One planned delivery per scheduled decision, with one bulk insert."""
    n = len(scheduled)
    ids = np.array(store.reserve_delivery_ids(session, n), dtype=np.int64)
    sqlite = is_sqlite(session)

    def moment(value: datetime | None) -> Any:
        if value is None:
            return None
        # SQLite keeps timestamps as text in SQLAlchemy's own format (ordered in SQL)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else value

    campaign_id, journey_id = source_ids(request.source, request.reference)
    stamp = moment(now)
    send_seconds, where = np.unique(outcome.send_at[scheduled], return_inverse=True)
    send_texts = np.array(
        [moment(datetime.fromtimestamp(int(s), UTC)) for s in send_seconds], dtype=object
    )
    step = outcome.step[scheduled]
    sender_of = np.array([s for s, _p, _w in per_step], dtype=np.int64)[step]
    provider_of = np.array([p for _s, p, _w in per_step], dtype=np.int64)[step]
    wait_of = np.array([w for _s, _p, w in per_step], dtype=object)[step]
    context_json = orjson.dumps(context).decode()
    steps_json = orjson.dumps(steps).decode()
    rows = list(
        zip(
            ids.tolist(),
            [request.workspace_id] * n,
            [request.brand_id] * n,
            outcome.customer_ids[scheduled].tolist(),
            outcome.decision_ids[scheduled].tolist(),
            [request.template_id] * n,
            [request.source[:200]] * n,
            [campaign_id] * n,
            [journey_id] * n,
            [request.message_class] * n,
            [request.topic] * n,
            outcome.channel[scheduled].tolist(),
            provider_of.tolist(),
            sender_of.tolist(),
            [PLANNED] * n,
            step.tolist(),
            [request.is_test] * n,
            [context_json] * n,
            cost[scheduled].tolist(),
            send_texts[where].tolist(),
            [moment(request.expires_at)] * n,
            [0] * n,
            [steps_json] * n,
            wait_of.tolist(),
            [stamp] * n,
            [stamp] * n,
            strict=True,
        )
    )
    store.copy_deliveries(session, COLUMNS, rows)
    return ids


def _enqueue_releases(session: Session, ids: np.ndarray, send_at: np.ndarray) -> int:
    """A few keyed release jobs per send time: deliveries due in the same
    ``RELEASE_SPREAD``-second slot share jobs of at most ``RELEASE_SIZE`` (an id range each),
    run when the slot's latest delivery is due."""
    if not len(ids):
        return 0
    slot_of = -(-send_at // RELEASE_SPREAD)
    order = np.argsort(slot_of, kind="stable")
    bounds = np.flatnonzero(np.diff(slot_of[order])) + 1
    jobs = 0
    for inside in np.split(order, bounds):
        run_at = datetime.fromtimestamp(int(send_at[inside].max()), UTC)
        members = np.sort(ids[inside])
        items: list[tuple[str | None, dict[str, Any]]] = []
        for start in range(0, len(members), RELEASE_SIZE):
            part = members[start : start + RELEASE_SIZE]
            lo, hi = int(part[0]), int(part[-1])
            key = f"{RELEASE_JOB}:{lo}:{hi}:{int(run_at.timestamp())}"
            items.append((key, {"first": lo, "last": hi}))
        jobs += enqueue_many(session, RELEASE_JOB, items, run_at=run_at)
    return jobs
