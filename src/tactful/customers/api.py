"""Customer profiles over HTTP: look up by id or any identity, update attributes, read and
change consents, read the unified timeline, revert a merge, list attributes and topics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.customers import service, topics
from tactful.customers.models import Customer
from tactful.customers.schemas import (
    AttributeOut,
    ConsentChangeOut,
    ConsentOut,
    ConsentUpdate,
    CustomerOut,
    IdentityOut,
    MergeOut,
    ProfileOut,
    ProfileUpdate,
    TimelineItemOut,
    TopicIn,
    TopicOut,
)
from tactful.customers.service import ConsentInput
from tactful.tenancy.service import get_workspace

router = api_router(prefix="/v1", tags=["customers"])
Admin = Annotated[Principal, require_scope("admin")]


def _profile(session: SessionDep, customer: Customer, requested: int) -> ProfileOut:
    return ProfileOut.model_validate(
        {
            **CustomerOut.model_validate(customer).model_dump(),
            "requested_id": requested,
            "identities": [
                IdentityOut.model_validate(i) for i in service.identities(session, customer.id)
            ],
            "consents": [
                ConsentOut.model_validate(c)
                for c in service.consents(
                    session, workspace_id=customer.workspace_id, customer_id=customer.id
                )
            ],
            "merges": [MergeOut.model_validate(m) for m in service.merges(session, customer.id)],
        }
    )


@router.get("/customers", summary="Search customers by name or any identity")
def search_customers(
    session: SessionDep,
    principal: Admin,
    q: Annotated[
        str | None, Query(max_length=200, description="part of a name, phone, e-mail, card or id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after_id: int | None = None,
) -> list[CustomerOut]:
    found = service.search(
        session, workspace_id=principal.workspace_id, query=q, limit=limit, after_id=after_id
    )
    return [CustomerOut.model_validate(c) for c in found]


@router.get("/customers/lookup", summary="Find a customer by any identity")
def lookup(
    session: SessionDep,
    principal: Admin,
    kind: Annotated[str, Query(description="phone, email, card, anonymous, device, external")],
    value: Annotated[str, Query(min_length=1, max_length=320)],
    namespace: Annotated[str, Query(max_length=50)] = "",
) -> ProfileOut:
    workspace = get_workspace(session, principal.workspace_id)
    if kind == "external" and not namespace:
        namespace = "user_id"
    customer = service.find_customer(
        session, workspace=workspace, kind=kind, value=value, namespace=namespace
    )
    return _profile(session, customer, customer.id)


@router.get("/customers/{customer_id}", summary="A customer's profile")
def get_profile(customer_id: int, session: SessionDep, principal: Admin) -> ProfileOut:
    customer = service.get_customer(
        session, workspace_id=principal.workspace_id, customer_id=customer_id
    )
    return _profile(session, customer, customer_id)


@router.patch("/customers/{customer_id}", summary="Update attributes")
def update_profile(
    customer_id: int, body: ProfileUpdate, session: SessionDep, principal: Admin
) -> ProfileOut:
    workspace = get_workspace(session, principal.workspace_id)
    customer = service.update_profile(
        session,
        workspace=workspace,
        customer_id=customer_id,
        traits=body.traits,
        source=body.source,
        actor=principal.actor,
    )
    return _profile(session, customer, customer_id)


@router.get(
    "/customers/{customer_id}/timeline",
    summary="Events, purchases, messages and loyalty operations, newest first",
)
def timeline(
    customer_id: int,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: Admin,
    before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TimelineItemOut]:
    items = service.timeline(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        customer_id=customer_id,
        before=before,
        limit=limit,
    )
    return [TimelineItemOut.model_validate(i) for i in items]


@router.get("/customers/{customer_id}/consents", summary="Current consents and subscriptions")
def get_consents(customer_id: int, session: SessionDep, principal: Admin) -> list[ConsentOut]:
    found = service.consents(session, workspace_id=principal.workspace_id, customer_id=customer_id)
    return [ConsentOut.model_validate(c) for c in found]


@router.put(
    "/customers/{customer_id}/consents",
    summary="Grant or revoke consents and subscriptions, with evidence",
)
def put_consents(
    customer_id: int, body: ConsentUpdate, session: SessionDep, principal: Admin
) -> list[ConsentOut]:
    changes = [
        ConsentInput(
            kind=c.kind, status=c.status, channel=c.channel, topic=c.topic, brand_id=c.brand_id
        )
        for c in body.changes
    ]
    service.set_consents(
        session,
        workspace_id=principal.workspace_id,
        customer_id=customer_id,
        changes=changes,
        source=body.source,
        evidence=body.evidence,
        actor=principal.actor,
    )
    return get_consents(customer_id, session, principal)


@router.get("/customers/{customer_id}/consents/history", summary="Every consent change")
def consent_history(
    customer_id: int, session: SessionDep, principal: Admin
) -> list[ConsentChangeOut]:
    found = service.consent_history(
        session, workspace_id=principal.workspace_id, customer_id=customer_id
    )
    return [ConsentChangeOut.model_validate(c) for c in found]


@router.post("/customer-merges/{merge_id}/revert", summary="Undo a merge")
def revert_merge(merge_id: int, session: SessionDep, principal: Admin) -> CustomerOut:
    customer = service.revert_merge(
        session, workspace_id=principal.workspace_id, merge_id=merge_id, actor=principal.actor
    )
    return CustomerOut.model_validate(customer)


@router.get("/attributes", summary="Custom attributes with their inferred types")
def attributes(session: SessionDep, principal: Admin) -> list[AttributeOut]:
    found = service.attribute_catalog(session, workspace_id=principal.workspace_id)
    return [AttributeOut.model_validate(a) for a in found]


@router.get("/topics", summary="Subscription topics")
def list_topics(session: SessionDep, principal: Admin) -> list[TopicOut]:
    return [
        TopicOut.model_validate(t)
        for t in topics.list_topics(session, workspace_id=principal.workspace_id)
    ]


@router.post("/topics", status_code=201, summary="Create a subscription topic")
def create_topic(body: TopicIn, session: SessionDep, principal: Admin) -> TopicOut:
    topic = topics.create_topic(
        session, workspace_id=principal.workspace_id, actor=principal.actor, **body.model_dump()
    )
    return TopicOut.model_validate(topic)
