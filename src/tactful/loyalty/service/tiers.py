"""Tiers from the rolling 12-month spend: an upgrade happens at once, a downgrade only at the
end of the program's review period. Every change is recorded and emitted as an event."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from tactful.core import domain_events
from tactful.loyalty import store
from tactful.loyalty.schemas import TierRule
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service.events import TIER_CHANGED, TIER_CHANGED_EVENT, emit
from tactful.loyalty.service.programs import ProgramView
from tactful.loyalty.store import AccountRow


def rolling_spend(session: Session, *, account: AccountRow, at: datetime) -> int:
    """Net spend of the account (and of accounts merged into it) over the last 12 months."""
    return store.rolling_spend(session, account.id, calc.spend_window_start(at))


def change_tier(
    session: Session,
    *,
    program: ProgramView,
    account: AccountRow,
    to: TierRule,
    reason: str,
    spend: int,
    at: datetime,
) -> None:
    """Move the account to tier ``to``: record it, emit it, and schedule its next review."""
    rules = program.rules
    previous = account.tier
    account.tier, account.tier_since = to.key, at
    account.tier_review_at = (
        None
        if calc.tier_rank(rules, to.key) == 0
        else calc.period_end(at, rules.tier_review_months, program.timezone)
    )
    store.update_account(
        session,
        account.id,
        {
            "tier": account.tier,
            "tier_since": at,
            "tier_review_at": account.tier_review_at,
            "updated_at": at,
        },
    )
    store.insert_tier_change(
        session,
        {
            "account_id": account.id,
            "program_id": program.id,
            "from_tier": previous,
            "to_tier": to.key,
            "reason": reason,
            "spend": spend,
            "at": at,
        },
    )
    properties = {
        "account_id": account.id,
        "tier": to.key,
        "tier_name": to.name,
        "previous_tier": previous,
        "direction": "up"
        if calc.tier_rank(rules, to.key) > calc.tier_rank(rules, previous)
        else "down",
        "reason": reason,
        "rolling_spend": spend,
    }
    key = f"tier:{account.id}:{previous}>{to.key}:{at.isoformat()}"
    emit(
        session,
        program=program,
        customer_id=account.customer_id,
        at=at,
        events=[(key, TIER_CHANGED, properties)],
    )
    domain_events.publish(
        session,
        TIER_CHANGED_EVENT,
        {
            "workspace_id": program.workspace_id,
            "customer_id": account.customer_id,
            "at": at.isoformat(),
            "program_id": program.id,
            **properties,
        },
        key=key,
    )


def upgrade_if_earned(
    session: Session,
    *,
    program: ProgramView,
    account: AccountRow,
    at: datetime,
    spend: int | None = None,
) -> bool:
    """Upgrade at once when the rolling spend (read unless given) reaches a higher tier;
    True if it did."""
    rules = program.rules
    if calc.next_tier(rules, account.tier) is None:
        return False
    if spend is None:
        spend = rolling_spend(session, account=account, at=at)
    target = calc.tier_for_spend(rules, spend)
    if calc.tier_rank(rules, target.key) <= calc.tier_rank(rules, account.tier):
        return False
    change_tier(
        session, program=program, account=account, to=target, reason="upgrade", spend=spend, at=at
    )
    return True


def review_tier(
    session: Session, *, program: ProgramView, account: AccountRow, at: datetime
) -> bool:
    """At the end of a review period: keep, lower (or raise) the tier to what the rolling
    spend earns; True if the tier changed."""
    if account.tier_review_at is None or account.tier_review_at > at:
        return False
    rules = program.rules
    spend = rolling_spend(session, account=account, at=at)
    target = calc.tier_for_spend(rules, spend)
    if target.key != account.tier:
        change_tier(
            session,
            program=program,
            account=account,
            to=target,
            reason="review",
            spend=spend,
            at=at,
        )
        return True
    account.tier_review_at = calc.period_end(at, rules.tier_review_months, program.timezone)
    store.update_account(session, account.id, {"tier_review_at": account.tier_review_at})
    return False


def benefits(program: ProgramView, *, tier_key: str, spend: int) -> dict[str, object]:
    """What a tier gives and how far the next one is."""
    rules = program.rules
    tier = calc.tier_by_key(rules, tier_key)
    upcoming = calc.next_tier(rules, tier.key)
    return {
        "key": tier.key,
        "name": tier.name,
        "accrual_bp": tier.accrual_bp,
        "redeem_cap_bp": calc.redeem_cap_bp(rules, tier),
        "next_tier": upcoming.key if upcoming else None,
        "spend_to_next_tier": max(0, upcoming.min_spend - spend) if upcoming else None,
        "rolling_spend": spend,
    }
