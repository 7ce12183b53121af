"""Shapes of the loyalty API and of a program's rules.

Money is in minor units (kopecks, cents) and points are integers. Rates are in basis points
(1 bp = 0.01 %), multipliers in percent (200 = double points).
"""

from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Key = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")
MAX_POINTS = 10**12
MAX_MONEY = 10**12

# -- rules -------------------------------------------------------------------------------


class TierRule(BaseModel):
    """A tier and its benefits; a customer holds the highest tier their spend reaches."""

    model_config = ConfigDict(extra="forbid")

    key: str = Key
    name: str = Field(min_length=1, max_length=100)
    min_spend: int = Field(
        ge=0, le=MAX_MONEY, description="rolling 12-month spend (minor units) that earns it"
    )
    accrual_bp: int = Field(
        ge=0, le=10_000, description="points' value accrued, as basis points of the paid amount"
    )
    redeem_cap_bp: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="share of a receipt payable with points; the program's cap when empty",
    )


class Promotion(BaseModel):
    """A period when matching lines earn more (the best matching promotion applies)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    starts_at: datetime
    ends_at: datetime
    multiplier_pct: int = Field(ge=100, le=10_000)
    category_ids: list[str] = Field(default_factory=list, description="empty: every category")
    product_ids: list[str] = Field(default_factory=list, description="empty: every product")
    store_ids: list[str] = Field(default_factory=list, description="empty: every store")

    @model_validator(mode="after")
    def _period(self) -> Promotion:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a time zone offset")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class FraudLimits(BaseModel):
    """Velocity limits (refuse) and burst thresholds (flag for review)."""

    model_config = ConfigDict(extra="forbid")

    account_per_hour: int = Field(default=20, ge=1, description="confirms per card per hour")
    terminal_per_minute: int = Field(default=60, ge=1, description="confirms per terminal")
    store_per_minute: int = Field(default=600, ge=1, description="confirms per store")
    burst_redemptions: int = Field(
        default=3,
        ge=2,
        le=100_000,
        description="redemptions of one account within burst_minutes that flag it",
    )
    terminal_burst_redemptions: int = Field(
        default=30,
        ge=2,
        le=100_000,
        description="redemptions at one terminal within burst_minutes that flag it",
    )
    burst_minutes: int = Field(default=10, ge=1, le=24 * 60)


class ProgramRules(BaseModel):
    """Everything that decides how many points a receipt earns and may spend."""

    model_config = ConfigDict(extra="forbid")

    point_value: int = Field(
        default=100, ge=1, le=1_000_000, description="minor units one point pays for"
    )
    tiers: list[TierRule] = Field(
        default_factory=lambda: [TierRule(key="base", name="Base", min_spend=0, accrual_bp=500)],
        min_length=1,
        max_length=20,
    )
    category_multipliers: dict[str, int] = Field(
        default_factory=dict, description="category id → percent (200 = double points)"
    )
    product_multipliers: dict[str, int] = Field(
        default_factory=dict, description="product id → percent; wins over the category's"
    )
    promotions: list[Promotion] = Field(default_factory=list, max_length=200)
    welcome_bonus: int = Field(default=0, ge=0, le=MAX_POINTS)
    birthday_bonus: int = Field(default=0, ge=0, le=MAX_POINTS)
    bonus_valid_days: int | None = Field(
        default=None,
        ge=1,
        le=3660,
        description="welcome and birthday bonuses expire after this many days (else like accruals)",
    )
    redeem_cap_bp: int = Field(default=3000, ge=0, le=10_000)
    return_period_days: int = Field(
        default=14, ge=0, le=365, description="accruals stay pending this long (0: none)"
    )
    expiry_months: int | None = Field(
        default=12, ge=1, le=120, description="points expire this many months after accrual"
    )
    tier_review_months: Literal[1, 3, 6, 12] = Field(
        default=3, description="downgrades happen only at the end of these calendar periods"
    )
    redeem_requires_code: bool = Field(
        default=True,
        description="spending needs the app's rotating redemption code (a card number or "
        "phone alone cannot spend)",
    )
    limits: FraudLimits = Field(default_factory=FraudLimits)

    @field_validator("category_multipliers", "product_multipliers")
    @classmethod
    def _multipliers(cls, value: dict[str, int]) -> dict[str, int]:
        for key, pct in value.items():
            if not 0 <= pct <= 10_000:
                raise ValueError(f"multiplier of {key!r} must be 0..10000 percent")
        return value

    @model_validator(mode="after")
    def _tiers(self) -> ProgramRules:
        keys = [t.key for t in self.tiers]
        if len(set(keys)) != len(keys):
            raise ValueError("tier keys repeat")
        spends = [t.min_spend for t in self.tiers]
        if spends[0] != 0:
            raise ValueError("the first tier is the base tier: its min_spend is 0")
        if any(b <= a for a, b in pairwise(spends)):
            raise ValueError("tiers are listed by strictly growing min_spend")
        return self


# -- programs and accounts ---------------------------------------------------------------


class ProgramIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    brand_id: int | None = Field(default=None, description="empty: the whole workspace")
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    timezone: str | None = Field(default=None, max_length=64)
    rules: ProgramRules = Field(default_factory=ProgramRules)


class ProgramOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    brand_id: int | None
    name: str
    currency: str
    timezone: str
    rules: ProgramRules
    version: int
    created_at: datetime
    updated_at: datetime


class EnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    program_id: int
    customer_id: int
    status: str = Field(description="active, blocked (no redemptions) or merged")
    status_reason: str | None
    merged_into_id: int | None
    tier: str
    tier_since: datetime
    tier_review_at: datetime | None
    balance: int = Field(description="points available now")
    pending: int = Field(description="points waiting for the return period to end")
    created_at: datetime


class LotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    state: str
    points: int
    remaining: int
    available_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    lot_id: int
    bucket: str
    kind: str
    points: int


class TransactionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    idempotency_key: str
    correlation_key: str | None
    reverses_id: int | None
    receipt_id: str | None
    store_id: str | None
    terminal_id: str | None
    amount: int
    spend: int
    points: int
    actor: str
    reason: str | None
    details: dict[str, Any]
    created_at: datetime
    lines: list[LineOut] = Field(default_factory=list)


class AccountDetail(AccountOut):
    lots: list[LotOut]


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(ge=-MAX_POINTS, le=MAX_POINTS, description="positive adds, negative takes")
    reason: str = Field(min_length=5, max_length=1000)
    idempotency_key: str = Field(min_length=1, max_length=150)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=5, max_length=300)


# -- POS ---------------------------------------------------------------------------------


class Identifier(BaseModel):
    """How the POS names the customer: card number, phone, or a code from the app."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["card", "phone", "code"]
    value: str = Field(min_length=1, max_length=64)


class ReceiptLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, le=100_000)
    product_id: str = Field(min_length=1, max_length=64)
    category_id: str | None = Field(default=None, max_length=64)
    quantity: float = Field(default=1, gt=0, le=1_000_000)
    amount: int = Field(ge=0, le=MAX_MONEY, description="what the line costs, minor units")


class PosContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program_id: int | None = Field(
        default=None, description="empty: the program of the key's brand, else the workspace's"
    )
    store_id: str = Field(min_length=1, max_length=64)
    terminal_id: str = Field(min_length=1, max_length=64)


class IdentifyIn(PosContext):
    customer: Identifier


class CalculateIn(PosContext):
    customer: Identifier
    receipt_id: str | None = Field(default=None, max_length=100)
    lines: list[ReceiptLineIn] = Field(min_length=1, max_length=1000)
    redeem_points: int = Field(default=0, ge=0, le=MAX_POINTS)
    redeem_code: str | None = Field(
        default=None, max_length=64, description="the app's redemption code (needed to spend)"
    )

    @model_validator(mode="after")
    def _lines(self) -> CalculateIn:
        numbers = [line.line_no for line in self.lines]
        if len(numbers) != len(set(numbers)):
            raise ValueError("line_no values repeat")
        return self


class ConfirmIn(CalculateIn):
    pos_transaction_id: str = Field(
        min_length=1, max_length=150, description="unique per program; a replay changes nothing"
    )


class RefundLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=1, le=100_000)
    amount: int = Field(gt=0, le=MAX_MONEY, description="refunded part of the line's amount")


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program_id: int | None = None
    pos_transaction_id: str = Field(min_length=1, max_length=150, description="this refund's id")
    original_pos_transaction_id: str = Field(min_length=1, max_length=150)
    store_id: str | None = Field(default=None, max_length=64)
    terminal_id: str | None = Field(default=None, max_length=64)
    lines: list[RefundLineIn] | None = Field(default=None, min_length=1, max_length=1000)
    amount: int | None = Field(default=None, gt=0, le=MAX_MONEY)

    @model_validator(mode="after")
    def _what(self) -> RefundIn:
        if (self.lines is None) == (self.amount is None):
            raise ValueError("give either lines (per-line refund) or amount (share of the total)")
        return self


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program_id: int | None = None
    original_pos_transaction_id: str = Field(min_length=1, max_length=150)
    store_id: str | None = Field(default=None, max_length=64)
    terminal_id: str | None = Field(default=None, max_length=64)


class TierBenefits(BaseModel):
    key: str
    name: str
    accrual_bp: int
    redeem_cap_bp: int
    next_tier: str | None
    spend_to_next_tier: int | None
    rolling_spend: int


class IdentifyOut(BaseModel):
    program_id: int
    account_id: int | None = Field(description="empty until the first confirm or enrolment")
    customer_id: int
    first_name: str | None
    tier: TierBenefits
    balance: int
    pending: int
    spendable: int = Field(description="available points not past their expiry")
    redeem_code_valid: bool = Field(description="a valid redemption code was presented")


class QuoteLineOut(BaseModel):
    line_no: int
    amount: int
    multiplier_pct: int
    redeemed_points: int
    paid: int
    accrued_points: int


class CalculateOut(BaseModel):
    program_id: int
    customer_id: int
    total: int
    max_redeemable: int
    redeem_points: int
    redeem_value: int = Field(description="minor units paid with points")
    to_pay: int = Field(description="minor units left to pay with money")
    accrued_points: int
    accrual_pending_until: datetime | None
    tier: TierBenefits
    promotions: list[str]
    lines: list[QuoteLineOut]


class ConfirmOut(BaseModel):
    transaction_id: int
    replayed: bool = Field(description="true when this POS transaction id was confirmed before")
    account_id: int
    customer_id: int
    total: int
    redeemed_points: int
    redeem_value: int
    to_pay: int
    accrued_points: int
    accrual_pending_until: datetime | None
    balance: int
    pending: int
    tier: str
    tier_changed: bool
    lines: list[QuoteLineOut]


class RefundOut(BaseModel):
    transaction_id: int
    replayed: bool
    original_transaction_id: int
    refunded_amount: int
    restored_points: int = Field(description="points given back for the refunded part")
    clawed_back_points: int = Field(description="accrued points taken back")
    unrecovered_points: int = Field(
        description="accrued points the customer had already spent (not taken back)"
    )
    money_to_return: int = Field(description="refunded amount minus the restored points' value")
    balance: int
    pending: int


# -- app devices and codes ----------------------------------------------------------------


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int
    label: str | None = Field(default=None, max_length=100)


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int
    ref: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class DeviceEnrolled(DeviceOut):
    secret: str = Field(description="base32 TOTP secret: shown once, kept only by the app")
    accrual_code: dict[str, Any] = Field(description="how the app makes its accrual code")
    redemption_code: dict[str, Any] = Field(description="how the app makes its redemption code")


# -- gift cards -------------------------------------------------------------------------


class GiftCardIssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(gt=0, le=MAX_MONEY)
    count: int = Field(default=1, ge=1, le=1000)
    brand_id: int | None = None
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    expires_on: date | None = None
    customer_id: int | None = Field(default=None, description="the holder, when known")


class GiftCardIssued(BaseModel):
    id: int
    number: str
    pin: str = Field(description="shown once; only its hash is kept")
    amount: int
    currency: str
    expires_at: datetime | None


class GiftCardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: str
    status: str
    currency: str
    initial_amount: int
    balance: int
    customer_id: int | None
    expires_at: datetime | None
    created_at: datetime
    activated_at: datetime | None


class GiftCardPos(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=4, max_length=32)
    store_id: str = Field(min_length=1, max_length=64)
    terminal_id: str = Field(min_length=1, max_length=64)


class GiftCardActivateIn(GiftCardPos):
    pos_transaction_id: str = Field(min_length=1, max_length=150)


class GiftCardBalanceIn(GiftCardPos):
    pin: str = Field(min_length=1, max_length=16)


class GiftCardRedeemIn(GiftCardBalanceIn):
    pos_transaction_id: str = Field(min_length=1, max_length=150)
    amount: int = Field(gt=0, le=MAX_MONEY)
    customer: Identifier | None = Field(default=None, description="who used it, when known")


class GiftCardRefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pos_transaction_id: str = Field(min_length=1, max_length=150)
    original_pos_transaction_id: str = Field(min_length=1, max_length=150)
    amount: int = Field(gt=0, le=MAX_MONEY)
    store_id: str = Field(min_length=1, max_length=64)
    terminal_id: str = Field(min_length=1, max_length=64)


class GiftCardBalanceOut(BaseModel):
    number: str
    status: str
    balance: int
    currency: str
    expires_at: datetime | None


class GiftCardOperationOut(GiftCardBalanceOut):
    entry_id: int
    amount: int
    replayed: bool


# -- anti-fraud and reports ------------------------------------------------------------


class FraudFlagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    program_id: int
    account_id: int | None
    store_id: str | None
    terminal_id: str | None
    kind: str
    details: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class ExpiryBucket(BaseModel):
    label: str = Field(description="YYYY-MM, 'overdue' (due, not yet processed), 'later', 'never'")
    starts_at: datetime | None
    ends_at: datetime | None
    points: int


class LiabilityOut(BaseModel):
    program_id: int
    as_of: datetime
    accounts_with_points: int
    available_points: int
    pending_points: int
    outstanding_points: int
    outstanding_value: int = Field(description="minor units the outstanding points pay for")
    currency: str
    expiry_profile: list[ExpiryBucket]


class ActivityPeriod(BaseModel):
    starts_at: datetime
    ends_at: datetime
    accrued: int = Field(description="points accrued on purchases, net of refunds")
    bonus: int = Field(description="welcome and birthday bonuses")
    redeemed: int = Field(description="points spent, net of refunds")
    expired: int
    adjusted: int = Field(description="net manual adjustments")


class ActivityOut(BaseModel):
    program_id: int
    period: str
    timezone: str
    periods: list[ActivityPeriod]
    totals: ActivityPeriod


class VerifyOut(BaseModel):
    accounts: int
    mismatches: list[dict[str, Any]]
