"""The gate: consent and topic -> suppression -> dedupe -> caps -> spacing -> quiet hours ->
arbitration -> channel choice, for a batch of intents. Every intent ends as a scheduled
delivery or a suppression with a reason code and the rule that made it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.customers import service as customers
from tactful.policy import store
from tactful.policy.rules import EffectiveRules, effective
from tactful.policy.schemas import (
    BUNDLED,
    SCHEDULED,
    SUPPRESSED,
    ChannelStep,
    Decision,
    Intent,
)
from tactful.policy.timing import local_day_start, next_allowed, next_local_day_start
from tactful.tenancy.service import channel_prices, get_workspace

WEEK = timedelta(days=7)
DEFAULT_LIFETIME = {
    "marketing": timedelta(days=7),
    "service": timedelta(days=2),
    "transactional": timedelta(days=1),
}
EXCLUSIVE_WINDOW = timedelta(days=14)
MAX_ROUNDS = 60


@dataclass
class Booked:
    """A message that went or will go out, as the caps and spacing see it."""

    at: datetime
    channel: str | None
    message_class: str
    tags: frozenset[str]
    source: str
    priority: int
    exclusive_group: str | None
    in_batch: bool = False


@dataclass
class _Context:
    """What the gate loaded for one batch."""

    now: datetime
    rules: dict[tuple[int, int], EffectiveRules] = field(default_factory=dict)
    prices: dict[int, dict[str, int]] = field(default_factory=dict)
    zones: dict[int, ZoneInfo] = field(default_factory=dict)
    booked: dict[int, list[Booked]] = field(default_factory=lambda: defaultdict(list))
    dedupe: set[tuple[int, str]] = field(default_factory=set)
    # (customer, bundle key) -> (stored leader id, or the leader's row in this batch; time)
    bundles: dict[tuple[int, str], tuple[Any, datetime]] = field(default_factory=dict)


def _zone(name: str | None, fallback: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or fallback)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


def _cap_applies(cap: Any, channel: str, message_class: str, tags: frozenset[str]) -> bool:
    if message_class == "transactional":
        return False
    if cap.message_class is not None and cap.message_class != message_class:
        return False
    if cap.channel is not None and cap.channel != channel:
        return False
    return cap.tag is None or cap.tag in tags


def _matches(book: Booked, cap: Any) -> bool:
    return _cap_applies(cap, book.channel or "", book.message_class, book.tags) or (
        cap.channel is None
        and book.channel is None
        and book.message_class != "transactional"
        and (cap.message_class in (None, book.message_class))
        and (cap.tag is None or cap.tag in book.tags)
    )


def _max_rolling_count(times: list[datetime], t: datetime) -> tuple[int, datetime | None]:
    """The most messages in any 7-day window that also contains ``t``, and the earliest
    moment after which one of them leaves that window."""
    inside = sorted(x for x in times if t - WEEK < x < t + WEEK)
    best, leave = 0, None
    starts = [x for x in inside if x <= t] + [t]
    for start in starts:
        low = min(start, t)
        count = sum(1 for x in inside if low <= x < low + WEEK and x > t - WEEK)
        if count > best:
            best = count
            first = min((x for x in inside if low <= x < low + WEEK), default=None)
            leave = None if first is None else first + WEEK
    return best, leave


def _place(
    intent: Intent,
    channel: str,
    start: datetime,
    expires: datetime,
    rules: EffectiveRules,
    zone: ZoneInfo,
    booked: list[Booked],
    *,
    spacing: bool = True,
    any_channel_caps: bool = True,
) -> tuple[datetime | None, str, str | None]:
    """The first moment from ``start`` that every cap, spacing rule and send window allows:
    ``(moment, reason, rule)``; moment is None when none comes before ``expires``."""
    tags = frozenset(intent.tags) | ({intent.topic} if intent.topic else frozenset())
    klass = intent.message_class
    t = start
    reason, rule = "ok", None
    for _ in range(MAX_ROUNDS):
        if t > expires:
            return None, _final_reason(reason), rule
        moved = False
        for scope, cap in rules.caps:
            if not _cap_applies(cap, channel, klass, tags):
                continue
            if cap.channel is None and not any_channel_caps:
                continue
            relevant = [
                b
                for b in booked
                if _matches(b, cap) and (cap.channel is None or b.channel == cap.channel)
            ]
            if cap.period == "day":
                day_start = local_day_start(t, zone)
                day_end = next_local_day_start(t, zone)
                used = [b for b in relevant if day_start <= b.at < day_end]
                if len(used) >= cap.limit:
                    reason = _cap_reason(used, intent)
                    rule = rules.rule_name(scope, cap.id)
                    t, moved = day_end, True
                    break
            else:
                count, leave = _max_rolling_count([b.at for b in relevant], t)
                if count >= cap.limit:
                    reason = _cap_reason(relevant, intent)
                    rule = rules.rule_name(scope, cap.id)
                    if leave is None or leave <= t or cap.limit == 0:
                        return None, "cap_exceeded", rule
                    t, moved = leave, True
                    break
        if moved:
            continue
        if spacing and klass != "transactional":
            for scope, rule_ in rules.spacing:
                if rule_.message_class != klass:
                    continue
                gap = timedelta(hours=rule_.min_hours)
                near = [
                    b.at
                    for b in booked
                    if b.message_class == klass
                    and (rule_.channel is None or b.channel == rule_.channel)
                    and abs(b.at - t) < gap
                ]
                if near:
                    reason, rule = "deferred_spacing", rules.rule_name(scope, rule_.id)
                    t, moved = max(near) + gap, True
                    break
            if moved:
                continue
        if klass != "transactional":
            for scope, windows in rules.send_windows:
                if klass not in windows.applies_to:
                    continue
                allowed = next_allowed(t, zone, windows)
                if allowed is None:
                    return None, "quiet_hours_until_expiry", f"{scope}:send_windows"
                if allowed != t:
                    reason, rule = "deferred_quiet_hours", f"{scope}:send_windows"
                    t, moved = allowed, True
                    break
            if moved:
                continue
        if t > expires:
            return None, _final_reason(reason), rule
        return t, reason, rule
    return None, _final_reason(reason), rule


def _cap_reason(used: list[Booked], intent: Intent) -> str:
    stronger = any(b.in_batch and b.priority > intent.priority for b in used)
    return "lost_arbitration" if stronger else "deferred_cap"


def _final_reason(reason: str) -> str:
    return {
        "deferred_cap": "cap_exceeded",
        "deferred_spacing": "spacing",
        "deferred_quiet_hours": "quiet_hours_until_expiry",
        "lost_arbitration": "lost_arbitration",
        "ok": "expired",
    }.get(reason, reason)


def _unreachable_reason(
    reach: customers.Reach,
    steps: Sequence[ChannelStep],
    message_class: str,
    marketing_reach: customers.Reach | None,
    service_reach: customers.Reach | None,
) -> str:
    wanted = {s.channel for s in steps}
    if not wanted & set(reach.addresses):
        return "no_contact"
    if (
        message_class == "marketing"
        and service_reach is not None
        and (wanted & service_reach.channels)
    ):
        return "no_advertising_consent"
    return "unsubscribed_topic"


def decide(
    session: Session, intents: Sequence[Intent], *, now: datetime | None = None
) -> list[Decision]:
    """Pass intents through the gate and record each decision in the ledger."""
    now = now or clock.now()
    if not intents:
        return []
    ctx = _Context(now=now)
    by_workspace: dict[int, list[int]] = defaultdict(list)
    for index, intent in enumerate(intents):
        by_workspace[intent.workspace_id].append(index)
    rows: list[dict[str, Any]] = [{} for _ in intents]
    for workspace_id, indexes in by_workspace.items():
        _decide_workspace(session, ctx, workspace_id, [intents[i] for i in indexes], indexes, rows)
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
    return [
        Decision(
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
        for row in rows
    ]


def _decide_workspace(
    session: Session,
    ctx: _Context,
    workspace_id: int,
    intents: list[Intent],
    indexes: list[int],
    rows: list[dict[str, Any]],
) -> None:
    workspace = get_workspace(session, workspace_id)
    profiles = customers.customers_by_ids(
        session, workspace_id=workspace_id, customer_ids=[i.customer_id for i in intents]
    )
    # an intent for a merged customer goes to the survivor
    target: dict[int, int] = {}
    for intent in intents:
        profile = profiles.get(intent.customer_id)
        if profile is not None and profile.merged_into_id is not None:
            survivor = customers.get_customer(
                session, workspace_id=workspace_id, customer_id=profile.id
            )
            profiles[survivor.id] = survivor
            target[intent.customer_id] = survivor.id
    customer_ids = sorted({target.get(i.customer_id, i.customer_id) for i in intents})
    horizon = ctx.now - WEEK - EXCLUSIVE_WINDOW
    for cid, decisions in store.history(session, customer_ids, horizon).items():
        ctx.booked[cid].extend(
            Booked(
                at=d.send_at,
                channel=d.channel,
                message_class=d.message_class,
                tags=frozenset(d.tags) | ({d.topic} if d.topic else frozenset()),
                source=d.source,
                priority=d.priority,
                exclusive_group=d.exclusive_group,
            )
            for d in decisions
            if d.send_at is not None
        )
    dedupe_pairs = [
        (target.get(i.customer_id, i.customer_id), i.dedupe_key) for i in intents if i.dedupe_key
    ]
    ctx.dedupe = store.active_dedupe_keys(session, workspace_id, dedupe_pairs, ctx.now)
    bundle_keys = [i.bundle_key for i in intents if i.bundle_key]
    for (cid, key), leader in store.open_bundles(
        session, customer_ids, bundle_keys, ctx.now
    ).items():
        assert leader.send_at is not None
        ctx.bundles[(cid, key)] = (leader.id, leader.send_at)  # an int: a stored leader

    reach_cache: dict[tuple[int, str, str | None], dict[int, customers.Reach]] = {}

    def reach(brand_id: int, klass: str, topic: str | None) -> dict[int, customers.Reach]:
        key = (brand_id, klass, topic)
        if key not in reach_cache:
            ids = [
                target.get(i.customer_id, i.customer_id) for i in intents if i.brand_id == brand_id
            ]
            reach_cache[key] = customers.reachability(
                session,
                workspace_id=workspace_id,
                brand_id=brand_id,
                customer_ids=ids,
                message_class=klass,
                topic=topic,
            )
        return reach_cache[key]

    # arbitration: higher priority first, then higher expected value, then arrival
    order = sorted(
        range(len(intents)), key=lambda k: (-intents[k].priority, -intents[k].expected_value, k)
    )
    for k in order:
        intent = intents[k]
        cid = target.get(intent.customer_id, intent.customer_id)
        profile = profiles.get(cid)
        zone = _zone(profile.timezone if profile else None, workspace.timezone)
        rules = ctx.rules.get((workspace_id, intent.brand_id))
        if rules is None:
            rules = effective(session, workspace_id=workspace_id, brand_id=intent.brand_id)
            ctx.rules[(workspace_id, intent.brand_id)] = rules
        prices = ctx.prices.get(intent.brand_id)
        if prices is None:
            prices = channel_prices(session, brand_id=intent.brand_id)
            ctx.prices[intent.brand_id] = prices
        rows[indexes[k]] = _decide_one(
            ctx,
            intent,
            cid,
            profile is not None and profile.is_test,
            profile is None,
            zone,
            rules,
            prices,
            reach,
        )


def _decide_one(
    ctx: _Context,
    intent: Intent,
    cid: int,
    is_test_customer: bool,
    unknown: bool,
    zone: ZoneInfo,
    rules: EffectiveRules,
    prices: dict[str, int],
    reach: Any,
    *,
    first_step: int = 0,
    fallback: bool = False,
) -> dict[str, Any]:
    """Decide one intent. A cascade fallback (``fallback``) is the same message on the next
    channel: it skips dedupe, bundling, spacing and any-channel caps, but honours consent,
    per-channel caps and send windows."""
    start = max(ctx.now, intent.not_before or ctx.now)
    expires = intent.expires_at or start + DEFAULT_LIFETIME.get(
        intent.message_class, DEFAULT_LIFETIME["marketing"]
    )
    dedupe_window = intent.dedupe_window or timedelta(hours=rules.dedupe_window_hours)
    row = _row(intent, cid, ctx.now, expires, dedupe_window, rules)

    def suppress(reason: str, rule: str | None = None) -> dict[str, Any]:
        row.update(status=SUPPRESSED, reason=reason, rule=rule)
        return row

    if unknown:
        return suppress("no_contact", "customer_unknown")
    if intent.is_test and not is_test_customer:
        return suppress("not_test_recipient", "test_recipients")
    if start > expires:
        return suppress("expired")
    klass = intent.message_class
    found = reach(intent.brand_id, klass, intent.topic).get(cid)
    candidates = [
        s for s in intent.steps[first_step:] if found is not None and s.channel in found.channels
    ]
    if not candidates:
        service_reach = (
            reach(intent.brand_id, "service", intent.topic).get(cid)
            if klass == "marketing"
            else None
        )
        if found is None:
            return suppress("no_contact")
        return suppress(
            _unreachable_reason(found, intent.steps, klass, None, service_reach), "consent"
        )
    if fallback:
        pass
    elif intent.dedupe_key and (cid, intent.dedupe_key) in ctx.dedupe:
        return suppress("duplicate", "dedupe")
    if intent.exclusive_group and not intent.is_test and not fallback:
        for book in ctx.booked[cid]:
            if (
                book.exclusive_group == intent.exclusive_group
                and book.source != intent.source
                and abs(book.at - start) < EXCLUSIVE_WINDOW
            ):
                return suppress("held_out", f"exclusive_group:{intent.exclusive_group}")
    if intent.source in rules.held_out_sources and not fallback:
        return suppress("held_out", f"held_out_source:{intent.source}")
    if intent.bundle_key and not fallback:
        leader = ctx.bundles.get((cid, intent.bundle_key))
        if leader is not None:
            ref, at = leader
            row.update(status=BUNDLED, reason="bundled", rule="bundle", send_at=at)
            if isinstance(ref, int):
                row["bundle_leader_id"] = ref
            else:
                row["_leader_row"] = ref
            if intent.dedupe_key:
                ctx.dedupe.add((cid, intent.dedupe_key))
            return row
    step = candidates[0]
    address = found.addresses[step.channel] if found else None
    moment: datetime | None
    if intent.is_test:
        moment, reason, rule = start, "ok", None
    else:
        moment, reason, rule = _place(
            intent,
            step.channel,
            start,
            expires,
            rules,
            zone,
            ctx.booked[cid],
            spacing=not fallback,
            any_channel_caps=not fallback,
        )
    if moment is None:
        return suppress(reason, rule)
    if intent.bundle_key and not fallback:
        # a leader waits for the bundle window so others of its kind can join it
        moment = max(moment, ctx.now + timedelta(minutes=rules.bundle_window_minutes))
    row.update(
        status=SCHEDULED,
        reason=reason,
        rule=rule,
        channel=step.channel,
        address=address,
        send_at=moment,
        step=intent.steps.index(step),
        cost=prices.get(step.channel, 0),
    )
    ctx.booked[cid].append(
        Booked(
            at=moment,
            channel=step.channel,
            message_class=klass,
            tags=frozenset(intent.tags) | ({intent.topic} if intent.topic else frozenset()),
            source=intent.source,
            priority=intent.priority,
            exclusive_group=intent.exclusive_group,
            in_batch=True,
        )
    )
    if intent.dedupe_key:
        ctx.dedupe.add((cid, intent.dedupe_key))
    if intent.bundle_key and not fallback:
        ctx.bundles[(cid, intent.bundle_key)] = (row, moment)  # a row: a leader of this batch
    return row


def _row(
    intent: Intent,
    cid: int,
    now: datetime,
    expires: datetime,
    dedupe_window: timedelta,
    rules: EffectiveRules,
) -> dict[str, Any]:
    return {
        "workspace_id": intent.workspace_id,
        "brand_id": intent.brand_id,
        "customer_id": cid,
        "source": intent.source[:200],
        "message_class": intent.message_class,
        "topic": intent.topic,
        "tags": list(intent.tags),
        "dedupe_key": intent.dedupe_key,
        "dedupe_until": now + dedupe_window if intent.dedupe_key else None,
        "priority": intent.priority,
        "expected_value": intent.expected_value,
        "status": SUPPRESSED,
        "reason": "ok",
        "rule": None,
        "channel": None,
        "address": None,
        "step": 0,
        "steps": [
            {
                "channel": s.channel,
                "timeout": s.timeout.total_seconds() if s.timeout else None,
                "wait_for": s.wait_for,
            }
            for s in intent.steps
        ],
        "cost": 0,
        "send_at": None,
        "expires_at": expires,
        "decided_at": now,
        "updated_at": now,
        "exclusive_group": intent.exclusive_group,
        "bundle_key": intent.bundle_key,
        "bundle_leader_id": None,
        "bundle_item": intent.bundle_item,
        "previous_id": None,
        "is_test": intent.is_test,
        "reference": intent.reference,
        "rule_versions": dict(rules.versions),
    }


def decide_fallback(
    session: Session,
    intent: Intent,
    *,
    first_step: int,
    previous_id: int,
    now: datetime | None = None,
) -> Decision:
    """Gate the next channel of a cascade whose previous step was not delivered (or read)."""
    now = now or clock.now()
    ctx = _Context(now=now)
    workspace = get_workspace(session, intent.workspace_id)
    profile = customers.customers_by_ids(
        session, workspace_id=intent.workspace_id, customer_ids=[intent.customer_id]
    ).get(intent.customer_id)
    cid = intent.customer_id
    for decision in store.history(session, [cid], now - WEEK).get(cid, []):
        if decision.send_at is not None:
            ctx.booked[cid].append(
                Booked(
                    at=decision.send_at,
                    channel=decision.channel,
                    message_class=decision.message_class,
                    tags=frozenset(decision.tags)
                    | ({decision.topic} if decision.topic else frozenset()),
                    source=decision.source,
                    priority=decision.priority,
                    exclusive_group=decision.exclusive_group,
                )
            )
    rules = effective(session, workspace_id=intent.workspace_id, brand_id=intent.brand_id)

    def reach(brand_id: int, klass: str, topic: str | None) -> dict[int, customers.Reach]:
        return customers.reachability(
            session,
            workspace_id=intent.workspace_id,
            brand_id=brand_id,
            customer_ids=[cid],
            message_class=klass,
            topic=topic,
        )

    zone = _zone(profile.timezone if profile else None, workspace.timezone)
    row = _decide_one(
        ctx,
        intent,
        cid,
        bool(profile and profile.is_test),
        profile is None,
        zone,
        rules,
        channel_prices(session, brand_id=intent.brand_id),
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
    [decision_id] = store.insert_decisions(session, [row])
    return Decision(
        decision_id=decision_id,
        outcome=row["status"],
        reason=row["reason"],
        rule=row["rule"],
        channel=row["channel"],
        address=row["address"],
        send_at=row["send_at"],
        step=row["step"],
        cost=row["cost"],
    )
