"""Pure rule arithmetic: what a receipt earns and may spend, tiers, expiry dates, calendar
periods. No database here, so every rule is easy to test on its own."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tactful.loyalty.schemas import ProgramRules, Promotion, TierRule

BP = 10_000  # basis points in one
PCT = 100


@dataclass(frozen=True)
class ReceiptLine:
    line_no: int
    product_id: str
    category_id: str | None
    amount: int


@dataclass(frozen=True)
class LineQuote:
    line_no: int
    amount: int
    multiplier_pct: int
    redeemed_points: int
    paid: int
    accrued_points: int


@dataclass(frozen=True)
class Quote:
    """What a receipt earns and spends under a program's rules."""

    total: int
    tier: TierRule
    redeem_cap_bp: int
    cap_points: int  # the most points the receipt may take, whatever the balance
    max_redeemable: int  # min(cap_points, spendable)
    redeem_points: int
    redeem_value: int
    to_pay: int
    accrued_points: int
    lines: tuple[LineQuote, ...]
    promotions: tuple[str, ...]


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): the parts add up."""
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        return [0] * len(weights)
    parts = [total * w // weight_sum for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in remainders[: total - sum(parts)]:
        parts[i] += 1
    return parts


def tier_by_key(rules: ProgramRules, key: str) -> TierRule:
    """The tier with this key (the base tier if the rules no longer have it)."""
    for tier in rules.tiers:
        if tier.key == key:
            return tier
    return rules.tiers[0]


def tier_rank(rules: ProgramRules, key: str) -> int:
    for rank, tier in enumerate(rules.tiers):
        if tier.key == key:
            return rank
    return 0


def tier_for_spend(rules: ProgramRules, spend: int) -> TierRule:
    """The highest tier whose threshold the rolling spend reaches."""
    reached = rules.tiers[0]
    for tier in rules.tiers:
        if spend >= tier.min_spend:
            reached = tier
    return reached


def next_tier(rules: ProgramRules, key: str) -> TierRule | None:
    rank = tier_rank(rules, key)
    return rules.tiers[rank + 1] if rank + 1 < len(rules.tiers) else None


def redeem_cap_bp(rules: ProgramRules, tier: TierRule) -> int:
    return rules.redeem_cap_bp if tier.redeem_cap_bp is None else tier.redeem_cap_bp


def line_multiplier(rules: ProgramRules, line: ReceiptLine) -> int:
    """Percent: the product's multiplier, else its category's, else 100."""
    if line.product_id in rules.product_multipliers:
        return rules.product_multipliers[line.product_id]
    if line.category_id is not None and line.category_id in rules.category_multipliers:
        return rules.category_multipliers[line.category_id]
    return PCT


def best_promotion(
    rules: ProgramRules, line: ReceiptLine, at: datetime, store_id: str | None
) -> Promotion | None:
    """The running promotion with the highest multiplier that matches the line."""
    best: Promotion | None = None
    for promo in rules.promotions:
        if not promo.starts_at <= at < promo.ends_at:
            continue
        if promo.category_ids and line.category_id not in promo.category_ids:
            continue
        if promo.product_ids and line.product_id not in promo.product_ids:
            continue
        if promo.store_ids and store_id not in promo.store_ids:
            continue
        if best is None or promo.multiplier_pct > best.multiplier_pct:
            best = promo
    return best


def cap_points(rules: ProgramRules, tier: TierRule, total: int) -> int:
    """The most points a receipt of ``total`` minor units may take."""
    return total * redeem_cap_bp(rules, tier) // BP // rules.point_value


def quote(
    rules: ProgramRules,
    *,
    tier: TierRule,
    lines: Sequence[ReceiptLine],
    spendable: int,
    redeem_points: int,
    at: datetime,
    store_id: str | None,
) -> Quote:
    """Spend ``redeem_points`` (the caller checked it against ``max_redeemable``) and accrue
    on the part paid with money, line by line."""
    total = sum(line.amount for line in lines)
    cap = cap_points(rules, tier, total)
    redeemed = allocate(redeem_points, [line.amount for line in lines])
    paid = [
        max(0, line.amount - points * rules.point_value)
        for line, points in zip(lines, redeemed, strict=True)
    ]
    multipliers: list[int] = []
    promotions: list[str] = []
    numerators: list[int] = []
    for line, money in zip(lines, paid, strict=True):
        multiplier = line_multiplier(rules, line)
        promo = best_promotion(rules, line, at, store_id)
        boost = PCT if promo is None else promo.multiplier_pct
        if promo is not None and promo.name not in promotions:
            promotions.append(promo.name)
        multipliers.append(multiplier * boost // PCT)  # shown in whole percent
        numerators.append(money * tier.accrual_bp * multiplier * boost)
    # one rounding for the whole receipt (not one per line's multipliers), then shared out so
    # line figures add up
    accrued = sum(numerators) // (BP * PCT * PCT * rules.point_value)
    accrued_lines = allocate(accrued, numerators)
    redeem_value = redeem_points * rules.point_value
    return Quote(
        total=total,
        tier=tier,
        redeem_cap_bp=redeem_cap_bp(rules, tier),
        cap_points=cap,
        max_redeemable=max(0, min(cap, spendable)),
        redeem_points=redeem_points,
        redeem_value=redeem_value,
        to_pay=max(0, total - redeem_value),
        accrued_points=accrued,
        lines=tuple(
            LineQuote(
                line_no=line.line_no,
                amount=line.amount,
                multiplier_pct=multiplier,
                redeemed_points=points,
                paid=money,
                accrued_points=earned,
            )
            for line, multiplier, points, money, earned in zip(
                lines, multipliers, redeemed, paid, accrued_lines, strict=True
            )
        ),
        promotions=tuple(promotions),
    )


# -- dates ------------------------------------------------------------------------------------


def add_months(at: datetime, months: int) -> datetime:
    """The same moment ``months`` calendar months later (the day clamped to the month's end)."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def expires_at(rules: ProgramRules, at: datetime) -> datetime | None:
    """When points accrued at ``at`` expire."""
    return None if rules.expiry_months is None else add_months(at, rules.expiry_months)


def bonus_expires_at(rules: ProgramRules, at: datetime) -> datetime | None:
    """When a welcome or birthday bonus granted at ``at`` expires."""
    if rules.bonus_valid_days is not None:
        return at + timedelta(days=rules.bonus_valid_days)
    return expires_at(rules, at)


def pending_until(rules: ProgramRules, at: datetime) -> datetime | None:
    """When points accrued at ``at`` become available (None: at once)."""
    return at + timedelta(days=rules.return_period_days) if rules.return_period_days else None


def spend_window_start(at: datetime) -> datetime:
    """Start of the rolling 12 months that set tiers."""
    return add_months(at, -12)


def period_end(at: datetime, months: int, timezone: str) -> datetime:
    """The end (exclusive, UTC) of the calendar period of ``months`` months containing ``at``
    in ``timezone``: periods start on 1 January, and every ``months`` months after it."""
    local = at.astimezone(ZoneInfo(timezone))
    start_month = (local.month - 1) // months * months + 1
    start = local.replace(month=start_month, day=1, hour=0, minute=0, second=0, microsecond=0)
    return _local_month_start(add_months(start, months), timezone)


def _local_month_start(local: datetime, timezone: str) -> datetime:
    naive = datetime(local.year, local.month, 1)  # noqa: DTZ001 - made aware on the next line
    return naive.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def month_boundaries(at: datetime, count: int, timezone: str) -> list[datetime]:
    """Starts (UTC) of the local month containing ``at`` and of the ``count`` months after."""
    local = at.astimezone(ZoneInfo(timezone))
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return [_local_month_start(add_months(first, n), timezone) for n in range(count + 1)]


def period_boundaries(
    start: datetime, end: datetime, period: str, timezone: str, *, limit: int
) -> list[datetime]:
    """Local day/week (Monday)/month starts (UTC) covering ``[start, end)``; ``limit`` caps the
    number of periods: past it, the boundaries of ``limit + 1`` periods come back (so the
    caller can tell too many from exactly ``limit``)."""
    zone = ZoneInfo(timezone)
    local = start.astimezone(zone)
    day = datetime(local.year, local.month, local.day)  # noqa: DTZ001 - local wall clock
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    boundaries: list[datetime] = []
    while True:
        moment = day.replace(tzinfo=zone).astimezone(UTC)
        boundaries.append(moment)
        if moment >= end or len(boundaries) > limit + 1:
            break
        if period == "day":
            day += timedelta(days=1)
        elif period == "week":
            day += timedelta(days=7)
        else:
            day = add_months(day, 1)
    return boundaries
