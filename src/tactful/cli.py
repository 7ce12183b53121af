"""The ``tactful`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import TaskID

from tactful import wiring
from tactful.app import create_app
from tactful.bench import run_benchmarks
from tactful.campaigns import cli as campaigns_cli
from tactful.config import Settings
from tactful.core.errors import TactfulError
from tactful.core.jobs.registry import own_process_jobs
from tactful.core.logging import configure_logging
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime, prepare_heap_for_serving
from tactful.demo.load import load_demo
from tactful.events import cli as events_cli
from tactful.loyalty import cli as loyalty_cli
from tactful.metrics import cli as metrics_cli
from tactful.ops import cli as ops_cli
from tactful.segments import cli as segments_cli
from tactful.tenancy import service as tenancy_service
from tactful.worker import OwnProcessWorker, run_process

app = typer.Typer(
    name="tactful",
    help="Tactful: one customer profile, segments, campaigns and journeys through one contact "
    "policy. With no configuration everything lives in ./tactful-data (SQLite + DuckDB).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ops_cli.app, name="jobs")
# these commands compile segments and publish domain events: the wiring must be in place
app.add_typer(metrics_cli.app, name="metrics", callback=wiring.install)
app.add_typer(segments_cli.app, name="segments", callback=wiring.install)
app.add_typer(loyalty_cli.app, name="loyalty")
app.add_typer(events_cli.app, name="import", callback=wiring.install)
app.add_typer(campaigns_cli.app, name="campaigns", callback=wiring.install)
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
            f"  [bold]{result.admin_key}[/]\n"
            f"Sign in to the web UI as [bold]{result.owner_email}[/] with the password "
            f"[bold]{result.owner_password}[/] (shown once)."
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
    second = None
    if run_worker and runtime.db.dialect == "sqlite" and settings.jobs.own_process:
        second = OwnProcessWorker().start()
    app_ = create_app(
        runtime=runtime,
        run_worker=run_worker,
        skip_jobs=own_process_jobs() if second is not None else frozenset(),
    )
    console.print(f"Tactful is listening on [bold]http://{host}:{port}[/] (API docs at /docs).")
    prepare_heap_for_serving()
    try:
        uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)
    finally:
        if second is not None:
            second.stop()
        runtime.close()


@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="How many customers to generate")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data")] = 42,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Start the server when loaded")
    ] = True,
) -> None:
    """Generate a retail demo (a home-and-garden chain with a web shop) into the data folder,
    import it, then serve. Running it again imports nothing twice."""
    runtime = _runtime()
    prepare(runtime, quiet=True)
    with events_cli.progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def show(label: str, done: float, total: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=max(total, 1))
            bar.update(tasks[label], completed=done, total=max(total, 1))

        result = load_demo(
            runtime,
            customers=customers,
            seed=seed,
            on_generate=lambda stage, fraction: show(f"generate {stage}", fraction * 100, 100),
            on_import=lambda kind, stage, done, total: show(
                kind if stage == kind else f"{kind}: {stage}", done, total
            ),
        )
    console.print(events_cli.summary(result.runs))
    files = result.files
    console.print(
        f"Demo in {files.directory}: {files.customers_count:,} customers, "
        f"{files.receipts_count:,} receipts ({files.receipt_lines_count:,} lines), "
        f"{files.events_count:,} events; generated and loaded in {result.seconds:.1f} s."
    )
    if serve:
        serve_runtime(runtime)
    else:
        runtime.close()


@app.command("worker")
def worker_command(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once")] = None,
    own_process_jobs: Annotated[
        bool,
        typer.Option(
            "--own-process-jobs",
            help="Run only the jobs that get a process of their own (sending messages); "
            "`tactful serve` starts one such worker on the embedded SQLite default",
        ),
    ] = False,
    parent: Annotated[
        int | None, typer.Option(hidden=True, help="Stop when this process is gone")
    ] = None,
) -> None:
    """Run job workers in this process (PostgreSQL; any number may run)."""
    runtime = _runtime()
    try:
        run_process(
            runtime, concurrency=concurrency, own_process_only=own_process_jobs, parent=parent
        )
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
