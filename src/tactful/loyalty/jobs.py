"""Loyalty jobs and monitors: pending points becoming available, expiry, tier reviews,
birthday bonuses (one keyed job per due item), and merged customers' accounts folding into
the survivor's (and back out when the merge is undone)."""

from __future__ import annotations

from datetime import timedelta

from tactful.core.jobs.context import JobContext, MonitorContext
from tactful.core.jobs.queue import enqueue_many
from tactful.core.jobs.registry import job, monitor
from tactful.loyalty.service import accounts, giftcards

ACTIVATE_JOB = "loyalty.activate_lot"
EXPIRE_JOB = "loyalty.expire_lot"
REVIEW_JOB = "loyalty.review_tier"
BIRTHDAY_JOB = "loyalty.birthday_bonus"
MERGE_JOB = "loyalty.merge_accounts"
UNMERGE_JOB = "loyalty.unmerge_accounts"


@job(ACTIVATE_JOB)
def activate_lot(ctx: JobContext) -> None:
    """Pending points become available once the return period is over."""
    accounts.activate_lot(ctx.session, lot_id=int(ctx.payload["lot_id"]))


@job(EXPIRE_JOB)
def expire_lot(ctx: JobContext) -> None:
    """What is left of a lot past its expiry expires, as its own ledger entry."""
    accounts.expire_lot(ctx.session, lot_id=int(ctx.payload["lot_id"]))


@job(REVIEW_JOB)
def review_tier(ctx: JobContext) -> None:
    """At a review period's end the tier follows the rolling 12-month spend (downgrades)."""
    accounts.review_tier(ctx.session, account_id=int(ctx.payload["account_id"]))


@job(BIRTHDAY_JOB)
def birthday_bonus(ctx: JobContext) -> None:
    """The birthday bonus, once per account and year."""
    accounts.grant_birthday_bonus(
        ctx.session, account_id=int(ctx.payload["account_id"]), year=int(ctx.payload["year"])
    )


@job(MERGE_JOB)
def merge_accounts(ctx: JobContext) -> None:
    """A merged customer's points follow the survivor (routed from ``customers.merged``)."""
    accounts.fold_merged_customer(
        ctx.session,
        workspace_id=int(ctx.payload["workspace_id"]),
        survivor_id=int(ctx.payload["survivor_id"]),
        merged_id=int(ctx.payload["merged_id"]),
    )


@job(UNMERGE_JOB)
def unmerge_accounts(ctx: JobContext) -> None:
    """Points a merge brought to the survivor go back when the customers are separated again
    (routed from ``customers.unmerged``)."""
    accounts.unfold_unmerged_customer(
        ctx.session,
        workspace_id=int(ctx.payload["workspace_id"]),
        survivor_id=int(ctx.payload["survivor_id"]),
        merged_id=int(ctx.payload["merged_id"]),
    )


@monitor("loyalty.due_lots", every=timedelta(minutes=1))
def due_lots(ctx: MonitorContext) -> None:
    """One keyed job per lot whose return period or validity has ended."""
    pending, expiring = accounts.due_lots(ctx.session, now=ctx.now)
    enqueue_many(
        ctx.session, ACTIVATE_JOB, ((f"{ACTIVATE_JOB}:{i}", {"lot_id": i}) for i in pending)
    )
    enqueue_many(ctx.session, EXPIRE_JOB, ((f"{EXPIRE_JOB}:{i}", {"lot_id": i}) for i in expiring))


@monitor("loyalty.prune_rate_counters", every=timedelta(hours=1))
def prune_rate_counters(ctx: MonitorContext) -> None:
    """Velocity counters and refused gift-card attempts are needed for their window only (an
    hour at most)."""
    accounts.prune_rate_counters(ctx.session, now=ctx.now)
    giftcards.prune_failures(ctx.session, now=ctx.now)


@monitor("loyalty.tier_reviews", every=timedelta(minutes=15))
def tier_reviews(ctx: MonitorContext) -> None:
    """One keyed job per account whose tier review period has ended."""
    due = accounts.due_tier_reviews(ctx.session, now=ctx.now)
    enqueue_many(
        ctx.session,
        REVIEW_JOB,
        ((f"{REVIEW_JOB}:{a}:{at.isoformat()}", {"account_id": a}) for a, at in due),
    )


@monitor("loyalty.birthdays", every=timedelta(hours=1))
def birthdays(ctx: MonitorContext) -> None:
    """One keyed job per customer whose birthday it is in their own time zone."""
    due = accounts.due_birthdays(ctx.session, now=ctx.now)
    enqueue_many(
        ctx.session,
        BIRTHDAY_JOB,
        ((f"{BIRTHDAY_JOB}:{a}:{y}", {"account_id": a, "year": y}) for a, y in due),
    )
