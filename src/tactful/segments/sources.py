"""Where segments read profiles and metrics from.

The metrics package keeps the warehouse's profile copy and the metrics; segments sit on the
same layer and may not import it, so ``wiring.py`` hands the metrics service over here with
:func:`use_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import ibis

from tactful.core.warehouse import Warehouse


class MetricInfo(Protocol):
    """What segments need to know of a metric."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def values(self) -> tuple[str, ...]: ...

    @property
    def meaning(self) -> str: ...

    @property
    def default(self) -> int | str | None: ...


class MetricsSource(Protocol):
    """The metrics service, as segments use it."""

    def metric_specs(self) -> Sequence[MetricInfo]: ...

    def metrics_table(
        self, warehouse: Warehouse, *, workspace_id: int, now: datetime, names: Sequence[str]
    ) -> ibis.Table: ...

    def profiles_table(self, warehouse: Warehouse, *, workspace_id: int) -> ibis.Table: ...

    def attributes_table(self, warehouse: Warehouse, *, workspace_id: int) -> ibis.Table: ...

    def reach_table(self, warehouse: Warehouse, *, workspace_id: int) -> ibis.Table: ...

    def json_text(self, warehouse: Warehouse, column: ibis.Value, key: str) -> ibis.StringValue: ...

    def counted_from(self, metric: str) -> str | None: ...

    def days_since_within(
        self, stamp: ibis.TimestampValue, *, now: datetime, low: int | None, high: int | None
    ) -> ibis.BooleanValue: ...


_SOURCES: list[MetricsSource] = []


def use_metrics(source: MetricsSource) -> None:
    """Read profiles and metrics from ``source`` (called by ``wiring.install``)."""
    _SOURCES[:] = [source]


def metrics() -> MetricsSource:
    """The registered metrics source."""
    if not _SOURCES:
        raise RuntimeError("no metrics source: call tactful.wiring.install() first")
    return _SOURCES[0]
