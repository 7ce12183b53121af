"""Where a message may go in time: caps, spacing and send windows, in whole seconds.

Times are integer Unix seconds (the policy truncates "now" to the second), so the scalar
path here and the vectorised bulk path compare exactly the same numbers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tactful.policy.rules import EffectiveRules
from tactful.policy.schemas import CapRule
from tactful.policy.timing import next_allowed, next_local_day_start

WEEK = 7 * 24 * 3600
MAX_ROUNDS = 60


def to_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def from_seconds(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone_or(name: str | None, fallback: str) -> str:
    """A usable IANA zone name: the customer's, else the workspace's."""
    if name:
        try:
            zone(name)
        except (ZoneInfoNotFoundError, ValueError):
            return fallback
        return name
    return fallback


@lru_cache(maxsize=200_000)
def day_bounds(t: int, tz: str) -> tuple[int, int]:
    """The customer's calendar day containing ``t``: [start, end) in seconds."""
    moment = from_seconds(t).astimezone(zone(tz))
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    end = next_local_day_start(start.astimezone(UTC), zone(tz))
    return to_seconds(start.astimezone(UTC)), to_seconds(end)


@dataclass
class Booked:
    """A message that went or will go out, as caps and spacing see it."""

    at: int
    channel: str | None
    message_class: str
    tags: frozenset[str]
    source: str
    priority: int
    exclusive_group: str | None
    in_batch: bool = False


def cap_counts(cap: CapRule, channel: str | None, message_class: str, tags: frozenset[str]) -> bool:
    """Whether a message of this channel, class and tags counts towards ``cap``."""
    if message_class == "transactional":
        return False
    if cap.message_class is not None and cap.message_class != message_class:
        return False
    if cap.channel is not None and cap.channel != channel:
        return False
    return cap.tag is None or cap.tag in tags


def week_check(times: list[int], t: int, limit: int) -> tuple[bool, int | None]:
    """Whether a message at ``t`` would overfill a 7-day window that contains it, and if so
    the earliest later moment worth trying (None: never).

    The windows are (e - 7d, e] for e = t and for every booked time e in [t, t + 7d): the
    count only rises at those ends. ``times`` is sorted.
    """
    if limit <= 0:
        return True, None
    anchors = [t] + [x for x in times[bisect.bisect_left(times, t) :] if x < t + WEEK]
    for end in anchors:
        low = bisect.bisect_right(times, end - WEEK)
        high = bisect.bisect_right(times, end)
        count = high - low
        if count >= limit:
            # once the (count - limit + 1)-th oldest leaves, the window has room
            return True, times[low + count - limit] + WEEK
    return False, None


def place(
    *,
    start: int,
    expires: int,
    channel: str,
    message_class: str,
    tags: frozenset[str],
    tz: str,
    rules: EffectiveRules,
    booked: list[Booked],
    spacing: bool = True,
    any_channel_caps: bool = True,
) -> tuple[int | None, str, str | None, list[Booked]]:
    """The first moment from ``start`` that every cap, spacing rule and send window allows.

    Returns ``(moment or None, reason, rule, booked messages that filled the binding cap)``.
    A scheduled message carries its first deferral's reason (why it is not sent at once); a
    suppressed one the cause that outlasted it.
    the reason is "ok" or the last deferral's, or the final suppression's when nothing fits
    before ``expires``.
    """
    t = start
    reason, rule = "ok", None
    first: tuple[str, str | None] = ("ok", None)
    blockers: list[Booked] = []
    transactional = message_class == "transactional"
    for _ in range(MAX_ROUNDS):
        if t > expires:
            return None, final_reason(reason), rule, blockers
        moved = False
        if not transactional:
            for scope, cap in rules.caps:
                if not cap_counts(cap, channel, message_class, tags):
                    continue
                if cap.channel is None and not any_channel_caps:
                    continue
                relevant = [
                    b for b in booked if cap_counts(cap, b.channel, b.message_class, b.tags)
                ]
                if cap.period == "day":
                    low, high = day_bounds(t, tz)
                    used = [b for b in relevant if low <= b.at < high]
                    if len(used) >= cap.limit:
                        t, moved = high, True
                else:
                    times = sorted(b.at for b in relevant)
                    violated, leave = week_check(times, t, cap.limit)
                    used = [b for b in relevant if abs(b.at - t) < WEEK]
                    if violated:
                        if leave is None:
                            return None, "cap_exceeded", rules.rule_name(scope, cap.id), used
                        t, moved = leave, True
                if moved:
                    reason, rule, blockers = "deferred_cap", rules.rule_name(scope, cap.id), used
                    first = first if first[0] != "ok" else (reason, rule)
                    break
            if moved:
                continue
        if spacing and not transactional:
            for scope, rule_ in rules.spacing:
                if rule_.message_class != message_class:
                    continue
                gap = int(rule_.min_hours * 3600)
                near = [
                    b.at
                    for b in booked
                    if b.message_class == message_class
                    and (rule_.channel is None or b.channel == rule_.channel)
                    and abs(b.at - t) < gap
                ]
                if near:
                    reason, rule = "deferred_spacing", rules.rule_name(scope, rule_.id)
                    first = first if first[0] != "ok" else (reason, rule)
                    t, moved = max(near) + gap, True
                    break
            if moved:
                continue
        if not transactional:
            for scope, windows in rules.send_windows:
                if message_class not in windows.applies_to:
                    continue
                allowed = next_allowed(from_seconds(t), zone(tz), windows)
                if allowed is None:
                    return None, "quiet_hours_until_expiry", f"{scope}:send_windows", blockers
                allowed_s = to_seconds(allowed)
                if allowed_s != t:
                    reason, rule = "deferred_quiet_hours", f"{scope}:send_windows"
                    first = first if first[0] != "ok" else (reason, rule)
                    t, moved = allowed_s, True
                    break
            if moved:
                continue
        if t > expires:
            return None, final_reason(reason), rule, blockers
        return t, *first, blockers
    return None, final_reason(reason), rule, blockers


def final_reason(reason: str) -> str:
    """The suppression reason when the last deferral's cause outlasts the message."""
    return {
        "deferred_cap": "cap_exceeded",
        "deferred_spacing": "spacing",
        "deferred_quiet_hours": "quiet_hours_until_expiry",
        "lost_arbitration": "lost_arbitration",
        "ok": "expired",
    }.get(reason, reason)
