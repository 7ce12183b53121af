"""What every page shares: the signed-in viewer, CSRF, navigation by permission, rendering
with form errors that keep what the user typed, and the savepoint every form runs in."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.api import SessionDep
from tactful.core.auth import Principal
from tactful.core.errors import Forbidden, TactfulError, ValidationFailed
from tactful.tenancy import users
from tactful.tenancy.models import Brand, User, Workspace
from tactful.tenancy.service import get_workspace, list_brands
from tactful.web import session as web_session

M = TypeVar("M", bound=BaseModel)
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# (label, path, permission): the navigation a role sees. Campaigns and journeys are the
# pages of part 2 of the web UI.
NAVIGATION = (
    ("Dashboard", "/", "dashboard.view"),
    ("Customers", "/customers", "customers.view"),
    ("Segments", "/segments", "segments.edit"),
    ("Templates", "/templates", "templates.edit"),
    ("Campaigns", "/campaigns", "campaigns.edit"),
    ("Journeys", "/journeys", "journeys.edit"),
    ("Contact policy", "/policy", "policy.view"),
    ("Loyalty", "/loyalty", "loyalty.view"),
    ("Settings", "/settings", "settings.view"),
)


class NotSignedIn(Exception):
    """Raised by pages when nobody is signed in; the app redirects to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass
class Viewer:
    """The signed-in person looking at a page."""

    principal: Principal
    user: User
    csrf: str
    workspace: Workspace
    brands: list[Brand] = field(default_factory=list)

    def can(self, permission: str, brand_id: int | None = None) -> bool:
        return self.principal.can(permission, brand_id=brand_id)

    def demand(self, permission: str, brand_id: int | None = None) -> None:
        self.principal.demand(permission, brand_id=brand_id)

    @property
    def workspace_id(self) -> int:
        return self.principal.workspace_id

    @property
    def actor(self) -> str:
        return self.principal.actor

    @property
    def navigation(self) -> list[tuple[str, str]]:
        return [(label, path) for label, path, permission in NAVIGATION if self.can(permission)]

    @property
    def brand_options(self) -> list[tuple[int, str]]:
        return [(b.id, b.name) for b in self.brands]

    def brand(self, brand_id: int | None) -> Brand:
        """A brand of the workspace (the first when none is asked for or it is unknown)."""
        found = next((b for b in self.brands if b.id == brand_id), None)
        return found or self.brands[0]


def viewer(request: Request, session: SessionDep) -> Viewer:
    """The signed-in viewer, or a redirect to the sign-in page."""
    runtime = request.app.state.runtime
    state = web_session.read(runtime.signer, request.cookies.get(web_session.COOKIE))
    principal = users.principal_by_id(session, state.user_id) if state else None
    if state is None or principal is None or principal.user_id is None:
        raise NotSignedIn(request.url.path)
    user = users.get_user(session, workspace_id=principal.workspace_id, user_id=principal.user_id)
    brands = list_brands(session, workspace_id=principal.workspace_id)
    workspace = get_workspace(session, principal.workspace_id)
    return Viewer(
        principal=principal, user=user, csrf=state.csrf, workspace=workspace, brands=brands
    )


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def csrf_protect(request: Request) -> None:
    """Every state-changing request carries the session's token (a form field ``csrf`` or
    the ``X-CSRF-Token`` header htmx sends)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    runtime = request.app.state.runtime
    state = web_session.read(runtime.signer, request.cookies.get(web_session.COOKIE))
    if state is None:
        raise NotSignedIn(request.headers.get("hx-current-url") or request.url.path)
    presented = request.headers.get("x-csrf-token")
    if not presented and "form" in request.headers.get("content-type", ""):
        presented = str((await request.form()).get("csrf") or "")
    if not web_session.csrf_ok(state, presented):
        raise Forbidden(
            "the form has expired or did not come from this site; reload the page and try again"
        )


async def form_data(request: Request) -> dict[str, Any]:
    """The submitted form as a dict (repeated fields as lists, without the CSRF token)."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    data.pop("csrf", None)
    return data


FormDep = Annotated[dict[str, Any], Depends(form_data)]


def text(form: dict[str, Any], name: str, default: str = "") -> str:
    """One text field of a form, stripped (the last value when repeated)."""
    value = form.get(name, default)
    if isinstance(value, list):
        value = value[-1] if value else default
    return str(value).strip() if not hasattr(value, "filename") else default


def values(form: dict[str, Any], name: str) -> list[str]:
    """Every value of a repeated field (checkboxes, multiple selects)."""
    value = form.get(name)
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def optional_int(raw: str) -> int | str | None:
    """A typed number as an int; empty as None; anything else as typed (so validation names
    the field and keeps the text)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return raw


def int_or_none(raw: str) -> int | None:
    """A typed whole number, or None for anything else."""
    value = optional_int(raw)
    return value if isinstance(value, int) else None


def split_list(raw: str) -> list[str]:
    """Items typed one per line or separated by commas."""
    return [item.strip() for item in re.split(r"[,\n]", raw) if item.strip()]


# -- errors -------------------------------------------------------------------------------


def _dotted(path: str) -> str:
    """``roles[0].role`` → ``roles.0.role``: the names the forms use."""
    return re.sub(r"\[(\w+)\]", r".\1", path).strip(".")


def errors_of(exc: TactfulError) -> dict[str, str]:
    """Field -> reason for showing next to the inputs (the whole message under "_")."""
    problems = getattr(exc, "problems", None) or (
        exc.errors if isinstance(exc, ValidationFailed) else None
    )
    if problems:
        found: dict[str, str] = {}
        for problem in problems:
            found.setdefault(_dotted(str(problem["field"])) or "_", str(problem["reason"]))
        return found
    if exc.field:
        return {_dotted(exc.field): exc.message}
    return {"_": exc.message}


def invalid(exc: ValidationError, prefix: str = "") -> ValidationFailed:
    """A pydantic error of a form's model as a 422 naming each field the way forms do."""
    errors = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"] if part != "__root__")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        errors.append({"field": f"{prefix}{where}" if where else prefix or "_", "reason": message})
    first = errors[0]
    return ValidationFailed(f"{first['field']}: {first['reason']}", errors=errors)


def parse(model: type[M], data: dict[str, Any], prefix: str = "") -> M:
    """Validate form data with an API schema; refused with every field's reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, prefix) from exc


@contextlib.contextmanager
def attempt(session: Session) -> Iterator[None]:
    """Run a form's service calls in a savepoint: a refused call leaves nothing behind (the
    page then shows the problem, and the request's transaction still commits)."""
    with session.begin_nested():
        yield


# -- rendering ----------------------------------------------------------------------------


def render(
    request: Request, template: str, viewer_: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page (or an htmx fragment) with the viewer and navigation."""
    return templates.TemplateResponse(
        request,
        template,
        {"viewer": viewer_, "path": request.url.path, **context},
        status_code=status,
    )


def to_login(next_path: str) -> Response:
    return RedirectResponse(f"/login?next={quote(next_path)}", status_code=303)


def redirect(path: str) -> Response:
    """After a successful form post: see the result (htmx follows HX-Redirect)."""
    response = RedirectResponse(path, status_code=303)
    response.headers["HX-Redirect"] = path
    return response


def money(value: int | None, currency: str = "") -> str:
    """Minor units as a readable amount: 123456 → "1,234.56"."""
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    whole, cents = divmod(abs(int(value)), 100)
    return f"{sign}{whole:,}.{cents:02d}" + (f" {currency}" if currency else "")


def share(value: float | None) -> str:
    """A share between 0 and 1 as a percentage with one decimal."""
    return "—" if value is None else f"{value * 100:.1f} %"


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def local(value: datetime | str | None, timezone: str = "UTC") -> str:
    """A moment in a time zone, to the minute."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    shown = clock.ensure_utc(moment).astimezone(ZoneInfo(timezone))
    return shown.strftime("%Y-%m-%d %H:%M")


def mask_email(address: str | None) -> str:
    """``anna@example.com`` → ``a•••@example.com`` (for roles that see no personal data)."""
    if not address:
        return "—"
    name, _, domain = address.partition("@")
    return f"{name[:1]}•••@{domain}" if domain else "•••"


def mask_phone(phone: str | None) -> str:
    """``+79120000001`` → ``+7•••••••01``."""
    if not phone:
        return "—"
    return phone[:2] + "•" * max(len(phone) - 4, 1) + phone[-2:]


def pairs(options: Sequence[str]) -> list[tuple[str, str]]:
    """Options whose value is their label."""
    return [(o, o) for o in options]


templates.env.filters.update(money=money, share=share, number=number, local=local)
templates.env.globals.update(now=clock.now)
