"""Loyalty programs: one per brand or one for the whole workspace, with their rules."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.db import database_name
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.loyalty import store
from tactful.loyalty.models import Program
from tactful.loyalty.schemas import ProgramRules
from tactful.tenancy.service import check_timezone, get_brand, get_workspace, record_audit

# Programs as their services use them, by (database, id, version, updated_at): every rules
# change bumps the version, so a POS call reads three columns (in a query it makes anyway)
# instead of parsing the rules again. The database's URL is part of the key because one
# process may serve several databases (the test suite does).
_VIEWS: dict[tuple[str, int, int, datetime], ProgramView] = {}
_VIEWS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProgramView:
    """A program with its parsed rules (immutable: a rules change makes a new version)."""

    id: int
    workspace_id: int
    brand_id: int | None
    timezone: str
    currency: str
    version: int
    updated_at: datetime
    rules: ProgramRules


def _cache_key(session: Session, program_id: int, version: int, updated_at: datetime) -> Any:
    return (database_name(session), program_id, version, updated_at)


def cached_view(
    session: Session, program_id: int, version: int, updated_at: datetime
) -> ProgramView | None:
    """The cached view of this version of the program, if this process has one."""
    return _VIEWS.get(_cache_key(session, program_id, version, updated_at))


def view_of(session: Session, program: Program) -> ProgramView:
    """The program's view (its rules parsed once per version and process)."""
    key = _cache_key(session, program.id, program.version, program.updated_at)
    found = _VIEWS.get(key)
    if found is not None:
        return found
    view = ProgramView(
        id=program.id,
        workspace_id=program.workspace_id,
        brand_id=program.brand_id,
        timezone=program.timezone,
        currency=program.currency,
        version=program.version,
        updated_at=program.updated_at,
        rules=ProgramRules.model_validate(program.rules),
    )
    if program in session.dirty or program in session.new:
        return view  # changed in this transaction: never cached
    with _VIEWS_LOCK:
        if len(_VIEWS) > 1000:
            _VIEWS.clear()
        _VIEWS[key] = view
    return view


def program_view(session: Session, program_id: int) -> ProgramView:
    """The view of a program by id (a 404 naming ``program_id`` if there is none)."""
    program = session.get(Program, program_id)
    if program is None:
        raise NotFound(f"loyalty program {program_id} does not exist", field="program_id")
    return view_of(session, program)


def scope_of(brand_id: int | None) -> str:
    return "ws" if brand_id is None else f"b{brand_id}"


def create_program(
    session: Session,
    *,
    workspace_id: int,
    name: str,
    rules: ProgramRules,
    actor: str,
    brand_id: int | None = None,
    currency: str | None = None,
    timezone: str | None = None,
) -> Program:
    """Create the program of a brand (or of the whole workspace)."""
    workspace = get_workspace(session, workspace_id)
    if brand_id is not None:
        get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    scope = scope_of(brand_id)
    if store.program_by_scope(session, workspace_id, scope) is not None:
        where = "this brand" if brand_id is not None else "the workspace"
        raise Conflict(f"{where} already has a loyalty program", field="brand_id")
    now = clock.now()
    program = Program(
        workspace_id=workspace_id,
        brand_id=brand_id,
        brand_scope=scope,
        name=name,
        currency=(currency or workspace.currency).upper(),
        timezone=check_timezone(timezone or workspace.timezone),
        rules=rules.model_dump(mode="json"),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(program)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "a loyalty program for this scope was just created", field="brand_id"
        ) from exc
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="loyalty.program_created",
        target_type="loyalty_program",
        target_id=program.id,
        brand_id=brand_id,
        details={"name": name},
    )
    return program


def get_program(session: Session, *, workspace_id: int, program_id: int) -> Program:
    """A program of the workspace, or a 404 naming ``program_id``."""
    program = store.program(session, workspace_id, program_id)
    if program is None:
        raise NotFound(f"loyalty program {program_id} does not exist", field="program_id")
    return program


def list_programs(session: Session, *, workspace_id: int) -> list[Program]:
    """The workspace's programs."""
    return store.programs(session, workspace_id)


def resolve_program(
    session: Session, *, workspace_id: int, program_id: int | None, brand_id: int | None
) -> Program:
    """The program a call means: the one named, else the caller's brand's, else the
    workspace's. A brand-bound key may use only its brand's or the workspace's program."""
    if program_id is not None:
        program = get_program(session, workspace_id=workspace_id, program_id=program_id)
        if brand_id is not None and program.brand_id not in (None, brand_id):
            raise NotFound(f"loyalty program {program_id} does not exist", field="program_id")
        return program
    if brand_id is not None:
        own = store.program_by_scope(session, workspace_id, scope_of(brand_id))
        if own is not None:
            return own
    shared = store.program_by_scope(session, workspace_id, "ws")
    if shared is None:
        raise ValidationFailed(
            "there is no workspace-wide loyalty program; name one with program_id",
            field="program_id",
        )
    return shared


def update_rules(
    session: Session, *, workspace_id: int, program_id: int, rules: ProgramRules, actor: str
) -> Program:
    """Replace a program's rules (audited; new rules apply to operations from now on)."""
    program = get_program(session, workspace_id=workspace_id, program_id=program_id)
    previous = program.rules
    program.rules = rules.model_dump(mode="json")
    program.version += 1
    program.updated_at = clock.now()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="loyalty.rules_changed",
        target_type="loyalty_program",
        target_id=program.id,
        brand_id=program.brand_id,
        details={"previous": previous, "version": program.version},
    )
    session.flush()
    return program
