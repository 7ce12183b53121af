"""Ingestion over HTTP: Segment-spec calls (so Segment and RudderStack libraries work as they
are), purchases, the event catalog, reference data and the loader's lag."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tactful.core import storable
from tactful.core.api import (
    RuntimeDep,
    SessionDep,
    api_router,
    presented_key,
    require_scope,
)
from tactful.core.auth import Principal
from tactful.core.errors import NotFound, PayloadTooLarge, Unauthorized, ValidationFailed
from tactful.events import loader, service
from tactful.events.ingest import IngestContext, errors_of
from tactful.events.models import ImportRun
from tactful.events.schemas import (
    MAX_BATCH_BYTES,
    MAX_CALL_BYTES,
    BatchEnvelope,
    ImportOut,
    IngestResponse,
    PurchaseBatch,
)

router = api_router(prefix="/v1", tags=["ingestion"], keyed=True)
Admin = Annotated[Principal, require_scope("admin")]

SEGMENT_DOC = (
    "Segment-spec call. Authenticate like Segment: HTTP Basic with the write key (an API key "
    "with the ingest scope) as the user name, or `writeKey` in the body. Limits: 32 KB per "
    "call, 500 KB per batch. A repeated messageId is accepted and ignored."
)


async def _read_json(request: Request, limit: int) -> tuple[Any, bool]:
    """The body parsed, and whether it may hold values no database can store (its items are
    then checked one by one)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        try:
            body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
        except (OSError, zlib.error) as exc:
            raise ValidationFailed(f"the body is not valid {encoding} data", field="body") from exc
        if len(body) > limit:
            raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    try:
        return orjson.loads(body), storable.suspect(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"the body is not valid JSON: {exc}", field="body") from exc


def _principal(request: Request, session: Any, body: Any) -> Principal:
    key = presented_key(request)
    if not key and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        key = body["writeKey"]
    if not key:
        raise Unauthorized(
            "a write key is required (HTTP Basic with the key as the user name, "
            "or writeKey in the body)"
        )
    principal: Principal = request.app.state.authenticate_key(session, key)
    principal.require("ingest")
    request.state.principal = principal  # the route records the key's use after the answer
    return principal


def _context(
    request: Request, session: Any, principal: Principal, source: str, suspect: bool
) -> IngestContext:
    return IngestContext(
        workspace=service.workspace(session, principal.workspace_id),
        source=source,
        brand_id=principal.brand_id,
        check_storable=suspect,
    )


def _respond(result: IngestResponse, *, single: bool) -> Response:
    if single and result.rejected:
        errors = [e.as_dict() for e in result.results[0].errors]
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors
        )
    return Response(service.ingest_response_json(result), media_type="application/json")


async def _single(request: Request, session: SessionDep, kind: str) -> Response:
    body, suspect = await _read_json(request, MAX_CALL_BYTES)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", field="body")

    def work() -> IngestResponse:
        principal = _principal(request, session, body)
        ctx = _context(request, session, principal, "api", suspect)
        return service.ingest_segment(session, ctx, [body], kind=kind)

    return _respond(await run_in_threadpool(work), single=True)


@router.post("/identify", summary="Identify a customer (Segment spec)", description=SEGMENT_DOC)
async def identify(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "identify")


@router.post("/track", summary="Record an event (Segment spec)", description=SEGMENT_DOC)
async def track(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "track")


@router.post("/page", summary="Record a page view (Segment spec)", description=SEGMENT_DOC)
async def page(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "page")


@router.post("/screen", summary="Record an app screen view (Segment spec)", description=SEGMENT_DOC)
async def screen(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "screen")


@router.post(
    "/alias", summary="Join a previous id to a user id (Segment spec)", description=SEGMENT_DOC
)
async def alias(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "alias")


@router.post(
    "/group", summary="Associate a customer with a group (Segment spec)", description=SEGMENT_DOC
)
async def group(request: Request, session: SessionDep) -> Response:
    return await _single(request, session, "group")


@router.post(
    "/batch",
    summary="Several Segment-spec calls at once",
    description=SEGMENT_DOC
    + " Each call gets its own result: accepted, duplicate, or rejected with the "
    "field and reason; valid calls are kept when others fail.",
)
async def batch(request: Request, session: SessionDep) -> Response:
    body, suspect = await _read_json(request, MAX_BATCH_BYTES)
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object with a 'batch' list", field="body")
    try:
        envelope = BatchEnvelope.model_validate(body)
    except ValidationError as exc:
        errors = [e.as_dict() for e in errors_of(exc, "")]
        raise ValidationFailed(
            "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors
        ) from exc

    def work() -> IngestResponse:
        principal = _principal(request, session, body)
        ctx = _context(request, session, principal, "api", suspect)
        return service.ingest_segment(
            session,
            ctx,
            envelope.batch,
            envelope={"context": envelope.context, "sentAt": body.get("sentAt")},
        )

    return _respond(await run_in_threadpool(work), single=False)


@router.post("/import", include_in_schema=False)
async def segment_import(request: Request, session: SessionDep) -> Response:
    """Segment's older libraries post batches to /v1/import."""
    return await batch(request, session)


@router.post(
    "/purchases",
    summary="Record receipts (sales and returns)",
    description='One receipt object, or {"purchases": [...]} for up to 5,000. '
    "Money is in minor units (kopecks, cents). A repeated receipt_id is accepted "
    "and ignored; a return names original_receipt_id. Limit 500 KB per call.",
)
async def purchases(request: Request, session: SessionDep) -> Response:
    body, suspect = await _read_json(request, MAX_BATCH_BYTES)
    single = isinstance(body, dict) and "purchases" not in body
    if single:
        items: list[Any] = [body]
    else:
        try:
            items = PurchaseBatch.model_validate(body).purchases
        except ValidationError as exc:
            errors = [e.as_dict() for e in errors_of(exc, "")]
            raise ValidationFailed(
                "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors
            ) from exc

    def work() -> IngestResponse:
        principal = _principal(request, session, body if single else {})
        ctx = _context(request, session, principal, "api", suspect)
        return service.ingest_purchases(session, ctx, items, single=single)

    return _respond(await run_in_threadpool(work), single=single)


@router.get(
    "/events/catalog",
    tags=["events"],
    summary="Event names and properties seen, with inferred types",
)
def event_catalog(session: SessionDep, principal: Admin) -> list[dict[str, Any]]:
    return [
        {
            "type": c.type,
            "name": c.name,
            "property": c.property or None,
            "value_type": c.value_type or None,
            "example": c.example,
        }
        for c in service.catalog(session, workspace_id=principal.workspace_id)
    ]


@router.get("/events/loader", tags=["events"], summary="How far the warehouse is behind the inbox")
def loader_status(runtime: RuntimeDep, principal: Admin) -> dict[str, Any]:
    waiting, lag = loader.lag_seconds(runtime)
    return {"waiting_rows": waiting, "lag_seconds": round(lag, 3)}


# -- file imports -----------------------------------------------------------------------------

UPLOAD_CHUNK = 1 << 20
IMPORT_DOC = (
    "Upload a CSV or Parquet file; a worker imports it and the returned import shows its "
    "progress (GET /v1/imports/{id}). Columns are matched to fields by name; `map` entries "
    "(`column=field`, `column=` to skip one) or a JSON `mapping` object change that. Every "
    "rejected row is listed with its row number (1 = the first row after the header) and "
    "reason at GET /v1/imports/{id}/errors; the rest is imported, and uploading the same file "
    "again imports nothing twice. Imports are historical (they never fire triggers) unless "
    "`live` is true."
)


def _import_out(run: ImportRun) -> ImportOut:
    return ImportOut(
        id=run.id,
        kind=run.kind,
        file_name=Path(run.file_name).name,
        status=run.status,
        rows_total=run.rows_total,
        rows_imported=run.rows_imported,
        rows_duplicate=run.rows_duplicate,
        rows_rejected=run.rows_rejected,
        error=run.error,
        errors_url=f"/v1/imports/{run.id}/errors" if run.error_file else None,
        options=run.options,
        actor=run.actor,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _safe_name(name: str | None) -> str:
    base = Path(name or "").name
    if not base:
        raise ValidationFailed("the upload has no file name", field="file")
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[-200:]


def _mapping(items: list[str], mapping: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    if mapping:
        try:
            data = json.loads(mapping)
        except ValueError as exc:
            raise ValidationFailed("mapping is not valid JSON", field="mapping") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValidationFailed(
                'mapping must be a JSON object of "column": "field" pairs', field="mapping"
            )
        found.update(data)
    found.update(service.parse_mapping(items))
    return found


@router.post(
    "/imports/{kind}",
    status_code=202,
    tags=["imports"],
    summary="Import a file of customers, purchases, events, stores or products",
    description=IMPORT_DOC,
)
async def upload_import(
    kind: str,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: Admin,
    file: Annotated[UploadFile, File(description="a .csv, .tsv, .csv.gz or .parquet file")],
    map_: Annotated[
        list[str] | None, Form(alias="map", description="column=field, one per entry")
    ] = None,
    mapping: Annotated[str | None, Form(description='a JSON object {"column": "field"}')] = None,
    source: Annotated[str, Form(max_length=50, description="the source system")] = "import",
    namespace: Annotated[
        str, Form(max_length=50, description="the id system of external ids")
    ] = "user_id",
    brand_id: Annotated[int | None, Form(description="brand of advertising consents")] = None,
    live: Annotated[bool, Form(description="rows fire triggers like live calls")] = False,
) -> ImportOut:
    service.check_import_kind(kind)
    options = service.ImportOptions(
        mapping=_mapping(list(map_ or []), mapping),
        source=source,
        namespace=namespace,
        brand_id=brand_id,
        live=live,
    )
    folder = service.uploads_dir(runtime) / uuid.uuid4().hex
    path = folder / _safe_name(file.filename)

    def check() -> None:
        service.check_import_file(runtime, kind=kind, path=path, options=options)

    folder.mkdir(parents=True)
    try:
        with path.open("wb") as target:
            while chunk := await file.read(UPLOAD_CHUNK):
                target.write(chunk)
        await run_in_threadpool(check)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def queue() -> ImportRun:
        return service.queue_import(
            session,
            workspace_id=principal.workspace_id,
            kind=kind,
            path=path,
            options=options,
            actor=principal.actor,
        )

    return _import_out(await run_in_threadpool(queue))


@router.get("/imports", tags=["imports"], summary="Recent imports, newest first")
def list_imports(session: SessionDep, principal: Admin) -> list[ImportOut]:
    return [
        _import_out(run)
        for run in service.list_import_runs(session, workspace_id=principal.workspace_id)
    ]


@router.get("/imports/{import_id}", tags=["imports"], summary="An import's status and counts")
def get_import(import_id: int, session: SessionDep, principal: Admin) -> ImportOut:
    run = service.get_import_run(session, workspace_id=principal.workspace_id, run_id=import_id)
    return _import_out(run)


@router.get(
    "/imports/{import_id}/errors",
    tags=["imports"],
    summary="The rejected rows of an import (CSV: line, field, reason)",
    response_class=FileResponse,
)
def import_errors(import_id: int, session: SessionDep, principal: Admin) -> FileResponse:
    run = service.get_import_run(session, workspace_id=principal.workspace_id, run_id=import_id)
    if not run.error_file or not Path(run.error_file).is_file():
        raise NotFound(f"import {import_id} rejected no rows", field="import_id")
    return FileResponse(run.error_file, media_type="text/csv", filename=Path(run.error_file).name)
