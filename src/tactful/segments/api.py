"""Segments over HTTP: define and validate, preview, size, estimate, refresh, list members
and export them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Response

from tactful.core.api import RuntimeDep, SessionDep, api_router, require_scope, writes
from tactful.core.auth import Principal
from tactful.segments import memberships, service
from tactful.segments.schemas import (
    ChangeOut,
    DefinitionIn,
    EstimateIn,
    EstimateOut,
    MemberOut,
    OverlapOut,
    PreviewOut,
    RefreshOut,
    SegmentIn,
    SegmentOut,
    SegmentUpdate,
    SizeOut,
    ValidationOut,
    VersionOut,
)

router = api_router(prefix="/v1/segments", tags=["segments"])
Admin = Annotated[Principal, require_scope("admin")]


@router.get("", summary="List segments")
def list_segments(session: SessionDep, principal: Admin) -> list[SegmentOut]:
    rows = service.list_segments(session, workspace_id=principal.workspace_id)
    return [SegmentOut.model_validate(s) for s in rows]


@router.post("", status_code=201, summary="Create a segment (422 names each bad node's path)")
def create_segment(body: SegmentIn, session: SessionDep, principal: Admin) -> SegmentOut:
    segment = service.create_segment(
        session,
        workspace_id=principal.workspace_id,
        name=body.name,
        definition=body.definition,
        description=body.description,
        brand_id=body.brand_id,
        refresh_mode=body.refresh_mode,
        refresh_every_minutes=body.refresh_every_minutes,
        actor=principal.actor,
    )
    return SegmentOut.model_validate(segment)


@router.post("/validate", summary="Check a definition and render it in plain language")
def validate(body: DefinitionIn, session: SessionDep, principal: Admin) -> ValidationOut:
    _node, text = service.check_definition(
        session, workspace_id=principal.workspace_id, definition=body.definition
    )
    return ValidationOut(valid=True, description=text)


@router.post("/preview", summary="Size and a sample of members of a definition, with values")
def preview_definition(
    body: DefinitionIn,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PreviewOut:
    result = service.preview(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        definition=body.definition,
        limit=limit,
    )
    return PreviewOut.model_validate(result.__dict__)


@router.post("/size", summary="How many customers a definition matches now")
def size_definition(
    body: DefinitionIn, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> SizeOut:
    count = service.size(
        runtime, session, workspace_id=principal.workspace_id, definition=body.definition
    )
    return SizeOut(size=count)


@router.post("/estimate", summary="Reach and cost per channel and for a cascade, of a definition")
def estimate_definition(
    body: EstimateIn, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> EstimateOut:
    result = service.estimate(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        definition=body.definition,
        cascade=body.cascade,
    )
    return EstimateOut.model_validate(result.__dict__)


@router.get("/{segment_id}", summary="A segment with its refresh status")
def get_segment(segment_id: int, session: SessionDep, principal: Admin) -> SegmentOut:
    segment = service.get_segment(
        session, workspace_id=principal.workspace_id, segment_id=segment_id
    )
    return SegmentOut.model_validate(segment)


@router.patch("/{segment_id}", summary="Update a segment (a new definition is a new version)")
def update_segment(
    segment_id: int, body: SegmentUpdate, session: SessionDep, principal: Admin
) -> SegmentOut:
    segment = service.update_segment(
        session,
        workspace_id=principal.workspace_id,
        segment_id=segment_id,
        definition=body.definition,
        name=body.name,
        description=body.description,
        refresh_mode=body.refresh_mode,
        refresh_every_minutes=body.refresh_every_minutes,
        actor=principal.actor,
    )
    return SegmentOut.model_validate(segment)


@router.get("/{segment_id}/versions", summary="Every definition the segment has had")
def versions(segment_id: int, session: SessionDep, principal: Admin) -> list[VersionOut]:
    rows = service.versions(session, workspace_id=principal.workspace_id, segment_id=segment_id)
    return [VersionOut.model_validate(v) for v in rows]


@router.get("/{segment_id}/preview", summary="Size and a sample of the segment's members now")
def preview_segment(
    segment_id: int,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PreviewOut:
    result = service.preview(
        runtime, session, workspace_id=principal.workspace_id, segment_id=segment_id, limit=limit
    )
    return PreviewOut.model_validate(result.__dict__)


@router.get("/{segment_id}/size", summary="How many customers the segment matches now")
def size_segment(
    segment_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> SizeOut:
    count = service.size(
        runtime, session, workspace_id=principal.workspace_id, segment_id=segment_id
    )
    return SizeOut(size=count)


@router.post("/{segment_id}/estimate", summary="Reach and cost per channel and for a cascade")
def estimate_segment(
    segment_id: int, body: EstimateIn, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> EstimateOut:
    result = service.estimate(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        brand_id=body.brand_id,
        segment_id=segment_id,
        definition=body.definition,
        cascade=body.cascade,
    )
    return EstimateOut.model_validate(result.__dict__)


@router.get("/{segment_id}/overlap/{other_id}", summary="Overlap between two segments")
def overlap(
    segment_id: int, other_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> OverlapOut:
    result = service.overlap(
        runtime,
        session,
        workspace_id=principal.workspace_id,
        first_id=segment_id,
        second_id=other_id,
    )
    return OverlapOut.model_validate(result.__dict__)


@router.post(
    "/{segment_id}/refresh",
    summary="Recompute memberships now (a failure is recorded on the segment, not raised)",
)
def refresh(
    segment_id: int, runtime: RuntimeDep, session: SessionDep, principal: Admin
) -> RefreshOut:
    outcome = memberships.refresh_segment(
        runtime, session, workspace_id=principal.workspace_id, segment_id=segment_id
    )
    return RefreshOut.model_validate(outcome.__dict__)


@router.get("/{segment_id}/members", summary="Current members by customer id")
def members(
    segment_id: int,
    session: SessionDep,
    principal: Admin,
    after_id: int = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[MemberOut]:
    rows = memberships.members(
        session,
        workspace_id=principal.workspace_id,
        segment_id=segment_id,
        after_id=after_id,
        limit=limit,
    )
    return [MemberOut.model_validate(r) for r in rows]


@router.get("/{segment_id}/changes", summary="Enter and exit changes, newest first")
def changes(
    segment_id: int,
    session: SessionDep,
    principal: Admin,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ChangeOut]:
    rows = memberships.changes(
        session,
        workspace_id=principal.workspace_id,
        segment_id=segment_id,
        before_id=before_id,
        limit=limit,
    )
    return [ChangeOut.model_validate(r) for r in rows]


@router.get("/{segment_id}/export", summary="Members with contacts as CSV or Parquet (audited)")
@writes
def export(
    segment_id: int,
    session: SessionDep,
    principal: Admin,
    format: Literal["csv", "parquet"] = "csv",
) -> Response:
    body = memberships.export_members(
        session,
        workspace_id=principal.workspace_id,
        segment_id=segment_id,
        format=format,
        actor=principal.actor,
    )
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="segment-{segment_id}.{format}"'},
    )


@router.get(
    "/{segment_id}/export/ads",
    summary="SHA-256 hashes of members' normalised e-mails and phones for ad platforms (audited)",
)
@writes
def export_ads(
    segment_id: int,
    session: SessionDep,
    principal: Admin,
    platform: Literal["google", "meta"] = "google",
) -> Response:
    body = memberships.export_for_ads(
        session,
        workspace_id=principal.workspace_id,
        segment_id=segment_id,
        platform=platform,
        actor=principal.actor,
    )
    return Response(
        body,
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="segment-{segment_id}-{platform}.csv"'
        },
    )
