"""Who is calling: the principal every service call is made on behalf of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from tactful.core.errors import Forbidden

SCOPES = ("ingest", "pos", "admin")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller inside one workspace (optionally limited to one brand)."""

    workspace_id: int
    actor: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    brand_id: int | None = None
    key_id: int | None = None
    user_id: int | None = None
    role: str | None = None

    def allows(self, scope: str) -> bool:
        """Admin keys may do everything; other keys only their own scopes."""
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"this credential lacks the {scope!r} scope")


SYSTEM = Principal(workspace_id=0, actor="system", scopes=frozenset({"admin"}))

# Resolves a presented API key to a principal; set by the app factory (tenancy provides it).
KeyAuthenticator = Callable[[Session, str], Principal]
