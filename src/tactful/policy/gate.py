"""The gate: consent and topic -> suppression -> dedupe -> caps -> spacing -> quiet hours ->
arbitration -> channel choice. Every intent ends as a scheduled delivery, a bundled item or a
suppression with a reason code and the rule that made it, recorded in the ledger.

Small batches (journeys, the API) go through here intent by intent; large homogeneous
batches (a campaign) take the vectorised path in ``bulk.py`` with the same rules.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.customers import service as customers
from tactful.policy import channels, store
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.placement import Booked, from_seconds, place, to_seconds, zone_or
from tactful.policy.rules import EffectiveRules, effective
from tactful.policy.schemas import BUNDLED, SCHEDULED, SUPPRESSED, ChannelStep, Decision, Intent
from tactful.tenancy.service import channel_prices, get_workspace

DEFAULT_LIFETIME = {
    "marketing": timedelta(days=7),
    "service": timedelta(days=2),
    "transactional": timedelta(days=1),
}
EXCLUSIVE_WINDOW = 14 * 24 * 3600
HISTORY_WINDOW = timedelta(days=21)
BULK_THRESHOLD = 2000

Reacher = Callable[[int, str, "str | None"], dict[int, customers.Reach]]


def batch_key(intent: Intent) -> tuple[Any, ...]:
    """What intents of one ledger batch share."""
    return (
        intent.workspace_id,
        intent.brand_id,
        intent.source,
        intent.message_class,
        intent.topic,
        tuple(intent.tags),
        intent.steps,
        intent.exclusive_group,
        intent.is_test,
        json.dumps(intent.reference, sort_keys=True, default=str),
    )


def steps_json(intent: Intent) -> list[dict[str, Any]]:
    return [
        {
            "channel": s.channel,
            "timeout": s.timeout.total_seconds() if s.timeout else None,
            "wait_for": s.wait_for,
        }
        for s in intent.steps
    ]


def lifetime_end(intent: Intent, start: int) -> int:
    """When an intent expires: its own expiry, else a default lifetime per class."""
    if intent.expires_at is not None:
        return to_seconds(intent.expires_at)
    life = DEFAULT_LIFETIME.get(intent.message_class, DEFAULT_LIFETIME["marketing"])
    return start + int(life.total_seconds())


def unreachable_reason(
    reach: customers.Reach | None,
    service_reach: customers.Reach | None,
    channels: set[str],
    message_class: str,
) -> str:
    """Why none of the cascade's channels may carry the message."""
    if reach is None or not channels & set(reach.addresses):
        return "no_contact"
    if (
        message_class == "marketing"
        and service_reach is not None
        and (channels & service_reach.channels)
    ):
        return "no_advertising_consent"
    return "unsubscribed_topic"


@dataclass
class Workspace:
    """What the gate loaded for one workspace's intents."""

    id: int
    timezone: str
    now: int
    proposed: tuple[str, Any] | None = None  # (scope, RuleSet) for what-if replays
    rules: dict[int, EffectiveRules] = field(default_factory=dict)
    prices: dict[int, dict[str, int]] = field(default_factory=dict)
    booked: dict[int, list[Booked]] = field(default_factory=lambda: defaultdict(list))
    dedupe: set[tuple[int, str]] = field(default_factory=set)
    # (customer, bundle key) -> (a stored leader's id, or a leader row of this batch; time)
    bundles: dict[tuple[int, str], tuple[Any, int]] = field(default_factory=dict)
    # customer -> channel -> (sent, read), for the best channel
    engagement: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)


def load_history(
    session: Session, ws: Workspace, customer_ids: Sequence[int], *, engagement: bool
) -> None:
    """Messages of these customers that went or will go out, for caps and spacing; with
    ``engagement``, also what they read per channel (only a cascade has a choice to make)."""
    since = from_seconds(ws.now) - HISTORY_WINDOW
    for row in store.history(session, customer_ids, since):
        ws.booked[row.customer_id].append(
            Booked(
                at=to_seconds(row.send_at),
                channel=row.channel,
                message_class=row.message_class,
                tags=row.tags,
                source=row.source,
                priority=row.priority,
                exclusive_group=row.exclusive_group,
            )
        )
    if engagement:
        read_since = from_seconds(ws.now) - channels.WINDOW
        ws.engagement.update(store.engagement(session, ws.id, customer_ids, read_since))


def rules_for(session: Session, ws: Workspace, brand_id: int) -> EffectiveRules:
    if brand_id not in ws.rules:
        ws.rules[brand_id] = effective(
            session, workspace_id=ws.id, brand_id=brand_id, proposed=ws.proposed
        )
    return ws.rules[brand_id]


def prices_for(session: Session, ws: Workspace, brand_id: int) -> dict[str, int]:
    if brand_id not in ws.prices:
        ws.prices[brand_id] = channel_prices(session, brand_id=brand_id)
    return ws.prices[brand_id]


def decide_one(
    ws: Workspace,
    intent: Intent,
    cid: int,
    profile: Any,
    rules: EffectiveRules,
    prices: dict[str, int],
    reach: Reacher,
    *,
    first_step: int = 0,
    fallback: bool = False,
) -> dict[str, Any]:
    """Decide one intent; returns its ledger row (without the batch id).

    A cascade fallback (``fallback``) is the same message on a later channel: it skips
    dedupe, bundling, exclusive groups, spacing and any-channel caps, but honours consent,
    per-channel caps and send windows.
    """
    start = max(ws.now, to_seconds(intent.not_before) if intent.not_before else ws.now)
    expires = lifetime_end(intent, start)
    row = ledger_row(intent, cid, expires, rules, ws.now)
    row["requested_at"] = from_seconds(start)

    def suppress(reason: str, rule: str | None = None) -> dict[str, Any]:
        row.update(status=SUPPRESSED, reason=reason, rule=rule)
        return row

    if profile is None:
        return suppress("no_contact", "customer_unknown")
    if intent.is_test and not profile.is_test:
        return suppress("not_test_recipient", "test_recipients")
    if start > expires:
        return suppress("expired")
    klass = intent.message_class
    found = reach(intent.brand_id, klass, intent.topic).get(cid)
    steps = intent.steps[first_step:]
    candidates = [s for s in steps if found is not None and s.channel in found.channels]
    if not candidates:
        service = (
            reach(intent.brand_id, "service", intent.topic).get(cid)
            if klass == "marketing"
            else None
        )
        return suppress(
            unreachable_reason(found, service, {s.channel for s in steps}, klass), "consent"
        )
    if not fallback:
        if intent.dedupe_key and (cid, intent.dedupe_key) in ws.dedupe:
            return suppress("duplicate", "dedupe")
        if intent.exclusive_group and not intent.is_test:
            for book in ws.booked[cid]:
                if (
                    book.exclusive_group == intent.exclusive_group
                    and book.source != intent.source
                    and abs(book.at - start) < EXCLUSIVE_WINDOW
                ):
                    return suppress("held_out", f"exclusive_group:{intent.exclusive_group}")
        if intent.source in rules.held_out_sources:
            return suppress("held_out", f"held_out_source:{intent.source}")
        if intent.bundle_key:
            leader = ws.bundles.get((cid, intent.bundle_key))
            if leader is not None:
                ref, at = leader
                row.update(
                    status=BUNDLED, reason="bundled", rule="bundle", send_at=from_seconds(at)
                )
                if isinstance(ref, int):
                    row["bundle_leader_id"] = ref
                else:
                    row["_leader_row"] = ref
                if intent.dedupe_key:
                    ws.dedupe.add((cid, intent.dedupe_key))
                return row
    step = candidates[0]
    if rules.use_best_channel and not fallback and not intent.is_test:
        best = channels.best_index([s.channel for s in candidates], ws.engagement.get(cid))
        step = candidates[best]
    tags = frozenset(intent.tags) | ({intent.topic} if intent.topic else frozenset())
    tz = zone_or(profile.timezone, ws.timezone)
    moment: int | None
    blockers: list[Booked] = []
    if intent.is_test:
        moment, reason, rule = start, "ok", None
    else:
        moment, reason, rule, blockers = place(
            start=start,
            expires=expires,
            channel=step.channel,
            message_class=klass,
            tags=tags,
            tz=tz,
            rules=rules,
            booked=ws.booked[cid],
            spacing=not fallback,
            any_channel_caps=not fallback,
        )
    if reason in ("deferred_cap", "cap_exceeded") and any(
        b.in_batch and b.priority > intent.priority for b in blockers
    ):
        reason = "lost_arbitration"
    if moment is None:
        return suppress(reason, rule)
    if intent.bundle_key and not fallback:
        # a leader waits for the bundle window so others of its kind can join it
        moment = max(moment, ws.now + int(rules.bundle_window_minutes * 60))
    row.update(
        status=SCHEDULED,
        reason=reason,
        rule=rule,
        channel=step.channel,
        address=found.addresses.get(step.channel) if found else None,
        send_at=from_seconds(moment),
        step=intent.steps.index(step),
        cost=prices.get(step.channel, 0),
    )
    ws.booked[cid].append(
        Booked(
            at=moment,
            channel=step.channel,
            message_class=klass,
            tags=tags,
            source=intent.source,
            priority=intent.priority,
            exclusive_group=intent.exclusive_group,
            in_batch=True,
        )
    )
    if intent.dedupe_key:
        ws.dedupe.add((cid, intent.dedupe_key))
    if intent.bundle_key and not fallback:
        ws.bundles[(cid, intent.bundle_key)] = (row, moment)
    return row


def ledger_row(
    intent: Intent, cid: int, expires: int, rules: EffectiveRules, now: int
) -> dict[str, Any]:
    """A ledger row for an intent, before the gate fills in its outcome."""
    window = intent.dedupe_window or timedelta(hours=rules.dedupe_window_hours)
    return {
        "workspace_id": intent.workspace_id,
        "customer_id": cid,
        "message_class": intent.message_class,
        "status": SUPPRESSED,
        "reason": "ok",
        "rule": None,
        "channel": None,
        "address": None,
        "step": 0,
        "cost": 0,
        "send_at": None,
        "expires_at": from_seconds(expires),
        "updated_at": from_seconds(now),
        "priority": intent.priority,
        "expected_value": intent.expected_value,
        "dedupe_key": intent.dedupe_key,
        "dedupe_until": from_seconds(now) + window if intent.dedupe_key else None,
        "bundle_key": intent.bundle_key,
        "bundle_leader_id": None,
        "bundle_item": intent.bundle_item,
        "previous_id": None,
        "reference": None,
        "_versions": dict(rules.versions),
    }


def decide(
    session: Session,
    intents: Sequence[Intent],
    *,
    now: datetime | None = None,
    proposed: tuple[str, Any] | None = None,
) -> list[Decision]:
    """Pass intents through the gate and record each decision in the ledger."""
    if not intents:
        return []
    now_s = to_seconds(now or clock.now())
    rows: list[dict[str, Any]] = [{} for _ in intents]
    by_workspace: dict[int, list[int]] = defaultdict(list)
    for index, intent in enumerate(intents):
        by_workspace[intent.workspace_id].append(index)
    for workspace_id, indexes in by_workspace.items():
        workspace = get_workspace(session, workspace_id)
        ws = Workspace(id=workspace_id, timezone=workspace.timezone, now=now_s, proposed=proposed)
        decide_workspace(session, ws, [intents[i] for i in indexes], indexes, rows)
    return write(session, intents, rows, now_s)


def decide_workspace(
    session: Session,
    ws: Workspace,
    intents: Sequence[Intent],
    indexes: Sequence[int],
    rows: list[dict[str, Any]],
) -> None:
    """Decide one workspace's intents intent by intent, strongest first."""
    profiles = customers.customers_by_ids(
        session, workspace_id=ws.id, customer_ids=[i.customer_id for i in intents]
    )
    target: dict[int, int] = {}  # an intent for a merged customer goes to the survivor
    for cid, profile in list(profiles.items()):
        if profile.merged_into_id is not None:
            survivor = customers.get_customer(session, workspace_id=ws.id, customer_id=cid)
            profiles[survivor.id] = survivor
            target[cid] = survivor.id
    ids = sorted({target.get(i.customer_id, i.customer_id) for i in intents})
    load_history(session, ws, ids, engagement=any(len(i.steps) > 1 for i in intents))
    pairs = [
        (target.get(i.customer_id, i.customer_id), i.dedupe_key) for i in intents if i.dedupe_key
    ]
    ws.dedupe = store.active_dedupe_keys(session, ws.id, pairs, from_seconds(ws.now))
    keys = [i.bundle_key for i in intents if i.bundle_key]
    for (cid, key), leader in store.open_bundles(session, ids, keys, from_seconds(ws.now)).items():
        assert leader.send_at is not None
        ws.bundles[(cid, key)] = (leader.id, to_seconds(leader.send_at))
    cache: dict[tuple[int, str, str | None], dict[int, customers.Reach]] = {}

    def reach(brand_id: int, klass: str, topic: str | None) -> dict[int, customers.Reach]:
        if (brand_id, klass, topic) not in cache:
            cache[(brand_id, klass, topic)] = customers.reachability(
                session,
                workspace_id=ws.id,
                brand_id=brand_id,
                customer_ids=ids,
                message_class=klass,
                topic=topic,
            )
        return cache[(brand_id, klass, topic)]

    # arbitration: higher priority first, then higher expected value, then arrival
    order = sorted(
        range(len(intents)), key=lambda k: (-intents[k].priority, -intents[k].expected_value, k)
    )
    for k in order:
        intent = intents[k]
        cid = target.get(intent.customer_id, intent.customer_id)
        rows[indexes[k]] = decide_one(
            ws,
            intent,
            cid,
            profiles.get(cid),
            rules_for(session, ws, intent.brand_id),
            prices_for(session, ws, intent.brand_id),
            reach,
        )


def write(
    session: Session, intents: Sequence[Intent], rows: list[dict[str, Any]], now: int
) -> list[Decision]:
    """Record decided rows in the ledger (batched by what they share) and return decisions."""
    batches: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    for intent in intents:
        counts[batch_key(intent)] += 1
    for intent, row in zip(intents, rows, strict=True):
        key = batch_key(intent)
        if key not in batches:
            batches[key] = store.insert_batch(
                session,
                {
                    "workspace_id": intent.workspace_id,
                    "brand_id": intent.brand_id,
                    "source": intent.source[:200],
                    "message_class": intent.message_class,
                    "topic": intent.topic,
                    "tags": list(intent.tags),
                    "steps": steps_json(intent),
                    "exclusive_group": intent.exclusive_group,
                    "is_test": intent.is_test,
                    "reference": intent.reference,
                    "rule_versions": row.pop("_versions", {}),
                    "intents": counts[key],
                    "decided_at": from_seconds(now),
                },
            )
        row.pop("_versions", None)
        row["batch_id"] = batches[key]
    # Leaders first: rows bundled into a leader of this batch need the leader's id.
    first = [k for k, row in enumerate(rows) if "_leader_row" not in row]
    second = [k for k, row in enumerate(rows) if "_leader_row" in row]
    for k, decision_id in zip(
        first, store.insert_decisions(session, [rows[k] for k in first]), strict=True
    ):
        rows[k]["id"] = decision_id
    for k in second:
        rows[k]["bundle_leader_id"] = rows[k].pop("_leader_row")["id"]
    for k, decision_id in zip(
        second, store.insert_decisions(session, [rows[k] for k in second]), strict=True
    ):
        rows[k]["id"] = decision_id
    return [as_decision(row) for row in rows]


def as_decision(row: dict[str, Any]) -> Decision:
    return Decision(
        decision_id=row["id"],
        outcome=row["status"],
        reason=row["reason"],
        rule=row["rule"],
        channel=row["channel"],
        address=row["address"],
        send_at=row["send_at"],
        step=row["step"],
        cost=row["cost"],
        bundle_leader_id=row["bundle_leader_id"],
    )


def intent_of(row: ContactDecision, batch: DecisionBatch) -> Intent:
    """The intent a ledger row was decided from."""
    return Intent(
        workspace_id=row.workspace_id,
        brand_id=batch.brand_id,
        customer_id=row.customer_id,
        message_class=row.message_class,
        source=batch.source,
        steps=tuple(
            ChannelStep(
                channel=s["channel"],
                timeout=timedelta(seconds=s["timeout"]) if s.get("timeout") else None,
                wait_for=s.get("wait_for", "delivered"),
            )
            for s in batch.steps
        ),
        topic=batch.topic,
        tags=tuple(batch.tags),
        priority=row.priority,
        expected_value=row.expected_value,
        expires_at=row.expires_at,
        exclusive_group=batch.exclusive_group,
        is_test=batch.is_test,
        reference={**batch.reference, **(row.reference or {})},
    )


def decide_fallback(
    session: Session,
    intent: Intent,
    *,
    first_step: int,
    previous_id: int,
    now: datetime | None = None,
) -> Decision:
    """Gate the next channel of a cascade whose previous step was not delivered (or read)."""
    now_s = to_seconds(now or clock.now())
    workspace = get_workspace(session, intent.workspace_id)
    ws = Workspace(id=workspace.id, timezone=workspace.timezone, now=now_s)
    cid = intent.customer_id
    profile = customers.customers_by_ids(session, workspace_id=ws.id, customer_ids=[cid]).get(cid)
    load_history(session, ws, [cid], engagement=False)  # a fallback keeps the cascade order

    def reach(brand_id: int, klass: str, topic: str | None) -> dict[int, customers.Reach]:
        return customers.reachability(
            session,
            workspace_id=ws.id,
            brand_id=brand_id,
            customer_ids=[cid],
            message_class=klass,
            topic=topic,
        )

    row = decide_one(
        ws,
        intent,
        cid,
        profile,
        rules_for(session, ws, intent.brand_id),
        prices_for(session, ws, intent.brand_id),
        reach,
        first_step=first_step,
        fallback=True,
    )
    row["previous_id"] = previous_id
    if row["status"] == SUPPRESSED and row["reason"] in (
        "no_contact",
        "unsubscribed_topic",
        "no_advertising_consent",
    ):
        row["reason"], row["rule"] = "cascade_exhausted", row["reason"]
    [decision] = write(session, [intent], [row], now_s)
    return decision
