"""The ``tactful`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from tactful import wiring
from tactful.app import create_app
from tactful.bench import run_benchmarks
from tactful.config import Settings
from tactful.core.errors import TactfulError
from tactful.core.logging import configure_logging
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime
from tactful.loyalty import cli as loyalty_cli
from tactful.metrics import cli as metrics_cli
from tactful.ops import cli as ops_cli
from tactful.segments import cli as segments_cli
from tactful.tenancy import service as tenancy_service
from tactful.worker import run_process

app = typer.Typer(
    name="tactful",
    help="Tactful: one customer profile, segments, campaigns and journeys through one contact "
    "policy. With no configuration everything lives in ./tactful-data (SQLite + DuckDB).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ops_cli.app, name="jobs")
app.add_typer(metrics_cli.app, name="metrics")
app.add_typer(segments_cli.app, name="segments")
app.add_typer(loyalty_cli.app, name="loyalty")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _runtime() -> Runtime:
    settings = Settings()
    configure_logging(level=settings.log.level, json_output=settings.log.json_output)
    wiring.install()
    return build_runtime(settings)


def prepare(runtime: Runtime, *, quiet: bool = False) -> None:
    """Migrate the database and create the default workspace on first start."""
    applied = upgrade(runtime.db.engine)
    if applied and not quiet:
        console.print(f"[green]Database migrated[/] ({len(applied)} revision(s) applied).")
    settings = runtime.settings
    with runtime.db.scope() as session:
        result = tenancy_service.initialize(
            session, phone_region=settings.default_region, timezone=settings.default_timezone
        )
    if result.created:
        console.print(
            f"[bold green]Created workspace {result.workspace.slug!r} and brand "
            f"{result.brand.slug!r}.[/]\nAdmin API key (shown once, keep it safe):\n"
            f"  [bold]{result.admin_key}[/]"
        )
    elif not quiet:
        console.print(f"Workspace {result.workspace.slug!r} is ready.")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    runtime = _runtime()
    try:
        applied = upgrade(runtime.db.engine)
        console.print(f"Database is up to date ({len(applied)} revision(s) applied).")
    finally:
        runtime.close()


@app.command()
def init() -> None:
    """Create the default workspace, brand and an admin API key (once; idempotent)."""
    runtime = _runtime()
    try:
        prepare(runtime)
    finally:
        runtime.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run job workers in this process")
    ] = True,
) -> None:
    """Run the HTTP API (and, by default, the job workers) after migrating the database."""
    runtime = _runtime()
    prepare(runtime, quiet=True)
    serve_runtime(runtime, host=host, port=port, worker=worker)


def serve_runtime(
    runtime: Runtime, *, host: str | None = None, port: int | None = None, worker: bool = True
) -> None:
    """Serve until interrupted, then close the runtime."""
    settings = runtime.settings
    host = host or settings.server.host
    port = port or settings.server.port
    run_worker = worker or runtime.db.dialect == "sqlite"
    app_ = create_app(runtime=runtime, run_worker=run_worker)
    console.print(f"Tactful is listening on [bold]http://{host}:{port}[/] (API docs at /docs).")
    try:
        uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)
    finally:
        runtime.close()


@app.command("worker")
def worker_command(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once")] = None,
) -> None:
    """Run job workers in this process (PostgreSQL only; any number may run)."""
    runtime = _runtime()
    try:
        run_process(runtime, concurrency=concurrency)
    finally:
        runtime.close()


@app.command()
def bench(
    names: Annotated[
        list[str] | None, typer.Argument(help="Benchmarks to run (default: all)")
    ] = None,
    scale: Annotated[str, typer.Option(help="small (quick) or full (the issue's sizes)")] = "small",
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON")] = None,
) -> None:
    """Run the benchmarks in benchmarks/, each beside its named baseline."""
    configure_logging(level="WARNING")
    run_benchmarks(list(names or []), scale=scale, output=output, console=console)


def main() -> None:
    """Entry point: one clear sentence instead of a traceback for errors a person can fix."""
    try:
        app()
    except TactfulError as exc:
        err_console.print(f"[bold red]Error:[/] {exc.message}")
        sys.exit(2)
