"""The customer-facing pages (unsubscribe, preference centre), rendered with Jinja."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

CHANNEL_LABELS = {
    "email": "E-mail",
    "sms": "SMS",
    "push": "App notifications",
    "viber": "Viber",
    "telegram": "Telegram",
}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("tactful.messaging", "templates"),
        autoescape=select_autoescape(default=True),
    )


def render_page(name: str, **values: Any) -> str:
    """One page as HTML."""
    return _environment().get_template(name).render(labels=CHANNEL_LABELS, **values)
