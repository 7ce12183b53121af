"""Import runs: create one, check its file, run it, and record what happened.

A run commits its work in chunks as it goes, so a long import never holds the database
for long; a run that stops half-way (a crash, a bad file found late) is simply started again
and imports only what it had not imported yet.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.errors import NotFound, TactfulError
from tactful.core.jobs.queue import enqueue
from tactful.core.runtime import Runtime
from tactful.events.importing import customers, events, purchases, reader, reference
from tactful.events.importing.context import (
    Counts,
    ImportContext,
    ImportOptions,
    Progress,
    no_progress,
)
from tactful.events.models import ImportRun
from tactful.tenancy.models import Brand, Workspace
from tactful.tenancy.service import record_audit

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
IMPORTED_EVENT = "events.imported"
IMPORT_JOB = "events.import_file"

SPECS: dict[str, reader.KindSpec] = {
    "customers": customers.SPEC,
    "purchases": purchases.SPEC,
    "events": events.SPEC,
    "stores": reference.STORES,
    "products": reference.PRODUCTS,
}
IMPORTERS: dict[str, Callable[[ImportContext], Counts]] = {
    "customers": customers.run,
    "purchases": purchases.run,
    "events": events.run,
    "stores": reference.run_stores,
    "products": reference.run_products,
}
IMPORT_KINDS = tuple(SPECS)

# One import at a time per process: the warehouse checks for rows already imported and then
# appends, which two imports of overlapping files must not interleave.
_running = threading.Lock()


def check_import_kind(kind: str) -> str:
    """The kind, or a 4xx naming the kinds there are."""
    if kind not in SPECS:
        raise NotFound(f"unknown import kind {kind!r}; one of {list(IMPORT_KINDS)}", field="kind")
    return kind


def import_workspace_id(session: Session, slug: str | None) -> int:
    """The workspace named by its slug, or the first one."""
    stmt = select(Workspace.id).order_by(Workspace.id).limit(1)
    if slug:
        stmt = stmt.where(Workspace.slug == slug)
    found = session.scalar(stmt)
    if found is None:
        if slug:
            raise NotFound(f"no workspace has the slug {slug!r}", field="workspace")
        raise NotFound(
            "there is no workspace yet: run `tactful init` (or `tactful serve`) first",
            field="workspace",
        )
    return int(found)


def import_brand_id(session: Session, workspace_id: int, brand: str | None) -> int | None:
    """A brand named by its slug or id (None: the workspace's first brand, chosen later)."""
    if not brand:
        return None
    stmt = select(Brand.id).where(Brand.workspace_id == workspace_id)
    stmt = (
        stmt.where(Brand.id == int(brand)) if brand.isdigit() else stmt.where(Brand.slug == brand)
    )
    found = session.scalar(stmt)
    if found is None:
        raise NotFound(f"the workspace has no brand {brand!r}", field="brand")
    return int(found)


def default_brand(session: Session, workspace_id: int, brand_id: int | None) -> int:
    """The brand advertising consents go to: the one given, or the workspace's first."""
    stmt = select(Brand.id).where(Brand.workspace_id == workspace_id)
    if brand_id is not None:
        stmt = stmt.where(Brand.id == brand_id)
    found = session.scalar(stmt.order_by(Brand.id).limit(1))
    if found is None:
        if brand_id is not None:
            raise NotFound(f"brand {brand_id} does not exist", field="brand")
        raise NotFound("the workspace has no brand yet", field="brand")
    return int(found)


def check_import_file(runtime: Runtime, *, kind: str, path: Path, options: ImportOptions) -> None:
    """Read the file's columns and the mapping; raises ValidationFailed before anything is
    imported if they do not fit the kind."""
    check_import_kind(kind)
    reader.file_format(path)
    temp = runtime.settings.data_dir / "tmp" / f"check-{threading.get_ident()}"
    con = reader.connect(temp, memory_limit=None, threads=1)
    try:
        reader.check_columns(con, path, SPECS[kind], options.mapping)
    finally:
        con.close()
        shutil.rmtree(temp, ignore_errors=True)


def create_import_run(
    session: Session,
    *,
    workspace_id: int,
    kind: str,
    path: Path,
    options: ImportOptions,
    actor: str,
) -> ImportRun:
    """Record a queued import of ``path``."""
    check_import_kind(kind)
    brand_id = default_brand(session, workspace_id, options.brand_id)
    options = ImportOptions(**{**options.to_json(), "brand_id": brand_id})
    run = ImportRun(
        workspace_id=workspace_id,
        kind=kind,
        file_name=str(path)[:500],
        status=QUEUED,
        options=options.to_json(),
        actor=actor[:100],
        started_at=clock.now(),
    )
    session.add(run)
    session.flush()
    return run


def queue_import(
    session: Session,
    *,
    workspace_id: int,
    kind: str,
    path: Path,
    options: ImportOptions,
    actor: str,
) -> ImportRun:
    """Record an import of an uploaded file and ask a worker to run it."""
    run = create_import_run(
        session, workspace_id=workspace_id, kind=kind, path=path, options=options, actor=actor
    )
    enqueue(session, IMPORT_JOB, {"import_id": run.id}, key=f"{IMPORT_JOB}:{run.id}")
    return run


def uploads_dir(runtime: Runtime) -> Path:
    """Where uploaded import files (and their error files) are kept."""
    return runtime.settings.data_dir / "imports"


def get_import_run(session: Session, *, workspace_id: int, run_id: int) -> ImportRun:
    """An import run of the workspace."""
    run = session.get(ImportRun, run_id)
    if run is None or run.workspace_id != workspace_id:
        raise NotFound(f"import {run_id} does not exist", field="import_id")
    return run


def list_import_runs(session: Session, *, workspace_id: int, limit: int = 50) -> list[ImportRun]:
    """The workspace's imports, newest first."""
    return list(
        session.scalars(
            select(ImportRun)
            .where(ImportRun.workspace_id == workspace_id)
            .order_by(ImportRun.id.desc())
            .limit(limit)
        )
    )


def error_file_for(runtime: Runtime, path: Path, run_id: int) -> Path:
    """Where the rejected rows of ``path`` go: next to it (``name.errors.csv``), or in the
    data folder when its folder cannot be written."""
    stem = path.name.split(".", 1)[0] or "import"
    beside = path.parent / f"{stem}.errors.csv"
    try:
        probe = path.parent / f".{stem}.errors-check-{run_id}"
        probe.touch()
        probe.unlink()
    except OSError:
        return runtime.settings.data_dir / "imports" / str(run_id) / f"{stem}.errors.csv"
    return beside


def run_import(
    runtime: Runtime, *, run_id: int, progress: Progress | None = None, again: bool = False
) -> ImportRun:
    """Run a queued (or interrupted) import to the end; a finished one is returned as is, a
    failed one too unless ``again``.

    Raises what stopped it (the run is then marked failed with the reason).
    """
    with _running:
        return _run(runtime, run_id, progress, again)


def _run(runtime: Runtime, run_id: int, progress: Progress | None, again: bool) -> ImportRun:
    with runtime.db.scope() as session:
        run = session.get(ImportRun, run_id)
        if run is None:
            raise NotFound(f"import {run_id} does not exist", field="import_id")
        if run.status == DONE or (run.status == FAILED and not again):
            return run
        workspace = session.get(Workspace, run.workspace_id)
        assert workspace is not None
        run.status, run.started_at, run.error = RUNNING, clock.now(), None
        kind, path = run.kind, Path(run.file_name)
        options = ImportOptions.from_json(run.options)
        started, actor, region = run.started_at, run.actor, workspace.phone_region
        workspace_id = workspace.id
    temp = runtime.settings.data_dir / "tmp" / f"import-{run_id}"
    warehouse_settings = runtime.settings.warehouse
    con = reader.connect(
        temp,
        memory_limit=warehouse_settings.duckdb_memory_limit,
        threads=warehouse_settings.duckdb_threads,
    )
    try:
        source = reader.open_source(con, path, SPECS[kind], options.mapping)
        _update(runtime, run_id, rows_total=source.total)
        ctx = ImportContext(
            runtime=runtime,
            run_id=run_id,
            workspace_id=workspace_id,
            region=region,
            path=path,
            options=options,
            source=source,
            actor=actor,
            started_at=started,
            progress=progress or no_progress,
        )
        counts = IMPORTERS[kind](ctx)
        error_file = error_file_for(runtime, path, run_id)
        rejected = reader.write_errors(con, error_file)
    except TactfulError as exc:
        _fail(runtime, run_id, exc.message)
        raise
    except Exception as exc:
        _fail(runtime, run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        con.close()
        shutil.rmtree(temp, ignore_errors=True)
    return _finish(runtime, run_id, counts, rejected, error_file if rejected else None)


def _update(runtime: Runtime, run_id: int, **values: object) -> None:
    with runtime.db.scope() as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        for name, value in values.items():
            setattr(run, name, value)


def _fail(runtime: Runtime, run_id: int, message: str) -> None:
    _update(runtime, run_id, status=FAILED, error=message[:8000], finished_at=clock.now())


def _finish(
    runtime: Runtime, run_id: int, counts: Counts, rejected: int, error_file: Path | None
) -> ImportRun:
    with runtime.db.scope() as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        run.status = DONE
        run.rows_imported, run.rows_duplicate, run.rows_rejected = (
            counts.imported,
            counts.duplicate,
            rejected,
        )
        run.error_file = str(error_file) if error_file else None
        run.finished_at = clock.now()
        details = {
            "kind": run.kind,
            "file": run.file_name,
            "rows": run.rows_total,
            "imported": counts.imported,
            "duplicate": counts.duplicate,
            "rejected": rejected,
            "live": bool(run.options.get("live")),
        }
        record_audit(
            session,
            workspace_id=run.workspace_id,
            actor=run.actor,
            action="import.finished",
            target_type="import",
            target_id=run.id,
            details=details,
        )
        # Features that keep derived data (metrics, segments) refresh after an import.
        domain_events.publish(
            session,
            IMPORTED_EVENT,
            {"workspace_id": run.workspace_id, "import_id": run.id, **details},
            key=str(run.id),
        )
        return run


def import_file(
    runtime: Runtime,
    *,
    workspace_id: int,
    kind: str,
    path: Path,
    options: ImportOptions,
    actor: str,
    progress: Progress | None = None,
) -> ImportRun:
    """Import a file now, in this process (the command line and the demo)."""
    check_import_file(runtime, kind=kind, path=path, options=options)
    with runtime.db.scope() as session:
        run_id = create_import_run(
            session,
            workspace_id=workspace_id,
            kind=kind,
            path=path.resolve(),
            options=options,
            actor=actor,
        ).id
    return run_import(runtime, run_id=run_id, progress=progress)
