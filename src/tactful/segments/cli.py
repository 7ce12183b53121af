"""``tactful segments``: define, check, size, refresh and export segments from a shell.

Needs the warehouse to itself: with the embedded DuckDB, stop ``tactful serve`` first or use
the HTTP API (the same operations live under /v1/segments).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tactful.config import Settings
from tactful.core.runtime import runtime_scope
from tactful.segments import memberships, service
from tactful.tenancy import service as tenancy

app = typer.Typer(
    help="Segments: define, validate, preview, size, refresh, export.", no_args_is_help=True
)
console = Console()
ACTOR = "cli"
WorkspaceOpt = Annotated[
    int | None, typer.Option(help="Workspace id (default: the first workspace)")
]
FileArg = Annotated[Path, typer.Argument(help="A JSON file with the definition tree")]


def _workspace(session: Any, chosen: int | None) -> int:
    if chosen is not None:
        return chosen
    return int(tenancy.initialize(session, phone_region="RU", timezone="UTC").workspace.id)


def _definition(path: Path) -> Any:
    return json.loads(path.read_text())


@app.command("list")
def list_segments(workspace_id: WorkspaceOpt = None) -> None:
    """List segments with their status and size."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        ws = _workspace(session, workspace_id)
        table = Table("id", "name", "version", "mode", "status", "members", "last good refresh")
        for s in service.list_segments(session, workspace_id=ws):
            good = (
                s.last_good_refresh_at.isoformat(timespec="seconds")
                if s.last_good_refresh_at
                else ""
            )
            table.add_row(
                str(s.id),
                s.name,
                str(s.version),
                s.refresh_mode,
                s.status,
                f"{s.member_count:,}",
                good,
            )
    console.print(table)


@app.command()
def validate(definition: FileArg, workspace_id: WorkspaceOpt = None) -> None:
    """Check a definition file and print it in plain language."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        _node, text = service.check_definition(
            session,
            workspace_id=_workspace(session, workspace_id),
            definition=_definition(definition),
        )
    console.print(f"[green]valid[/]: {text}")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The segment's name")],
    definition: FileArg,
    workspace_id: WorkspaceOpt = None,
    mode: Annotated[str, typer.Option(help="manual, scheduled or continuous")] = "manual",
    every: Annotated[int | None, typer.Option(help="Minutes between scheduled refreshes")] = None,
) -> None:
    """Create a segment from a definition file."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        segment = service.create_segment(
            session,
            workspace_id=_workspace(session, workspace_id),
            name=name,
            definition=_definition(definition),
            refresh_mode=mode,
            refresh_every_minutes=every,
            actor=ACTOR,
        )
        console.print(f"segment {segment.id} created (version {segment.version})")


@app.command()
def update(segment_id: int, definition: FileArg, workspace_id: WorkspaceOpt = None) -> None:
    """Give a segment a new definition (a new version)."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        segment = service.update_segment(
            session,
            workspace_id=_workspace(session, workspace_id),
            segment_id=segment_id,
            definition=_definition(definition),
            actor=ACTOR,
        )
        console.print(f"segment {segment.id} is at version {segment.version}")


@app.command()
def preview(segment_id: int, workspace_id: WorkspaceOpt = None, limit: int = 10) -> None:
    """Size and a sample of members with the values that qualified them."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        result = service.preview(
            runtime,
            session,
            workspace_id=_workspace(session, workspace_id),
            segment_id=segment_id,
            limit=limit,
        )
    console.print(f"{result.size:,} customers: {result.description}")
    for row in result.sample:
        console.print(row)


@app.command()
def size(segment_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """How many customers the segment matches now."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        count = service.size(
            runtime, session, workspace_id=_workspace(session, workspace_id), segment_id=segment_id
        )
    console.print(f"{count:,}")


@app.command()
def refresh(segment_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """Recompute memberships now and record who entered and exited."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        outcome = memberships.refresh_segment(
            runtime, session, workspace_id=_workspace(session, workspace_id), segment_id=segment_id
        )
    console.print(
        f"{outcome.status}: {outcome.members:,} members, {outcome.entered:,} entered, "
        f"{outcome.exited:,} exited" + (f" — {outcome.error}" if outcome.error else "")
    )
    if outcome.error:
        raise typer.Exit(1)


@app.command()
def members(segment_id: int, workspace_id: WorkspaceOpt = None, limit: int = 100) -> None:
    """List current members (customer id and when they entered)."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        rows = memberships.members(
            session,
            workspace_id=_workspace(session, workspace_id),
            segment_id=segment_id,
            limit=limit,
        )
        for row in rows:
            console.print(f"{row.customer_id}\t{row.entered_at.isoformat(timespec='seconds')}")


@app.command()
def export(
    segment_id: int,
    output: Annotated[Path, typer.Option(help="File to write")],
    workspace_id: WorkspaceOpt = None,
    format: Annotated[str, typer.Option(help="csv or parquet")] = "csv",
    ads: Annotated[
        str | None,
        typer.Option(help="google or meta: only SHA-256 hashes of e-mails and phones"),
    ] = None,
) -> None:
    """Export members (audited); --ads writes only hashed contacts for an ad platform."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        ws = _workspace(session, workspace_id)
        if ads is not None:
            body = memberships.export_for_ads(
                session, workspace_id=ws, segment_id=segment_id, platform=ads, actor=ACTOR
            )
        else:
            body = memberships.export_members(
                session, workspace_id=ws, segment_id=segment_id, format=format, actor=ACTOR
            )
    output.write_bytes(body)
    console.print(f"wrote {len(body):,} bytes to {output}")
