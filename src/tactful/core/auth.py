"""Who is calling: the principal every service call is made on behalf of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from tactful.core.errors import Forbidden

SCOPES = ("ingest", "pos", "admin")

# People sign in with a role, granted for the whole workspace or for one brand.
ROLES = ("owner", "admin", "marketer", "analyst", "support", "pos")
_EVERYONE = frozenset(ROLES)
_STAFF = frozenset({"owner", "admin"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "dashboard.view": _EVERYONE - {"pos"},
    "customers.view": _EVERYONE - {"pos"},
    "customers.view_pii": _STAFF | {"marketer", "support"},  # analysts see no PII
    "customers.edit": _STAFF | {"support"},
    "customers.export": _STAFF | {"marketer"},  # support may read PII, never export it
    "segments.edit": _STAFF | {"marketer"},
    "templates.edit": _STAFF | {"marketer"},
    "campaigns.edit": _STAFF | {"marketer"},
    "campaigns.launch": _STAFF | {"marketer"},
    "campaigns.approve": _STAFF,
    "journeys.edit": _STAFF | {"marketer"},
    "journeys.publish": _STAFF | {"marketer"},
    "policy.view": _EVERYONE - {"pos"},
    "policy.edit": _STAFF,
    "reports.view": _STAFF | {"marketer", "analyst"},
    "loyalty.view": _STAFF | {"marketer", "support", "analyst"},
    "loyalty.adjust": _STAFF,
    "loyalty.pos": _STAFF | {"pos"},
    "settings.view": _STAFF,
    "settings.edit": _STAFF,
    "users.manage": frozenset({"owner"}) | {"admin"},
}
# Which permission an API key scope carries, so one check serves keys and people.
SCOPE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "pos": frozenset({"loyalty.pos"}),
    "ingest": frozenset(),
}


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
    # a person's roles per brand (None: the whole workspace)
    brand_roles: tuple[tuple[int | None, str], ...] = ()
    # a use of the API key still to be recorded (authentication writes nothing): the API
    # records it after the response, in a transaction of its own
    unrecorded_use: datetime | None = None

    def allows(self, scope: str) -> bool:
        """Admin keys may do everything; other keys only their own scopes."""
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"this credential lacks the {scope!r} scope")

    def can(self, permission: str, *, brand_id: int | None = None) -> bool:
        """Whether this caller may do something (in one brand, or anywhere)."""
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        if any(permission in SCOPE_PERMISSIONS.get(scope, frozenset()) for scope in self.scopes):
            return True
        allowed = PERMISSIONS[permission]
        for grant_brand, role in self.brand_roles:
            if role in allowed and (
                grant_brand is None or brand_id is None or grant_brand == brand_id
            ):
                return True
        return False

    def demand(self, permission: str, *, brand_id: int | None = None) -> None:
        """Refuse with 403 unless ``can``."""
        if not self.can(permission, brand_id=brand_id):
            raise Forbidden(f"your role does not allow {permission.replace('.', ': ')}")


SYSTEM = Principal(workspace_id=0, actor="system", scopes=frozenset({"admin"}))

# Resolves a presented API key to a principal; set by the app factory (tenancy provides it).
KeyAuthenticator = Callable[[Session, str], Principal]
# Records a key's use (key id, moment) in a read-write session.
KeyUseRecorder = Callable[[Session, int, datetime], None]
