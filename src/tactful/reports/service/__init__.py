"""Report use cases, one module each; this package is what the web UI and the API call."""

from __future__ import annotations

from tactful.reports.service.dashboard import Dashboard, dashboard, week_start

__all__ = ["Dashboard", "dashboard", "week_start"]
