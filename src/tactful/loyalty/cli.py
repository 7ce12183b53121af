"""``tactful loyalty``: prove the ledger, and print the liability and activity reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tactful.config import Settings
from tactful.core import clock
from tactful.core.runtime import runtime_scope
from tactful.loyalty.service import ledger, programs, reports

app = typer.Typer(help="Loyalty ledger checks and reports.", no_args_is_help=True)
console = Console()


@app.command()
def verify(
    program_id: Annotated[int, typer.Argument(help="The program to check")],
    workspace_id: Annotated[int, typer.Option(help="The program's workspace")] = 1,
) -> None:
    """Prove every cached balance and lot equals the sum of its ledger lines."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        program = programs.get_program(session, workspace_id=workspace_id, program_id=program_id)
        checked, problems = ledger.verify_program(session, program_id=program.id)
    for problem in problems:
        console.print(problem)
    console.print(f"{checked} account(s) checked, {len(problems)} mismatch(es).")
    if problems:
        raise typer.Exit(1)


@app.command()
def liability(
    program_id: Annotated[int, typer.Argument(help="The program")],
    workspace_id: Annotated[int, typer.Option(help="The program's workspace")] = 1,
    months: Annotated[int, typer.Option(help="Months in the expiry profile")] = 12,
) -> None:
    """Outstanding points, their value, and when they expire."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        report = reports.liability(
            session, workspace_id=workspace_id, program_id=program_id, months=months
        )
    console.print(
        f"Outstanding: {report.outstanding_points} points ({report.available_points} available, "
        f"{report.pending_points} pending) worth {report.outstanding_value} "
        f"{report.currency} minor units, on {report.accounts_with_points} account(s)."
    )
    table = Table("expires", "points")
    for bucket in report.expiry_profile:
        table.add_row(bucket.label, str(bucket.points))
    console.print(table)


@app.command()
def activity(
    program_id: Annotated[int, typer.Argument(help="The program")],
    workspace_id: Annotated[int, typer.Option(help="The program's workspace")] = 1,
    days: Annotated[int, typer.Option(help="How many days back from now")] = 30,
    period: Annotated[str, typer.Option(help="day, week or month")] = "day",
) -> None:
    """Points accrued, granted, redeemed, expired and adjusted per period."""
    end = clock.now()
    start: datetime = end - timedelta(days=days)
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        report = reports.activity(
            session,
            workspace_id=workspace_id,
            program_id=program_id,
            start=start,
            end=end,
            period=period,
        )
    table = Table("period", "accrued", "bonus", "redeemed", "expired", "adjusted")
    for row in [*report.periods, report.totals]:
        label = "total" if row is report.totals else row.starts_at.isoformat(timespec="minutes")
        table.add_row(
            label,
            *(str(v) for v in (row.accrued, row.bonus, row.redeemed, row.expired, row.adjusted)),
        )
    console.print(table)
