"""What every importer receives: the runtime, the run, its options and the staged file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tactful.core.runtime import Runtime
from tactful.events.importing.reader import Source

# (what is happening, rows done, rows in all)
Progress = Callable[[str, int, int], None]


def no_progress(_stage: str, _done: int, _total: int) -> None:
    """A progress callback that shows nothing."""


@dataclass(frozen=True)
class ImportOptions:
    """How a file is read and what its rows mean."""

    # file column -> field ("" skips the column)
    mapping: dict[str, str] = field(default_factory=dict)
    # the source system, for attribute priority ("crm" often outranks everything)
    source: str = "import"
    # the id system external ids belong to ("user_id" is the one Segment calls use)
    namespace: str = "user_id"
    # the brand advertising consents are given to (None: the workspace's first brand)
    brand_id: int | None = None
    # rows fire triggers like live calls (purchases and events then go through the inbox)
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "mapping": dict(self.mapping),
            "source": self.source,
            "namespace": self.namespace,
            "brand_id": self.brand_id,
            "live": self.live,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportOptions:
        return cls(
            mapping={str(k): str(v) for k, v in (data.get("mapping") or {}).items()},
            source=str(data.get("source") or "import"),
            namespace=str(data.get("namespace") or "user_id"),
            brand_id=data.get("brand_id"),
            live=bool(data.get("live")),
        )


@dataclass
class Counts:
    """What happened to the rows of a file."""

    imported: int = 0
    duplicate: int = 0


@dataclass(frozen=True)
class ImportContext:
    """One import being run."""

    runtime: Runtime
    run_id: int
    workspace_id: int
    region: str
    path: Path
    options: ImportOptions
    source: Source
    actor: str
    started_at: datetime
    progress: Progress = no_progress

    @property
    def con(self) -> Any:
        """The import's private DuckDB connection (the file is the view ``src``)."""
        return self.source.con

    @property
    def tag(self) -> str:
        """The source recorded on what the import writes (its first part ranks attributes)."""
        return f"{self.options.source}:import-{self.run_id}"[:100]

    def evidence(self, line: int) -> dict[str, Any]:
        """Where a consent came from: this import's file and row."""
        return {"import_id": self.run_id, "file": self.path.name, "line": line}
