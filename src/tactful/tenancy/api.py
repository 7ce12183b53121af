"""Workspace, brands, API keys and the audit log over HTTP (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from tactful.core.api import SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.tenancy import service
from tactful.tenancy.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    AuditEntryOut,
    BrandIn,
    BrandOut,
    ChannelPriceIn,
    ChannelPriceOut,
    WorkspaceOut,
)

router = api_router(prefix="/v1", tags=["workspace"])
Admin = Annotated[Principal, require_scope("admin")]


@router.get("/workspace", summary="The workspace of the calling key")
def get_workspace(session: SessionDep, principal: Admin) -> WorkspaceOut:
    return WorkspaceOut.model_validate(service.get_workspace(session, principal.workspace_id))


@router.get("/brands", summary="List brands")
def list_brands(session: SessionDep, principal: Admin) -> list[BrandOut]:
    brands = service.list_brands(session, workspace_id=principal.workspace_id)
    return [BrandOut.model_validate(b) for b in brands]


@router.post("/brands", status_code=201, summary="Create a brand")
def create_brand(body: BrandIn, session: SessionDep, principal: Admin) -> BrandOut:
    brand = service.create_brand(
        session,
        workspace_id=principal.workspace_id,
        slug=body.slug,
        name=body.name,
        actor=principal.actor,
    )
    return BrandOut.model_validate(brand)


@router.get("/api-keys", summary="List API keys (never the keys themselves)")
def list_keys(session: SessionDep, principal: Admin) -> list[ApiKeyOut]:
    keys = service.list_api_keys(session, workspace_id=principal.workspace_id)
    return [ApiKeyOut.model_validate(k) for k in keys]


@router.post("/api-keys", status_code=201, summary="Issue an API key (shown once)")
def issue_key(body: ApiKeyIn, session: SessionDep, principal: Admin) -> ApiKeyCreated:
    key, plain = service.issue_api_key(
        session,
        workspace_id=principal.workspace_id,
        name=body.name,
        scopes=list(body.scopes),
        brand_id=body.brand_id,
        actor=principal.actor,
    )
    return ApiKeyCreated.model_validate(
        {**ApiKeyOut.model_validate(key).model_dump(), "key": plain}
    )


@router.delete("/api-keys/{key_id}", summary="Revoke an API key")
def revoke_key(key_id: int, session: SessionDep, principal: Admin) -> ApiKeyOut:
    key = service.revoke_api_key(
        session, workspace_id=principal.workspace_id, key_id=key_id, actor=principal.actor
    )
    return ApiKeyOut.model_validate(key)


@router.get("/audit-log", summary="Audit entries, newest first")
def audit_log(
    session: SessionDep,
    principal: Admin,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    entries = service.list_audit(
        session,
        workspace_id=principal.workspace_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before_id=before_id,
        limit=limit,
    )
    return [AuditEntryOut.model_validate(e) for e in entries]


@router.get("/channel-prices", summary="Prices per message by brand and channel")
def list_prices(session: SessionDep, principal: Admin) -> list[ChannelPriceOut]:
    rows = service.list_channel_prices(session, workspace_id=principal.workspace_id)
    return [ChannelPriceOut.model_validate(r) for r in rows]


@router.put("/channel-prices", summary="Set a brand's price per message on a channel")
def set_price(body: ChannelPriceIn, session: SessionDep, principal: Admin) -> ChannelPriceOut:
    row = service.set_channel_price(
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        channel=body.channel,
        price=body.price,
        provider=body.provider,
        currency=body.currency,
        actor=principal.actor,
    )
    return ChannelPriceOut.model_validate(row)
