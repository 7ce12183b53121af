"""``tactful import``: customers, purchases, events, stores and products from CSV or Parquet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tactful.config import Settings
from tactful.core.logging import configure_logging
from tactful.core.runtime import Runtime, build_runtime
from tactful.events import service
from tactful.events.models import ImportRun

app = typer.Typer(
    help="Import customers, purchases, events, stores or products from a CSV or Parquet file. "
    "Columns are matched to fields by name (--map changes that); every rejected row is "
    "written with its row number and reason to NAME.errors.csv next to the file; importing "
    "the same file again imports nothing twice.",
    no_args_is_help=True,
)
console = Console()

FileArg = Annotated[
    Path,
    typer.Argument(help="A .csv, .tsv or .txt file (optionally .gz) or a .parquet file"),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="COLUMN=FIELD: read the file's COLUMN as FIELD (repeatable; COLUMN= skips it)",
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option("--mapping", help="A JSON, TOML or YAML file of column: field pairs"),
]
SourceOpt = Annotated[
    str, typer.Option(help="The source system, for attribute priority (e.g. crm, pos, shop)")
]
NamespaceOpt = Annotated[
    str, typer.Option(help="The id system external ids belong to (user_id = Segment's userId)")
]
BrandOpt = Annotated[
    str | None,
    typer.Option(help="Brand (slug or id) given advertising consents; default the first brand"),
]
LiveOpt = Annotated[
    bool,
    typer.Option(
        "--live/--historical",
        help="Let the rows fire triggers like live calls (imports are historical by default)",
    ),
]
WorkspaceOpt = Annotated[
    str | None, typer.Option(help="Workspace slug (default: the first workspace)")
]


def progress_bar() -> Progress:
    """The bar imports and the demo show."""
    return Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def run_with_progress(
    runtime: Runtime,
    *,
    workspace_id: int,
    kind: str,
    path: Path,
    options: service.ImportOptions,
    actor: str,
    bar: Progress,
) -> ImportRun:
    """Import one file, its stages shown on ``bar``."""
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        label = f"{kind}: {stage}" if stage != kind else kind
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=max(total, 1))
        bar.update(tasks[label], completed=done, total=max(total, 1))

    return service.import_file(
        runtime,
        workspace_id=workspace_id,
        kind=kind,
        path=path,
        options=options,
        actor=actor,
        progress=report,
    )


def summary(runs: list[tuple[ImportRun, float]]) -> Table:
    """What happened to each file."""
    table = Table("import", "rows", "imported", "duplicate", "rejected", "seconds", "errors")
    for run, seconds in runs:
        table.add_row(
            f"{run.kind} ({Path(run.file_name).name})",
            f"{run.rows_total:,}",
            f"{run.rows_imported:,}",
            f"{run.rows_duplicate:,}",
            f"{run.rows_rejected:,}",
            f"{seconds:.1f}",
            run.error_file or "",
        )
    return table


def _import(
    kind: str,
    file: Path,
    map_: list[str] | None,
    mapping: Path | None,
    source: str,
    namespace: str,
    brand: str | None,
    live: bool,
    workspace: str | None,
) -> None:
    settings = Settings()
    configure_logging(level=settings.log.level, json_output=settings.log.json_output)
    columns = service.load_mapping_file(mapping) if mapping else {}
    columns.update(service.parse_mapping(map_ or []))
    runtime = build_runtime(settings)
    try:
        with runtime.db.scope(readonly=True) as session:
            workspace_id = service.import_workspace_id(session, workspace)
            brand_id = service.import_brand_id(session, workspace_id, brand)
        options = service.ImportOptions(
            mapping=columns, source=source, namespace=namespace, brand_id=brand_id, live=live
        )
        started = time.perf_counter()
        with progress_bar() as bar:
            run = run_with_progress(
                runtime,
                workspace_id=workspace_id,
                kind=kind,
                path=file,
                options=options,
                actor="cli",
                bar=bar,
            )
        console.print(summary([(run, time.perf_counter() - started)]))
    finally:
        runtime.close()


@app.command()
def customers(
    file: FileArg,
    map_: MapOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = "import",
    namespace: NamespaceOpt = "user_id",
    brand: BrandOpt = None,
    live: LiveOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Customers: identities (external_id, phone, email, loyalty_card, app_device_id,
    anonymous_id), first_name, last_name, gender, birthday, timezone, city, locale, is_test,
    consent_<channel> and consent_personal_data; any other column is a custom attribute."""
    _import("customers", file, map_, mapping, source, namespace, brand, live, workspace)


@app.command()
def purchases(
    file: FileArg,
    map_: MapOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = "import",
    namespace: NamespaceOpt = "user_id",
    brand: BrandOpt = None,
    live: LiveOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Receipt lines, one per row with the receipt's columns repeated: receipt_id, line_no,
    kind (sale/return), original_receipt_id, store_id, channel, occurred_at, product_id,
    category_id, quantity, unit_price, discount, amount, total, bonus_accrued, bonus_spent,
    currency, customer_external_id, customer_card, customer_phone, customer_email."""
    _import("purchases", file, map_, mapping, source, namespace, brand, live, workspace)


@app.command()
def events(
    file: FileArg,
    map_: MapOpt = None,
    mapping: MappingOpt = None,
    source: SourceOpt = "import",
    namespace: NamespaceOpt = "user_id",
    brand: BrandOpt = None,
    live: LiveOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Events: event_id, type (track, page, screen), event, customer_external_id,
    anonymous_id, device_id, occurred_at, channel, properties (a JSON object); any other
    column is a property."""
    _import("events", file, map_, mapping, source, namespace, brand, live, workspace)


@app.command()
def stores(
    file: FileArg,
    map_: MapOpt = None,
    mapping: MappingOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Stores: store_id, name, city, region, timezone, format; other columns are attributes."""
    _import("stores", file, map_, mapping, "import", "user_id", None, False, workspace)


@app.command()
def products(
    file: FileArg,
    map_: MapOpt = None,
    mapping: MappingOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Products: product_id, name, category_id, category, brand, price (minor units), gender
    (f, m), image_url, url; other columns are attributes."""
    _import("products", file, map_, mapping, "import", "user_id", None, False, workspace)
