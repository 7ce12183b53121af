"""Loading the demo: generate the chain's files into the data folder and import them with the
bulk importer, as a retailer would import its own exports.

Loading again changes nothing: the files are generated with the seed and day recorded on the
first load (so they come out the same), and every import skips what it imported before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.demo.generate import DemoFiles, generate
from tactful.events import service as events
from tactful.events.models import ImportRun

MANIFEST = "manifest.json"
# (import kind, generated file), in the order the imports need them
FILES = (
    ("stores", "stores"),
    ("products", "products"),
    ("customers", "customers"),
    ("purchases", "receipts"),
    ("events", "events"),
)

# (import kind, stage, rows done, rows in all)
ImportProgress = Callable[[str, str, int, int], None]
GenerateProgress = Callable[[str, float], None]


@dataclass(frozen=True)
class DemoLoad:
    """What the demo generated and what each import did."""

    files: DemoFiles
    runs: list[tuple[ImportRun, float]]
    seconds: float


def demo_dir(runtime: Runtime) -> Path:
    """Where the demo's files live: ``demo`` in the data folder."""
    return runtime.settings.data_dir / "demo"


def _as_of(folder: Path, customers: int, seed: int, as_of: date | None) -> date | None:
    """The day a previous load of the same size and seed used, unless one is given."""
    if as_of is not None:
        return as_of
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if recorded.get("customers") == customers and recorded.get("seed") == seed:
        return date.fromisoformat(recorded["as_of"])
    return None


def _reporter(kind: str, report: ImportProgress | None) -> Callable[[str, int, int], None]:
    def progress(stage: str, done: int, total: int) -> None:
        if report is not None:
            report(kind, stage, done, total)

    return progress


def load_demo(
    runtime: Runtime,
    *,
    customers: int = 20_000,
    seed: int = 42,
    as_of: date | None = None,
    on_generate: GenerateProgress | None = None,
    on_import: ImportProgress | None = None,
) -> DemoLoad:
    """Generate the demo files and import them into the first workspace."""
    started = time.perf_counter()
    folder = demo_dir(runtime)
    day = _as_of(folder, customers, seed, as_of) or clock.now().date()
    files = generate(folder, customers=customers, seed=seed, as_of=day, progress=on_generate)
    with runtime.db.scope(readonly=True) as session:
        workspace_id = events.import_workspace_id(session, None)
    runs: list[tuple[ImportRun, float]] = []
    for kind, name in FILES:
        began = time.perf_counter()
        run = events.import_file(
            runtime,
            workspace_id=workspace_id,
            kind=kind,
            path=getattr(files, name),
            options=events.ImportOptions(),
            actor="demo",
            progress=_reporter(kind, on_import),
        )
        runs.append((run, time.perf_counter() - began))
    (folder / MANIFEST).write_text(
        json.dumps({"customers": customers, "seed": seed, "as_of": day.isoformat()})
    )
    return DemoLoad(files=files, runs=runs, seconds=time.perf_counter() - started)
