"""Signed session cookies and CSRF tokens for the web UI."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from tactful.core.errors import Unauthorized
from tactful.core.security import Signer, random_token

COOKIE = "tactful_session"
MAX_AGE = 12 * 3600
PURPOSE = "web-session"


@dataclass(frozen=True)
class WebSession:
    """Who is signed in, and the token every form and htmx request must carry."""

    user_id: int
    csrf: str


def issue(signer: Signer, user_id: int) -> tuple[str, WebSession]:
    """A new cookie value for a user who just signed in."""
    session = WebSession(user_id=user_id, csrf=random_token(18))
    return signer.dumps({"u": user_id, "c": session.csrf}, purpose=PURPOSE), session


def read(signer: Signer, cookie: str | None) -> WebSession | None:
    """The session a cookie carries, or None when missing, tampered with or expired."""
    if not cookie:
        return None
    try:
        data: Any = signer.loads(cookie, purpose=PURPOSE, max_age=MAX_AGE)
    except Unauthorized:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int):
        return None
    return WebSession(user_id=data["u"], csrf=str(data.get("c", "")))


def csrf_ok(session: WebSession, presented: str | None) -> bool:
    """True when a state-changing request carries the session's token."""
    return bool(presented) and hmac.compare_digest(session.csrf, str(presented))
