"""``tactful campaigns``: define, launch, approve, cancel and follow campaigns from a shell.

``estimate`` and ``stats`` read the warehouse: with the embedded DuckDB, stop ``tactful
serve`` first or use the HTTP API (the same operations live under /v1/campaigns).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tactful.campaigns import service
from tactful.campaigns.schemas import CampaignIn, CampaignPatch
from tactful.config import Settings
from tactful.core.runtime import runtime_scope
from tactful.tenancy import service as tenancy

app = typer.Typer(
    help="Campaigns: create drafts, estimate, launch, approve, cancel, test-send, follow runs "
    "and statistics.",
    no_args_is_help=True,
)
console = Console()
WorkspaceOpt = Annotated[
    int | None, typer.Option(help="Workspace id (default: the first workspace)")
]
ActorOpt = Annotated[str, typer.Option("--as", help="Who is acting (recorded in the audit log)")]
FileArg = Annotated[Path, typer.Argument(help="A JSON file with the campaign's fields")]


def _workspace(session: Any, chosen: int | None) -> int:
    if chosen is not None:
        return chosen
    return int(tenancy.initialize(session, phone_region="RU", timezone="UTC").workspace.id)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _show(campaign: Any) -> None:
    console.print(
        f"campaign {campaign.id} “{campaign.name}”: [bold]{campaign.status}[/]"
        + (f" — {campaign.last_error}" if campaign.last_error else "")
    )


@app.command("list")
def list_campaigns(
    workspace_id: WorkspaceOpt = None,
    status: Annotated[str | None, typer.Option(help="Only campaigns in this status")] = None,
) -> None:
    """List campaigns with their status and next run."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        rows = service.list_campaigns(
            session, workspace_id=_workspace(session, workspace_id), status=status
        )
        runs = service.next_run_at(session, rows)
        table = Table("id", "name", "brand", "status", "runs", "next run")
        for c in rows:
            nxt = runs.get(c.id)
            table.add_row(
                str(c.id),
                c.name,
                str(c.brand_id),
                c.status,
                str(c.runs_started),
                nxt.isoformat(timespec="minutes") if nxt else "",
            )
    console.print(table)


@app.command()
def show(campaign_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """Print a campaign as JSON."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        campaign = service.get_campaign(
            session, workspace_id=_workspace(session, workspace_id), campaign_id=campaign_id
        )
        body = {c.key: getattr(campaign, c.key) for c in campaign.__table__.columns}
    console.print_json(json.dumps(body, default=str))


@app.command()
def create(definition: FileArg, workspace_id: WorkspaceOpt = None, actor: ActorOpt = "cli") -> None:
    """Create a draft from a JSON file (the body of POST /v1/campaigns)."""
    spec = CampaignIn.model_validate(_json(definition))
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign = service.create_campaign(
            session, workspace_id=_workspace(session, workspace_id), spec=spec, actor=actor
        )
        _show(campaign)


@app.command()
def update(
    campaign_id: int, changes: FileArg, workspace_id: WorkspaceOpt = None, actor: ActorOpt = "cli"
) -> None:
    """Change a draft with the fields of a JSON file (the body of PATCH)."""
    patch = CampaignPatch.model_validate(_json(changes))
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign = service.update_campaign(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            patch=patch,
            actor=actor,
        )
        _show(campaign)


@app.command()
def estimate(campaign_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """The audience a run would take now, its target and control groups, reach and cost."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        result = service.estimate(
            runtime,
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
        )
    console.print_json(json.dumps(result.__dict__))


@app.command()
def launch(
    campaign_id: int,
    expected: Annotated[int, typer.Option(help="The target-group size you confirm")],
    tolerance: Annotated[
        float, typer.Option(help="How far a run may exceed the confirmed size (0.05 = 5 %)")
    ] = 0.05,
    workspace_id: WorkspaceOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Launch a draft: it awaits approval, or is scheduled."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign = service.launch(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            expected_recipients=expected,
            tolerance=tolerance,
            actor=actor,
        )
        _show(campaign)


@app.command()
def approve(
    campaign_id: int,
    comment: Annotated[str | None, typer.Option(help="Recorded in the audit log")] = None,
    workspace_id: WorkspaceOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Approve a launched campaign (not as whoever launched it): it is scheduled."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign = service.approve(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            actor=actor,
            comment=comment,
        )
        _show(campaign)


@app.command()
def reject(
    campaign_id: int,
    comment: Annotated[str | None, typer.Option(help="Why (the marketer sees it)")] = None,
    workspace_id: WorkspaceOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Send a campaign awaiting approval back to draft."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign = service.reject(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            actor=actor,
            comment=comment,
        )
        _show(campaign)


@app.command()
def cancel(campaign_id: int, workspace_id: WorkspaceOpt = None, actor: ActorOpt = "cli") -> None:
    """Cancel: stop every run, wave, checkpoint and delivery not sent yet."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        campaign, stopped = service.cancel(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            actor=actor,
        )
        _show(campaign)
    console.print("stopped: " + ", ".join(f"{n:,} {what}" for what, n in stopped.items()))


@app.command("test-send")
def send_test(
    campaign_id: int,
    customer: Annotated[
        list[int] | None, typer.Option(help="A test recipient (repeat; default: every one)")
    ] = None,
    workspace_id: WorkspaceOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Send the campaign's message to test recipients only."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope() as session:
        outcomes = service.test_send(
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
            customer_ids=customer,
            actor=actor,
        )
    for customer_id, o in outcomes:
        console.print(f"customer {customer_id}: {o.outcome} ({o.reason}) {o.channel or ''}")


@app.command()
def runs(campaign_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """The campaign's runs: status, audience, target and control groups, waves."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        rows = service.list_runs(
            session, workspace_id=_workspace(session, workspace_id), campaign_id=campaign_id
        )
        table = Table("run", "status", "scheduled", "audience", "target", "control", "waves")
        for r in rows:
            table.add_row(
                str(r.number),
                r.status + (f" ({r.error})" if r.error else ""),
                r.scheduled_at.isoformat(timespec="minutes"),
                f"{r.audience:,}",
                f"{r.targeted:,}",
                f"{r.control:,}",
                str(r.waves),
            )
    console.print(table)


@app.command()
def stats(campaign_id: int, workspace_id: WorkspaceOpt = None) -> None:
    """Audience, suppressions, sent … clicked, unsubscribes, cost, conversions vs control."""
    with runtime_scope(Settings()) as runtime, runtime.db.scope(readonly=True) as session:
        figures = service.stats(
            runtime,
            session,
            workspace_id=_workspace(session, workspace_id),
            campaign_id=campaign_id,
        )
    console.print_json(json.dumps(figures))
