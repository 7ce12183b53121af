"""Rule arithmetic without a database: accrual by tier, multipliers, promotions, the
redemption cap, allocation across lines, expiry dates and calendar periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tactful.loyalty.schemas import ProgramRules, Promotion, TierRule
from tactful.loyalty.service import rules as calc
from tests.loyalty.conftest import make_rules

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def line(
    no: int, amount: int, *, product: str = "P", category: str | None = None
) -> calc.ReceiptLine:
    return calc.ReceiptLine(no, f"{product}{no}", category, amount)


def test_base_tier_accrues_on_the_part_paid_with_money() -> None:
    rules = make_rules()
    tier = calc.tier_by_key(rules, "base")
    quote = calc.quote(
        rules,
        tier=tier,
        lines=[line(1, 60_000), line(2, 40_000)],
        spendable=1_000,
        redeem_points=100,
        at=AT,
        store_id="S1",
    )
    # 100 points = 100.00 RUB split 60/40; 5 % of the 900.00 RUB paid = 45 points
    assert (quote.total, quote.cap_points, quote.max_redeemable) == (100_000, 300, 300)
    assert (quote.redeem_value, quote.to_pay, quote.accrued_points) == (10_000, 90_000, 45)
    assert [(x.redeemed_points, x.paid, x.accrued_points) for x in quote.lines] == [
        (60, 54_000, 27),
        (40, 36_000, 18),
    ]


def test_multipliers_promotions_and_gold_cap() -> None:
    rules = make_rules(
        category_multipliers={"garden": 200},
        product_multipliers={"P2": 300},
        promotions=[
            Promotion(
                name="Spring",
                starts_at=datetime(2026, 3, 1, tzinfo=UTC),
                ends_at=datetime(2026, 4, 1, tzinfo=UTC),
                multiplier_pct=150,
                category_ids=["garden"],
            ),
            Promotion(
                name="Later",
                starts_at=datetime(2026, 4, 1, tzinfo=UTC),
                ends_at=datetime(2026, 5, 1, tzinfo=UTC),
                multiplier_pct=500,
            ),
        ],
    )
    gold = calc.tier_by_key(rules, "gold")
    quote = calc.quote(
        rules,
        tier=gold,
        lines=[
            line(1, 10_000, category="garden"),  # ×2 by category, ×1.5 promo: 300 %
            line(2, 10_000, category="garden"),  # ×3 by product, ×1.5 promo: 450 %
            line(3, 10_000, category="tools"),  # 100 %
        ],
        spendable=50,
        redeem_points=0,
        at=AT,
        store_id="S1",
    )
    assert [x.multiplier_pct for x in quote.lines] == [300, 450, 100]
    # 10 % (gold) of 100.00 RUB per line: 10, 10, 10 points before multipliers
    assert [x.accrued_points for x in quote.lines] == [30, 45, 10]
    assert quote.promotions == ("Spring",)
    # gold may pay half the receipt with points, but the balance is 50
    assert (quote.cap_points, quote.max_redeemable) == (150, 50)


def test_one_rounding_per_receipt_and_line_figures_add_up() -> None:
    rules = make_rules()
    quote = calc.quote(
        rules,
        tier=calc.tier_by_key(rules, "base"),
        lines=[line(1, 1_990), line(2, 1_990), line(3, 1_990)],
        spendable=0,
        redeem_points=0,
        at=AT,
        store_id=None,
    )
    # 5 % of 59.70 RUB = 2.985 points: 2 for the receipt, not 0 + 0 + 0 per line
    assert quote.accrued_points == 2
    assert sum(x.accrued_points for x in quote.lines) == 2


@given(
    total=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=30),
)
def test_allocation_adds_up_and_follows_weights(total: int, weights: list[int]) -> None:
    parts = calc.allocate(total, weights)
    if sum(weights) == 0:
        assert parts == [0] * len(weights)
        return
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        exact = total * weight / sum(weights)
        assert exact - 1 < part < exact + 1


def test_tiers_from_spend() -> None:
    rules = make_rules()
    assert [calc.tier_for_spend(rules, s).key for s in (0, 2_999_999, 3_000_000, 10**7)] == [
        "base",
        "base",
        "silver",
        "gold",
    ]
    assert calc.next_tier(rules, "gold") is None
    assert calc.tier_by_key(rules, "retired").key == "base"


def test_rules_are_validated() -> None:
    with pytest.raises(ValidationError, match="base tier"):
        ProgramRules(tiers=[TierRule(key="x", name="X", min_spend=5, accrual_bp=1)])
    with pytest.raises(ValidationError, match="strictly growing"):
        ProgramRules(
            tiers=[
                TierRule(key="a", name="A", min_spend=0, accrual_bp=1),
                TierRule(key="b", name="B", min_spend=0, accrual_bp=2),
            ]
        )
    with pytest.raises(ValidationError, match="multiplier"):
        ProgramRules(category_multipliers={"x": 20_000})


def test_dates_months_and_periods() -> None:
    assert calc.add_months(datetime(2026, 1, 31, 10, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, 10, tzinfo=UTC
    )
    assert calc.add_months(datetime(2026, 3, 15, tzinfo=UTC), -12) == datetime(
        2025, 3, 15, tzinfo=UTC
    )
    rules = make_rules(expiry_months=12, return_period_days=14, bonus_valid_days=30)
    assert calc.expires_at(rules, AT) == datetime(2027, 3, 2, 9, tzinfo=UTC)
    assert calc.pending_until(rules, AT) == datetime(2026, 3, 16, 9, tzinfo=UTC)
    assert calc.bonus_expires_at(rules, AT) == datetime(2026, 4, 1, 9, tzinfo=UTC)
    # the quarter containing 2 March ends at local midnight on 1 April in Moscow (UTC+3)
    assert calc.period_end(AT, 3, "Europe/Moscow") == datetime(2026, 3, 31, 21, tzinfo=UTC)
    assert calc.month_boundaries(AT, 2, "Europe/Moscow") == [
        datetime(2026, 2, 28, 21, tzinfo=UTC),
        datetime(2026, 3, 31, 21, tzinfo=UTC),
        datetime(2026, 4, 30, 21, tzinfo=UTC),
    ]
    # local Monday weeks; 16 March 00:00 UTC is already in the week of 16 March in Moscow
    weeks = calc.period_boundaries(
        AT, datetime(2026, 3, 16, tzinfo=UTC), "week", "Europe/Moscow", limit=10
    )
    assert weeks == [
        datetime(2026, 3, 1, 21, tzinfo=UTC),
        datetime(2026, 3, 8, 21, tzinfo=UTC),
        datetime(2026, 3, 15, 21, tzinfo=UTC),
        datetime(2026, 3, 22, 21, tzinfo=UTC),
    ]


def test_promotion_on_a_multiplied_line_is_not_rounded_before_the_receipt() -> None:
    """The line multiplier times the promotion's was truncated to whole percent per line
    (150 % × 125 % = 187.5 % becomes 187 %) before the one rounding of the receipt, so the
    receipt earns less than ``paid × accrual × multiplier × promotion`` rounded down once."""
    rules = make_rules(
        category_multipliers={"garden": 150},
        promotions=[
            Promotion(
                name="Spring",
                starts_at=datetime(2026, 3, 1, tzinfo=UTC),
                ends_at=datetime(2026, 4, 1, tzinfo=UTC),
                multiplier_pct=125,
            )
        ],
    )
    quote = calc.quote(
        rules,
        tier=calc.tier_by_key(rules, "gold"),  # 10 %
        lines=[calc.ReceiptLine(1, "P1", "garden", 10_000_000)],  # 100,000.00 RUB
        spendable=0,
        redeem_points=0,
        at=AT,
        store_id="S1",
    )
    # 10 % of 100,000 RUB = 10,000 points, × 1.5 × 1.25 = 18,750 (187 % gives 18,700)
    assert quote.accrued_points == 18_750
    assert [x.accrued_points for x in quote.lines] == [18_750]
