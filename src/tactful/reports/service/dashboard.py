"""The dashboard: the size and health of the customer base, reach per channel, data quality
and this week's messages, computed from the warehouse's metrics tables and the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import ibis
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.service import ContactQuality
from tactful.messaging import service as messaging
from tactful.metrics import service as metrics
from tactful.tenancy import service as tenancy

STAGES = ("prospect", "new", "active", "reactivated", "at_risk", "lapsed")
CHANNELS = metrics.REACH_CHANNELS


@dataclass(frozen=True)
class Dashboard:
    """The figures of the start page (money in minor units, shares between 0 and 1)."""

    as_of: datetime
    brand_id: int
    customers: int  # known customers (not anonymous, not merged away)
    profiles: int  # of them, copied to the warehouse (the base of the figures below)
    buyers: int  # bought at least once
    active: int  # bought within the last 365 days
    lapsed: int  # lifecycle stage "lapsed"
    repeat_buyers: int  # two visits or more
    revenue_365d: int  # net of returns
    receipts_365d: int  # sale receipts
    lifecycle: dict[str, int]  # stage -> customers
    reachable: dict[str, int]  # channel -> customers reachable for marketing by the brand
    quality: ContactQuality
    week_from: datetime  # Monday 00:00 in the workspace's time zone
    sent: dict[str, tuple[int, int]]  # channel -> (messages sent this week, cost)
    metrics_at: datetime | None  # when the metrics were last refreshed

    @property
    def churn_rate(self) -> float | None:
        """Lapsed buyers ÷ buyers."""
        return self.lapsed / self.buyers if self.buyers else None

    @property
    def repeat_rate(self) -> float | None:
        """Buyers with two visits or more ÷ buyers."""
        return self.repeat_buyers / self.buyers if self.buyers else None

    @property
    def average_check(self) -> int | None:
        """Net revenue ÷ sale receipts of the last 365 days, rounded down."""
        return self.revenue_365d // self.receipts_365d if self.receipts_365d else None

    def reachable_share(self, channel: str) -> float | None:
        """Customers reachable on a channel ÷ customers in the warehouse."""
        return self.reachable.get(channel, 0) / self.profiles if self.profiles else None

    @property
    def messages_sent(self) -> int:
        return sum(count for count, _cost in self.sent.values())

    @property
    def messages_cost(self) -> int:
        return sum(cost for _count, cost in self.sent.values())


def week_start(now: datetime, timezone: str) -> datetime:
    """Monday 00:00 of the week of ``now`` in a time zone, in UTC."""
    local = now.astimezone(ZoneInfo(timezone))
    monday = (local - timedelta(days=local.weekday())).date()
    midnight = datetime(monday.year, monday.month, monday.day, tzinfo=ZoneInfo(timezone))
    return clock.ensure_utc(midnight)


def dashboard(runtime: Runtime, session: Session, *, workspace_id: int, brand_id: int) -> Dashboard:
    """The start page's figures for a workspace, reach and prices for one of its brands."""
    tenancy.get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    workspace = tenancy.get_workspace(session, workspace_id)
    now = clock.now()
    warehouse = runtime.warehouse
    con = warehouse.con
    profiles = metrics.profiles_table(warehouse, workspace_id=workspace_id)
    known = profiles.filter(~profiles.anonymous).select("customer_id")
    table = metrics.metrics_table(
        warehouse, workspace_id=workspace_id, now=now, names=["lifecycle_stage"]
    )
    joined = known.inner_join(table, "customer_id")

    def flag(condition: ibis.BooleanValue) -> ibis.IntegerValue:
        return ibis.ifelse(condition, 1, 0).sum()

    totals = con.to_pyarrow(
        joined.aggregate(
            buyers=flag(joined.receipts_count > 0),
            active=flag(joined.receipts_365d > 0),
            repeat=flag(joined.visits_count >= 2),
            revenue=joined.revenue_365d.sum(),
            receipts=joined.receipts_365d.sum(),
        )
    ).to_pylist()[0]
    stages = {
        row["lifecycle_stage"]: int(row["n"])
        for row in con.to_pyarrow(
            joined.group_by("lifecycle_stage").aggregate(n=joined.count())
        ).to_pylist()
    }
    profile_count = int(con.execute(known.count()))
    stages["prospect"] = profile_count - sum(n for s, n in stages.items() if s != "prospect")
    reach = metrics.reach_table(warehouse, workspace_id=workspace_id)
    reach = reach.filter(reach.brand_id == brand_id, reach.reachable)
    reach = reach.inner_join(known, "customer_id")
    reachable = {
        row["channel"]: int(row["n"])
        for row in con.to_pyarrow(reach.group_by("channel").aggregate(n=reach.count())).to_pylist()
    }
    since = week_start(now, workspace.timezone)
    return Dashboard(
        as_of=now,
        brand_id=brand_id,
        customers=customers.count_customers(session, workspace_id=workspace_id),
        profiles=profile_count,
        buyers=int(totals["buyers"] or 0),
        active=int(totals["active"] or 0),
        lapsed=stages.get("lapsed", 0),
        repeat_buyers=int(totals["repeat"] or 0),
        revenue_365d=int(totals["revenue"] or 0),
        receipts_365d=int(totals["receipts"] or 0),
        lifecycle={stage: stages.get(stage, 0) for stage in STAGES},
        reachable={channel: reachable.get(channel, 0) for channel in CHANNELS},
        quality=customers.contact_quality(session, workspace_id=workspace_id),
        week_from=since,
        sent=messaging.sent_by_channel(
            session, workspace_id=workspace_id, since=since, until=since + timedelta(days=7)
        ),
        metrics_at=metrics.status(session, workspace_id=workspace_id).metrics_refreshed_at,
    )
