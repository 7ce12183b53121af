"""Queries over campaigns, runs, waves, recipients and checkpoints, and the read-only
figures campaign statistics take from messaging's deliveries and the policy ledger (never
commits, never enqueues, never sends)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Table, and_, case, cast, func, select, update
from sqlalchemy.orm import Session

from tactful.campaigns.models import (
    CANCELLED,
    PENDING,
    SCHEDULED,
    Campaign,
    CampaignCheckpoint,
    CampaignRecipient,
    CampaignRun,
    CampaignWave,
)
from tactful.core.dialect import copy_rows, fetch_int_table, insert_with_ids, json_text, lock_rows
from tactful.customers.models import ConsentChange, Customer
from tactful.messaging.models import (
    BOUNCED,
    FAILED,
    PLANNED,
    QUEUED,
    SUPPRESSED,
    UNKNOWN,
    Delivery,
    DeliveryEvent,
)
from tactful.messaging.models import (
    CANCELLED as DELIVERY_CANCELLED,
)
from tactful.policy.models import ContactDecision

CHUNK = 900
RECIPIENT_COLUMNS = ("run_id", "customer_id", "campaign_id", "grp", "wave")


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# -- campaigns and runs -------------------------------------------------------------------------


def campaign(
    session: Session, workspace_id: int, campaign_id: int, *, lock: bool = False
) -> Campaign | None:
    stmt = select(Campaign).where(Campaign.id == campaign_id, Campaign.workspace_id == workspace_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def campaign_by_id(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign | None:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def campaigns(
    session: Session, workspace_id: int, *, status: str | None, brand_id: int | None
) -> list[Campaign]:
    stmt = select(Campaign).where(Campaign.workspace_id == workspace_id)
    if status:
        stmt = stmt.where(Campaign.status == status)
    if brand_id is not None:
        stmt = stmt.where(Campaign.brand_id == brand_id)
    return list(session.scalars(stmt.order_by(Campaign.id.desc())))


def runs(session: Session, campaign_id: int) -> list[CampaignRun]:
    return list(
        session.scalars(
            select(CampaignRun)
            .where(CampaignRun.campaign_id == campaign_id)
            .order_by(CampaignRun.number)
        )
    )


def run(session: Session, run_id: int, *, lock: bool = False) -> CampaignRun | None:
    stmt = select(CampaignRun).where(CampaignRun.id == run_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def run_by_number(session: Session, campaign_id: int, number: int) -> CampaignRun | None:
    return session.scalars(
        select(CampaignRun).where(
            CampaignRun.campaign_id == campaign_id, CampaignRun.number == number
        )
    ).one_or_none()


def next_runs(session: Session, campaign_ids: Sequence[int]) -> dict[int, datetime]:
    """When each campaign's next scheduled run starts."""
    rows = session.execute(
        select(CampaignRun.campaign_id, func.min(CampaignRun.scheduled_at))
        .where(CampaignRun.campaign_id.in_(list(campaign_ids)), CampaignRun.status == SCHEDULED)
        .group_by(CampaignRun.campaign_id)
    )
    return {int(c): at for c, at in rows}


def due_runs(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(CampaignRun.id)
            .where(CampaignRun.status == SCHEDULED, CampaignRun.scheduled_at <= now)
            .order_by(CampaignRun.scheduled_at, CampaignRun.id)
            .limit(limit)
        )
    )


def cancel_runs(session: Session, campaign_id: int, statuses: Sequence[str], now: datetime) -> int:
    result = session.execute(
        update(CampaignRun)
        .where(CampaignRun.campaign_id == campaign_id, CampaignRun.status.in_(list(statuses)))
        .values(status=CANCELLED, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


# -- audience -----------------------------------------------------------------------------------


def zone_members(session: Session, workspace_id: int) -> dict[str, np.ndarray]:
    """The workspace's customers with a time zone of their own, by zone (sorted ids)."""
    names = session.scalars(
        select(Customer.timezone)
        .where(Customer.workspace_id == workspace_id, Customer.timezone.is_not(None))
        .distinct()
    )
    return {
        str(name): np.sort(
            fetch_int_table(
                session,
                select(Customer.id).where(
                    Customer.workspace_id == workspace_id, Customer.timezone == name
                ),
            )[:, 0]
        )
        for name in names
    }


def test_customers(session: Session, workspace_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Customer.id)
            .where(
                Customer.workspace_id == workspace_id,
                Customer.is_test.is_(True),
                Customer.merged_into_id.is_(None),
            )
            .order_by(Customer.id)
        )
    )


def insert_recipients(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """(run, customer, campaign, group, wave) rows, in bulk."""
    copy_rows(session, _table(CampaignRecipient), RECIPIENT_COLUMNS, rows)


def wave_members(session: Session, run_id: int, wave: int) -> np.ndarray:
    stmt = select(CampaignRecipient.customer_id).where(
        CampaignRecipient.run_id == run_id, CampaignRecipient.wave == wave
    )
    return np.sort(fetch_int_table(session, stmt)[:, 0])


def group_members(session: Session, run_id: int, group: str) -> np.ndarray:
    stmt = select(CampaignRecipient.customer_id).where(
        CampaignRecipient.run_id == run_id, CampaignRecipient.group == group
    )
    return np.sort(fetch_int_table(session, stmt)[:, 0])


def attach_decisions(session: Session, run_id: int, batch_id: int) -> int:
    """Copy the ledger's decisions of a batch onto the run's recipients (one statement)."""
    result = session.execute(
        update(CampaignRecipient)
        .where(
            CampaignRecipient.run_id == run_id,
            CampaignRecipient.customer_id == ContactDecision.customer_id,
            ContactDecision.batch_id == batch_id,
        )
        .values(
            decision_id=ContactDecision.id,
            outcome=ContactDecision.status,
            reason=ContactDecision.reason,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


def recipients(
    session: Session, run_id: int, *, group: str | None, after_customer: int, limit: int
) -> list[tuple[CampaignRecipient, int | None, str | None]]:
    """A run's recipients by customer id, with the delivery of their decision."""
    stmt = (
        select(CampaignRecipient, Delivery.id, Delivery.status)
        .outerjoin(Delivery, Delivery.decision_id == CampaignRecipient.decision_id)
        .where(CampaignRecipient.run_id == run_id, CampaignRecipient.customer_id > after_customer)
    )
    if group:
        stmt = stmt.where(CampaignRecipient.group == group)
    rows = session.execute(stmt.order_by(CampaignRecipient.customer_id).limit(limit)).all()
    return [(r[0], r[1], r[2]) for r in rows]


# -- waves ----------------------------------------------------------------------------------------


def insert_waves(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    return insert_with_ids(session, CampaignWave, rows)


def wave(session: Session, wave_id: int, *, lock: bool = False) -> CampaignWave | None:
    stmt = select(CampaignWave).where(CampaignWave.id == wave_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def pending_waves(session: Session, run_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(CampaignWave)
            .where(CampaignWave.run_id == run_id, CampaignWave.status == PENDING)
        )
        or 0
    )


def cancel_waves(session: Session, run_ids: Sequence[int]) -> int:
    result = session.execute(
        update(CampaignWave)
        .where(CampaignWave.run_id.in_(list(run_ids)), CampaignWave.status == PENDING)
        .values(status=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


# -- checkpoints --------------------------------------------------------------------------------


def checkpoints(session: Session, campaign_id: int) -> list[CampaignCheckpoint]:
    return list(
        session.scalars(
            select(CampaignCheckpoint)
            .where(CampaignCheckpoint.campaign_id == campaign_id)
            .order_by(CampaignCheckpoint.run_id, CampaignCheckpoint.number)
        )
    )


def checkpoint(
    session: Session, checkpoint_id: int, *, lock: bool = False
) -> CampaignCheckpoint | None:
    stmt = select(CampaignCheckpoint).where(CampaignCheckpoint.id == checkpoint_id)
    if lock:
        stmt = lock_rows(session, stmt)
    return session.scalars(stmt).one_or_none()


def due_checkpoints(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(CampaignCheckpoint.id)
            .where(CampaignCheckpoint.status == PENDING, CampaignCheckpoint.due_at <= now)
            .order_by(CampaignCheckpoint.due_at, CampaignCheckpoint.id)
            .limit(limit)
        )
    )


def cancel_checkpoints(session: Session, campaign_id: int) -> int:
    result = session.execute(
        update(CampaignCheckpoint)
        .where(CampaignCheckpoint.campaign_id == campaign_id, CampaignCheckpoint.status == PENDING)
        .values(status=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


# -- figures for statistics ---------------------------------------------------------------------


def recipient_counts(
    session: Session, campaign_id: int
) -> list[tuple[str, str | None, str | None, int]]:
    """(group, outcome, reason, count) over every run."""
    rows = session.execute(
        select(
            CampaignRecipient.group,
            CampaignRecipient.outcome,
            CampaignRecipient.reason,
            func.count(),
        )
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(CampaignRecipient.group, CampaignRecipient.outcome, CampaignRecipient.reason)
    ).all()
    return [(g, o, r, int(n)) for g, o, r, n in rows]


def _campaign_deliveries(workspace_id: int, source: str) -> Any:
    return and_(
        Delivery.workspace_id == workspace_id,
        Delivery.source == source,
        Delivery.is_test.is_(False),
    )


def delivery_figures(session: Session, workspace_id: int, source: str) -> dict[str, int]:
    """How far a campaign's (non-test) deliveries got."""

    def where(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = session.execute(
        select(
            func.count().label("deliveries"),
            where(Delivery.status.in_((PLANNED, QUEUED))).label("waiting"),
            func.count(Delivery.sent_at).label("sent"),
            func.count(Delivery.delivered_at).label("delivered"),
            func.count(Delivery.read_at).label("opened"),
            func.count(Delivery.clicked_at).label("clicked"),
            where(Delivery.status.in_((FAILED, BOUNCED))).label("failed"),
            where(Delivery.status == UNKNOWN).label("unknown"),
            where(Delivery.status == DELIVERY_CANCELLED).label("cancelled"),
            where(Delivery.status == SUPPRESSED).label("suppressed_at_send"),
            func.coalesce(
                func.sum(case((Delivery.sent_at.is_not(None), Delivery.cost), else_=0)), 0
            ).label("cost"),
        ).where(_campaign_deliveries(workspace_id, source))
    ).one()
    return {key: int(value or 0) for key, value in row._mapping.items()}


def sent_by_channel(session: Session, workspace_id: int, source: str) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.channel, func.count())
        .where(_campaign_deliveries(workspace_id, source), Delivery.sent_at.is_not(None))
        .group_by(Delivery.channel)
    )
    return {str(channel): int(n) for channel, n in rows}


def complaints(session: Session, workspace_id: int, source: str) -> int:
    ids = select(Delivery.id).where(_campaign_deliveries(workspace_id, source))
    return int(
        session.scalar(
            select(func.count(func.distinct(DeliveryEvent.delivery_id))).where(
                DeliveryEvent.kind == "complained", DeliveryEvent.delivery_id.in_(ids)
            )
        )
        or 0
    )


def unsubscribes(session: Session, workspace_id: int, source: str) -> int:
    """Customers who left through an unsubscribe link of one of the campaign's messages."""
    ids = select(Delivery.id).where(_campaign_deliveries(workspace_id, source))
    delivery = cast(
        json_text(session, ConsentChange.__table__.c.evidence, "delivery_id"), BigInteger
    )
    return int(
        session.scalar(
            select(func.count(func.distinct(ConsentChange.customer_id))).where(
                ConsentChange.workspace_id == workspace_id,
                ConsentChange.source == "unsubscribe_link",
                ConsentChange.status == "revoked",
                delivery.in_(ids),
            )
        )
        or 0
    )
