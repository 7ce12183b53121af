"""The gate for large homogeneous batches (a campaign to a million customers), vectorised.

Same rules and the same answers as the intent-by-intent path in ``gate.py`` (a property test
compares them): the data is loaded with a few aggregate queries into NumPy arrays, and each
rule is applied to every still-undecided customer at once. Times are whole seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from tactful.core.dialect import copy_rows, epoch_seconds, reserve_ids
from tactful.customers.models import (
    ADVERTISING,
    CONTACT_OK,
    EMAIL,
    GRANTED,
    PERSONAL_DATA,
    PHONE,
    PUSH_TOKEN,
    REVOKED,
    TELEGRAM,
    TOPIC,
    Consent,
    Customer,
    Identity,
)
from tactful.customers.service import brand_scope, topic_subscribed_by_default
from tactful.policy import store
from tactful.policy.gate import (
    EXCLUSIVE_WINDOW,
    HISTORY_WINDOW,
    batch_key,
    lifetime_end,
    steps_json,
)
from tactful.policy.models import ContactDecision
from tactful.policy.placement import (
    MAX_ROUNDS,
    WEEK,
    final_reason,
    to_seconds,
    week_check,
    zone,
)
from tactful.policy.rules import EffectiveRules, effective
from tactful.policy.schemas import (
    COUNTED,
    SCHEDULED,
    SUPPRESSED,
    Decision,
    Intent,
    SendWindows,
)
from tactful.policy.timing import MAX_SEARCH_DAYS, _windows_for
from tactful.tenancy.service import channel_prices, get_workspace

CONTACT_BITS = {EMAIL: 1, PHONE: 2, PUSH_TOKEN: 4, TELEGRAM: 8}
CHANNEL_CONTACT = {
    "email": EMAIL,
    "sms": PHONE,
    "viber": PHONE,
    "call": PHONE,
    "push": PUSH_TOKEN,
    "telegram": TELEGRAM,
}
CONSENT_CHANNELS = ("email", "sms", "viber", "call", "push", "telegram", "webhook")
PD_BIT = 1
TOPIC_GRANTED_BIT = 1 << 20
TOPIC_REVOKED_BIT = 1 << 21
CHANNELS = ("push", "email", "viber", "telegram", "sms", "webhook", "call")
CLASSES = ("marketing", "service", "transactional")
LARGE = 20_000
SPAN = 400 * 24 * 3600


def advertising_bit(channel: str) -> int:
    return 1 << (1 + CONSENT_CHANNELS.index(channel))


def eligible(intents: Sequence[Intent], threshold: int) -> bool:
    """A batch the vectorised path can take: large, one kind of message, one per customer."""
    if len(intents) < threshold:
        return False
    first = intents[0]
    key = batch_key(first)
    shared = (
        first.not_before,
        first.expires_at,
        first.priority,
        first.expected_value,
        first.dedupe_key,
        first.dedupe_window,
    )
    seen: set[int] = set()
    for intent in intents:
        if intent.bundle_key or intent.is_test or intent.customer_id in seen:
            return False
        if (
            intent.not_before,
            intent.expires_at,
            intent.priority,
            intent.expected_value,
            intent.dedupe_key,
            intent.dedupe_window,
        ) != shared:
            return False
        if batch_key(intent) != key:
            return False
        seen.add(intent.customer_id)
    return True


@dataclass
class Outcome:
    """The decisions of a bulk batch as arrays (``decisions()`` builds objects if needed)."""

    decision_ids: np.ndarray
    customer_ids: np.ndarray
    status: np.ndarray  # object: scheduled / suppressed
    reason: np.ndarray  # object
    rule: np.ndarray  # object
    channel: np.ndarray  # object
    step: np.ndarray
    send_at: np.ndarray  # int seconds, -1 when not scheduled
    cost: np.ndarray

    def decisions(self) -> list[Decision]:
        return [
            Decision(
                decision_id=int(self.decision_ids[i]),
                outcome=str(self.status[i]),
                reason=str(self.reason[i]),
                rule=self.rule[i],
                channel=self.channel[i],
                address=None,
                send_at=(
                    datetime.fromtimestamp(int(self.send_at[i]), UTC)
                    if self.send_at[i] >= 0
                    else None
                ),
                step=int(self.step[i]),
                cost=int(self.cost[i]),
            )
            for i in range(len(self.decision_ids))
        ]


def _rows_in(session: Session, stmt: Any, ids: np.ndarray, column: Any) -> list[Any]:
    """Run ``stmt`` for the given customer ids: one scan when many, chunks when few."""
    if len(ids) >= LARGE:
        return list(session.execute(stmt).all())
    rows: list[Any] = []
    for start in range(0, len(ids), 900):
        rows.extend(
            session.execute(stmt.where(column.in_(ids[start : start + 900].tolist()))).all()
        )
    return rows


def _lookup(
    keys: np.ndarray, values: np.ndarray, wanted: np.ndarray, default: Any, dtype: Any
) -> np.ndarray:
    """values[keys == wanted] for each wanted key (vectorised join on sorted keys)."""
    out = np.full(len(wanted), default, dtype=dtype)
    if len(keys) == 0:
        return out
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.searchsorted(sorted_keys, wanted)
    pos = np.clip(pos, 0, len(sorted_keys) - 1)
    hit = sorted_keys[pos] == wanted
    out[hit] = values[order][pos[hit]]
    return out


class _Counter:
    """Counts a customer's booked messages in time ranges, vectorised."""

    def __init__(self, pos: np.ndarray, at: np.ndarray, base: int) -> None:
        self.base = base
        self.keys = np.sort(pos.astype(np.int64) * SPAN + np.clip(at - base, 0, SPAN - 1))

    def _key(self, pos: np.ndarray, moment: np.ndarray) -> np.ndarray:
        return np.asarray(
            pos.astype(np.int64) * SPAN + np.clip(moment - self.base, 0, SPAN - 1), dtype=np.int64
        )

    def count(self, pos: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """How many booked times fall in [low, high)."""
        left = np.searchsorted(self.keys, self._key(pos, low), "left")
        right = np.searchsorted(self.keys, self._key(pos, high), "left")
        return np.asarray(right - left, dtype=np.int64)

    def nth(self, pos: np.ndarray, low: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """The time of the ``offset``-th booked message at or after ``low``."""
        index = np.searchsorted(self.keys, self._key(pos, low), "left") + offset
        return np.asarray(
            self.keys[index] - pos.astype(np.int64) * SPAN + self.base, dtype=np.int64
        )

    def last_before(self, pos: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The latest booked time before ``high`` (call only where one exists)."""
        index = np.searchsorted(self.keys, self._key(pos, high), "left") - 1
        return np.asarray(
            self.keys[index] - pos.astype(np.int64) * SPAN + self.base, dtype=np.int64
        )

    def times(self, pos: int) -> list[int]:
        low = np.searchsorted(self.keys, pos * SPAN, "left")
        high = np.searchsorted(self.keys, (pos + 1) * SPAN, "left")
        return [int(k - pos * SPAN + self.base) for k in self.keys[low:high]]


def _local(t: np.ndarray, tz: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(t, unit="s", utc=True)).tz_convert(tz)


def _midnight(day: date, tz: str) -> int:
    return to_seconds(datetime.combine(day, time(0), zone(tz)))


def day_bounds_many(t: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) in seconds of each moment's calendar day in ``tz``."""
    days = _local(t, tz).normalize().tz_localize(None).values.astype("datetime64[D]")
    unique, inverse = np.unique(days, return_inverse=True)
    starts = np.array([_midnight(d.astype(date), tz) for d in unique], dtype=np.int64)
    ends = np.array(
        [_midnight(d.astype(date) + timedelta(days=1), tz) for d in unique], dtype=np.int64
    )
    return starts[inverse], ends[inverse]


def next_allowed_many(t: np.ndarray, tz: str, windows: SendWindows) -> np.ndarray:
    """The first allowed moment at or after each ``t`` (-1 when none within the search)."""
    days = _local(t, tz).normalize().tz_localize(None).values.astype("datetime64[D]")
    unique, inverse = np.unique(days, return_inverse=True)
    result = np.full(len(t), -1, dtype=np.int64)
    local_zone = zone(tz)
    for u, day64 in enumerate(unique):
        day = day64.astype(date)
        members = np.flatnonzero(inverse == u)
        left = members
        for window in sorted(_windows_for(day, windows), key=lambda w: w.start):
            start_t, end_t = window.bounds()
            start = to_seconds(datetime.combine(day, start_t, local_zone))
            end = to_seconds(datetime.combine(day, end_t, local_zone))
            fits = t[left] < end
            result[left[fits]] = np.maximum(start, t[left[fits]])
            left = left[~fits]
            if not len(left):
                break
        if len(left):
            for offset in range(1, MAX_SEARCH_DAYS):
                later = day + timedelta(days=offset)
                found = sorted(_windows_for(later, windows), key=lambda w: w.start)
                if found:
                    result[left] = to_seconds(
                        datetime.combine(later, found[0].bounds()[0], local_zone)
                    )
                    break
    return result


def decide_audience(
    session: Session, first: Intent, customer_ids: np.ndarray, *, now: int
) -> Outcome:
    """Decide one message (``first`` without its customer) for every customer of an
    audience, and record it in the ledger. Customer ids must be unique."""
    workspace = get_workspace(session, first.workspace_id)
    rules = effective(session, workspace_id=workspace.id, brand_id=first.brand_id)
    prices = channel_prices(session, brand_id=first.brand_id)
    cids = np.asarray(customer_ids, dtype=np.int64)
    n = len(cids)

    # -- customers --------------------------------------------------------------------------
    rows = _rows_in(
        session,
        select(Customer.id, Customer.timezone, Customer.is_test, Customer.merged_into_id).where(
            Customer.workspace_id == workspace.id
        ),
        cids,
        Customer.id,
    )
    known_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    merged_ids = np.fromiter((r[3] is not None for r in rows), dtype=bool, count=len(rows))
    tz_of = np.array([r[1] or workspace.timezone for r in rows], dtype=object)
    known = np.isin(cids, known_ids[~merged_ids])
    tz = _lookup(known_ids, tz_of, cids, workspace.timezone, object)
    tz_names = sorted({str(z) for z in tz})
    tz = np.array([z if _validzone(str(z)) else workspace.timezone for z in tz], dtype=object)

    # -- reachability (the same rules as customers.service.reachability) -------------------
    contact_rows = _rows_in(
        session,
        select(
            Identity.customer_id,
            func.sum(
                distinct(case(*((Identity.kind == k, v) for k, v in CONTACT_BITS.items()), else_=0))
            ),
        )
        .where(
            Identity.workspace_id == workspace.id,
            Identity.valid.is_(True),
            Identity.status == CONTACT_OK,
            Identity.kind.in_(list(CONTACT_BITS)),
        )
        .group_by(Identity.customer_id),
        cids,
        Identity.customer_id,
    )
    contact = _lookup(
        np.array([r[0] for r in contact_rows], dtype=np.int64),
        np.array([int(r[1]) for r in contact_rows], dtype=np.int64),
        cids,
        0,
        np.int64,
    )
    scope = brand_scope(first.brand_id)
    consent_cases = [
        (
            (Consent.brand_scope == "ws")
            & (Consent.kind == PERSONAL_DATA)
            & (Consent.status == GRANTED),
            PD_BIT,
        )
    ]
    consent_cases += [
        (
            (Consent.brand_scope == scope)
            & (Consent.kind == ADVERTISING)
            & (Consent.channel == ch)
            & (Consent.status == GRANTED),
            advertising_bit(ch),
        )
        for ch in CONSENT_CHANNELS
    ]
    if first.topic:
        consent_cases += [
            (
                (Consent.brand_scope == scope)
                & (Consent.kind == TOPIC)
                & (Consent.topic == first.topic)
                & (Consent.status == GRANTED),
                TOPIC_GRANTED_BIT,
            ),
            (
                (Consent.brand_scope == scope)
                & (Consent.kind == TOPIC)
                & (Consent.topic == first.topic)
                & (Consent.status == REVOKED),
                TOPIC_REVOKED_BIT,
            ),
        ]
    consent_rows = _rows_in(
        session,
        select(Consent.customer_id, func.sum(distinct(case(*consent_cases, else_=0))))
        .where(Consent.workspace_id == workspace.id, Consent.brand_scope.in_(["ws", scope]))
        .group_by(Consent.customer_id),
        cids,
        Consent.customer_id,
    )
    consent = _lookup(
        np.array([r[0] for r in consent_rows], dtype=np.int64),
        np.array([int(r[1]) for r in consent_rows], dtype=np.int64),
        cids,
        0,
        np.int64,
    )
    topic_default = (
        topic_subscribed_by_default(
            session, workspace_id=workspace.id, brand_id=first.brand_id, key=first.topic
        )
        if first.topic
        else True
    )

    def allowed(channel: str, klass: str) -> np.ndarray:
        kind = CHANNEL_CONTACT.get(channel)
        ok = (contact & CONTACT_BITS[kind]) > 0 if kind else np.zeros(n, dtype=bool)
        if klass != "transactional" and first.topic:
            subscribed = ((consent & TOPIC_GRANTED_BIT) > 0) | (
                ((consent & TOPIC_REVOKED_BIT) == 0) & topic_default
            )
            ok &= subscribed
        if klass == "marketing":
            ok &= (consent & PD_BIT) > 0
            ok &= (consent & advertising_bit(channel)) > 0
        return ok

    klass = first.message_class
    steps = first.steps
    chosen = np.full(n, -1, dtype=np.int64)
    for index, step in enumerate(steps):
        free = chosen < 0
        chosen[free & allowed(step.channel, klass)] = index
    status = np.full(n, SCHEDULED, dtype=object)
    reason = np.full(n, "ok", dtype=object)
    rule = np.full(n, None, dtype=object)

    def suppress(mask: np.ndarray, why: str, by: str | None) -> None:
        mask = mask & (status == SCHEDULED)
        status[mask], reason[mask], rule[mask] = SUPPRESSED, why, by

    suppress(~known, "no_contact", "customer_unknown")
    start = max(now, to_seconds(first.not_before) if first.not_before else now)
    expires = lifetime_end(first, start)
    if start > expires:
        suppress(np.ones(n, dtype=bool), "expired", None)
    none = chosen < 0
    if none.any():
        wanted_kinds = {CHANNEL_CONTACT.get(s.channel) for s in steps} - {None}
        bits = sum(CONTACT_BITS[k] for k in wanted_kinds if k)
        no_contact = (contact & bits) == 0
        suppress(none & no_contact, "no_contact", "consent")
        if klass == "marketing":
            service_ok = np.zeros(n, dtype=bool)
            for step in steps:
                service_ok |= allowed(step.channel, "service")
            suppress(none & service_ok, "no_advertising_consent", "consent")
        suppress(none, "unsubscribed_topic", "consent")

    # -- history --------------------------------------------------------------------------
    since = now - int(HISTORY_WINDOW.total_seconds())
    h_rows = _rows_in(
        session,
        select(
            ContactDecision.customer_id,
            epoch_seconds(session, ContactDecision.send_at),
            ContactDecision.channel,
            ContactDecision.message_class,
            ContactDecision.batch_id,
        ).where(
            ContactDecision.workspace_id == workspace.id,
            ContactDecision.status.in_(COUNTED),
            ContactDecision.send_at >= datetime.fromtimestamp(since, UTC),
        ),
        cids,
        ContactDecision.customer_id,
    )
    order = np.argsort(cids, kind="stable")
    sorted_cids = cids[order]
    h_cid = np.array([r[0] for r in h_rows], dtype=np.int64)
    where = np.searchsorted(sorted_cids, h_cid)
    where = np.clip(where, 0, max(n - 1, 0))
    in_batch = (sorted_cids[where] == h_cid) if n else np.zeros(0, dtype=bool)
    h_pos = order[where[in_batch]]
    kept = [r for r, keep in zip(h_rows, in_batch, strict=True) if keep]
    h_at = np.array([int(r[1]) for r in kept], dtype=np.int64)
    h_channel = np.array([r[2] for r in kept], dtype=object)
    h_class = np.array([r[3] for r in kept], dtype=object)
    h_batch = np.array([r[4] for r in kept], dtype=np.int64)
    batch_info = store.batches(session, sorted(set(h_batch.tolist())))
    base = since - WEEK

    if first.dedupe_key:
        taken = store.active_dedupe_keys(
            session,
            workspace.id,
            [(int(c), first.dedupe_key) for c in cids],
            datetime.fromtimestamp(now, UTC),
        )
        dup = np.array([(int(c), first.dedupe_key) in taken for c in cids], dtype=bool)
        suppress(dup, "duplicate", "dedupe")

    # exclusive groups and held-out sources
    if first.exclusive_group and len(h_batch):
        same_group = np.array(
            [
                batch_info[b].exclusive_group == first.exclusive_group
                and batch_info[b].source != first.source
                for b in h_batch.tolist()
            ],
            dtype=bool,
        )
        close = np.abs(h_at - start) < EXCLUSIVE_WINDOW
        held = np.zeros(n, dtype=bool)
        held[h_pos[same_group & close]] = True
        suppress(held, "held_out", f"exclusive_group:{first.exclusive_group}")
    if first.source in rules.held_out_sources:
        suppress(np.ones(n, dtype=bool), "held_out", f"held_out_source:{first.source}")
    # -- placement ------------------------------------------------------------------------
    channel_of = np.array([steps[c].channel if c >= 0 else None for c in chosen], dtype=object)
    tags = frozenset(first.tags) | ({first.topic} if first.topic else frozenset())
    h_tags = {b: store.batch_tags(info) for b, info in batch_info.items()}
    t = np.full(n, start, dtype=np.int64)
    if klass != "transactional":
        _place_all(
            t,
            status,
            reason,
            rule,
            channel_of,
            tz,
            tz_names,
            expires,
            klass,
            tags,
            rules,
            h_pos,
            h_at,
            h_channel,
            h_class,
            h_batch,
            h_tags,
            base,
        )
    late = (status == SCHEDULED) & (t > expires)
    reason[late] = [final_reason(r) for r in reason[late]]
    status[late] = SUPPRESSED

    # -- write ----------------------------------------------------------------------------
    scheduled = status == SCHEDULED
    cost = np.zeros(n, dtype=np.int64)
    for index, step in enumerate(steps):
        cost[scheduled & (chosen == index)] = prices.get(step.channel, 0)
    send_at = np.where(scheduled, t, -1)
    step_of = np.where(scheduled, chosen, 0)
    channel_out = channel_of.copy()
    channel_out[~scheduled] = None
    ids = _write(
        session,
        first,
        rules,
        now,
        expires,
        cids,
        status,
        reason,
        rule,
        channel_out,
        step_of,
        send_at,
        cost,
    )
    return Outcome(
        decision_ids=ids,
        customer_ids=cids,
        status=status,
        reason=reason,
        rule=rule,
        channel=channel_out,
        step=step_of,
        send_at=send_at,
        cost=cost,
    )


def _validzone(name: str) -> bool:
    try:
        zone(name)
    except Exception:
        return False
    return True


def _place_all(
    t: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
    rule: np.ndarray,
    channel_of: np.ndarray,
    tz: np.ndarray,
    tz_names: list[str],
    expires: int,
    klass: str,
    tags: frozenset[str],
    rules: EffectiveRules,
    h_pos: np.ndarray,
    h_at: np.ndarray,
    h_channel: np.ndarray,
    h_class: np.ndarray,
    h_batch: np.ndarray,
    h_tags: dict[int, frozenset[str]],
    base: int,
) -> None:
    """Move each customer's time forward until every cap, spacing rule and send window
    allows it (the vectorised twin of ``placement.place``)."""
    caps = []
    for scope, cap in rules.caps:
        if cap.message_class is not None and cap.message_class != klass:
            continue
        if cap.tag is not None and cap.tag not in tags:
            continue
        counts = np.array(
            [
                c != "transactional"
                and (cap.message_class is None or c == cap.message_class)
                and (cap.channel is None or ch == cap.channel)
                and (cap.tag is None or cap.tag in h_tags.get(b, frozenset()))
                for c, ch, b in zip(
                    h_class.tolist(), h_channel.tolist(), h_batch.tolist(), strict=True
                )
            ],
            dtype=bool,
        )
        caps.append((scope, cap, _Counter(h_pos[counts], h_at[counts], base)))
    spacings = []
    for scope, rule_ in rules.spacing:
        if rule_.message_class != klass:
            continue
        counts = (h_class == klass) & (
            (h_channel == rule_.channel) if rule_.channel else np.ones(len(h_class), bool)
        )
        spacings.append((scope, rule_, _Counter(h_pos[counts], h_at[counts], base)))
    windows = [(scope, w) for scope, w in rules.send_windows if klass in w.applies_to]

    active = np.flatnonzero(status == SCHEDULED)
    moved_full = np.zeros(len(t), dtype=bool)
    for _ in range(MAX_ROUNDS):
        if not len(active):
            return
        over = t[active] > expires
        done = active[over]
        reason[done] = [final_reason(r) for r in reason[done]]
        status[done] = SUPPRESSED
        active = active[~over]
        moved_full[active] = False
        for scope, cap, counter in caps:
            sub_mask = ~moved_full[active]
            if cap.channel is not None:
                sub_mask &= channel_of[active] == cap.channel
            sub = active[sub_mask]
            if not len(sub):
                continue
            name = rules.rule_name(scope, cap.id)
            if cap.period == "day":
                for zone_name in tz_names:
                    in_zone = tz[sub] == zone_name
                    zsub = sub[in_zone]
                    if not len(zsub):
                        continue
                    low, high = day_bounds_many(t[zsub], zone_name)
                    full = counter.count(zsub, low, high) >= cap.limit
                    hit = zsub[full]
                    t[hit] = high[full]
                    reason[hit], rule[hit] = "deferred_cap", name
                    moved_full[hit] = True
                continue
            if cap.limit <= 0:
                status[sub], reason[sub], rule[sub] = SUPPRESSED, "cap_exceeded", name
                moved_full[sub] = True
                continue
            past = counter.count(sub, t[sub] - WEEK + 1, t[sub] + 1)
            future = counter.count(sub, t[sub] + 1, t[sub] + WEEK)
            simple = future == 0
            over_cap = simple & (past >= cap.limit)
            hit = sub[over_cap]
            if len(hit):
                t[hit] = counter.nth(hit, t[hit] - WEEK + 1, past[over_cap] - cap.limit) + WEEK
                reason[hit], rule[hit] = "deferred_cap", name
            for one in sub[~simple].tolist():
                violated, leave = week_check(counter.times(one), int(t[one]), cap.limit)
                if violated:
                    if leave is None:
                        status[one], reason[one], rule[one] = SUPPRESSED, "cap_exceeded", name
                    else:
                        t[one] = leave
                        reason[one], rule[one] = "deferred_cap", name
                    hit = np.append(hit, one)
            moved_full[hit] = True
        for scope, rule_, counter in spacings:
            sub = active[~moved_full[active]]
            if not len(sub):
                break
            gap = int(rule_.min_hours * 3600)
            near = counter.count(sub, t[sub] - gap + 1, t[sub] + gap) > 0
            hit = sub[near]
            if len(hit):
                t[hit] = counter.last_before(hit, t[hit] + gap) + gap
                reason[hit], rule[hit] = "deferred_spacing", rules.rule_name(scope, rule_.id)
                moved_full[hit] = True
        for scope, windows_ in windows:
            sub = active[~moved_full[active]]
            if not len(sub):
                break
            for zone_name in tz_names:
                zsub = sub[tz[sub] == zone_name]
                if not len(zsub):
                    continue
                allowed = next_allowed_many(t[zsub], zone_name, windows_)
                never = allowed < 0
                gone = zsub[never]
                status[gone], reason[gone] = SUPPRESSED, "quiet_hours_until_expiry"
                rule[gone] = f"{scope}:send_windows"
                shift = ~never & (allowed != t[zsub])
                hit = zsub[shift]
                t[hit] = allowed[shift]
                reason[hit], rule[hit] = "deferred_quiet_hours", f"{scope}:send_windows"
                moved_full[zsub[never | shift]] = True
        still = active[moved_full[active]]
        active = still[status[still] == SCHEDULED]
    reason[active] = [final_reason(r) for r in reason[active]]
    status[active] = SUPPRESSED


def _write(
    session: Session,
    first: Intent,
    rules: EffectiveRules,
    now: int,
    expires: int,
    cids: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
    rule: np.ndarray,
    channel: np.ndarray,
    step: np.ndarray,
    send_at: np.ndarray,
    cost: np.ndarray,
) -> np.ndarray:
    """Record the batch and its decisions with one bulk insert."""
    stamp = datetime.fromtimestamp(now, UTC)
    batch_id = store.insert_batch(
        session,
        {
            "workspace_id": first.workspace_id,
            "brand_id": first.brand_id,
            "source": first.source[:200],
            "message_class": first.message_class,
            "topic": first.topic,
            "tags": list(first.tags),
            "steps": steps_json(first),
            "exclusive_group": first.exclusive_group,
            "is_test": first.is_test,
            "reference": first.reference,
            "rule_versions": dict(rules.versions),
            "intents": len(cids),
            "decided_at": stamp,
        },
    )
    table = ContactDecision.__table__
    ids = np.array(reserve_ids(session, table, len(cids)), dtype=np.int64)  # type: ignore[arg-type]
    sqlite = session.get_bind().dialect.name == "sqlite"

    def moment(seconds: int) -> Any:
        value = datetime.fromtimestamp(seconds, UTC)
        # SQLite keeps timestamps as text in SQLAlchemy's own format; match it exactly so
        # comparisons in SQL order correctly
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else value

    updated, expires_at = moment(now), moment(expires)
    window = first.dedupe_window or timedelta(hours=rules.dedupe_window_hours)
    dedupe_until = moment(now + int(window.total_seconds())) if first.dedupe_key else None
    columns = (
        "id",
        "batch_id",
        "workspace_id",
        "customer_id",
        "message_class",
        "status",
        "reason",
        "rule",
        "channel",
        "step",
        "cost",
        "send_at",
        "expires_at",
        "updated_at",
        "priority",
        "expected_value",
        "dedupe_key",
        "dedupe_until",
    )
    rows = [
        (
            int(ids[i]),
            batch_id,
            first.workspace_id,
            int(cids[i]),
            first.message_class,
            status[i],
            reason[i],
            rule[i],
            channel[i],
            int(step[i]),
            int(cost[i]),
            moment(int(send_at[i])) if send_at[i] >= 0 else None,
            expires_at,
            updated,
            first.priority,
            first.expected_value,
            first.dedupe_key,
            dedupe_until,
        )
        for i in range(len(cids))
    ]
    copy_rows(session, table, columns, rows)  # type: ignore[arg-type]
    return ids
