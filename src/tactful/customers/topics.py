"""Subscription topics of a brand ("promotions", "order status" …)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict
from tactful.customers.models import Topic
from tactful.tenancy.service import get_brand, record_audit


def create_topic(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    key: str,
    name: str,
    description: str | None = None,
    message_class: str = "marketing",
    default_subscribed: bool = True,
    actor: str = "system",
) -> Topic:
    """Add a topic customers can subscribe to or leave."""
    get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    exists = session.scalar(
        select(Topic.id).where(
            Topic.workspace_id == workspace_id, Topic.brand_id == brand_id, Topic.key == key
        )
    )
    if exists is not None:
        raise Conflict(f"the brand already has a topic {key!r}", field="key")
    topic = Topic(
        workspace_id=workspace_id,
        brand_id=brand_id,
        key=key,
        name=name,
        description=description,
        message_class=message_class,
        default_subscribed=default_subscribed,
        created_at=clock.now(),
    )
    session.add(topic)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="topic.created",
        target_type="topic",
        target_id=topic.id,
        brand_id=brand_id,
        details={"key": key, "message_class": message_class},
    )
    return topic


def list_topics(session: Session, *, workspace_id: int) -> list[Topic]:
    """All topics of a workspace's brands."""
    return list(
        session.scalars(
            select(Topic)
            .where(Topic.workspace_id == workspace_id)
            .order_by(Topic.brand_id, Topic.key)
        )
    )
