"""The marketer's web UI: server-rendered pages (Jinja2 + htmx) on top of the services."""
