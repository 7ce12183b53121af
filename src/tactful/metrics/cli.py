"""``tactful metrics``: rebuild metrics and resync profiles in the warehouse."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from tactful.config import Settings
from tactful.core.runtime import runtime_scope
from tactful.metrics import service

app = typer.Typer(
    help="Per-customer metrics in the warehouse. Needs the warehouse to itself: with the "
    "embedded DuckDB, stop `tactful serve` first (or use POST /v1/metrics/rebuild).",
    no_args_is_help=True,
)
console = Console()


@app.command()
def rebuild(
    workspace_id: Annotated[
        int | None, typer.Option(help="Only this workspace (default: every workspace)")
    ] = None,
    profiles: Annotated[
        bool, typer.Option("--profiles/--no-profiles", help="Copy every profile again first")
    ] = True,
) -> None:
    """Copy profiles to the warehouse and recompute every customer's metrics."""
    with runtime_scope(Settings()) as runtime:
        with runtime.db.scope(readonly=True) as session:
            chosen = [workspace_id] if workspace_id is not None else service.workspaces(session)
        for ws in chosen:
            if profiles:
                synced = service.sync_profiles(runtime, workspace_id=ws)
                console.print(f"workspace {ws}: {synced.customers:,} profiles copied")
            with runtime.db.scope() as session:
                outcome = service.rebuild_metrics(runtime, session, workspace_id=ws)
            console.print(f"workspace {ws}: metrics of {outcome.customers:,} customers rebuilt")
