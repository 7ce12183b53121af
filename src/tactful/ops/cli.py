"""``tactful jobs``: inspect and retry the job queue."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tactful.config import Settings
from tactful.core.jobs import queue
from tactful.core.runtime import runtime_scope

app = typer.Typer(help="Inspect the job queue and retry dead jobs.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="queued, running, done or dead")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs of this kind")] = None,
    limit: Annotated[int, typer.Option(help="How many")] = 50,
) -> None:
    """List jobs, newest first; dead jobs show their last error."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        counts = queue.counts_by_status(session)
        jobs = queue.list_jobs(session, status=status, name=name, limit=limit)
        table = Table("id", "name", "status", "attempts", "run at", "last error")
        for job in jobs:
            error = (job.last_error or "").strip().splitlines()
            table.add_row(
                str(job.id),
                job.name,
                job.status,
                f"{job.attempts}/{job.max_attempts}",
                job.run_at.isoformat(timespec="seconds"),
                error[-1] if error else "",
            )
    console.print(table)
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no jobs")


@app.command()
def retry(
    job_id: Annotated[int | None, typer.Argument(help="A dead job's id")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Retry every dead job")] = False,
) -> None:
    """Put a dead job (or all of them) back in the queue."""
    if job_id is None and not all_dead:
        raise typer.BadParameter("give a job id or --all-dead")
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        count = queue.retry_dead(session, job_id)
    console.print(f"{count} job(s) queued again.")
