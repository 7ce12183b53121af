"""Loyalty programs: one per brand or one for the whole workspace, with their rules."""

from __future__ import annotations

import threading

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.loyalty import store
from tactful.loyalty.models import Program
from tactful.loyalty.schemas import ProgramRules
from tactful.tenancy.service import check_timezone, get_brand, get_workspace, record_audit

# Parsed rules by their canonical JSON: validating them on every POS call is waste, and the
# text (not the program id) is the key, so one process may serve several databases.
_RULES: dict[bytes, ProgramRules] = {}
_RULES_LOCK = threading.Lock()


def program_rules(program: Program) -> ProgramRules:
    """The program's rules as a model (parsed once per distinct rules)."""
    key = orjson.dumps(program.rules, option=orjson.OPT_SORT_KEYS)
    rules = _RULES.get(key)
    if rules is None:
        rules = ProgramRules.model_validate(program.rules)
        with _RULES_LOCK:
            if len(_RULES) > 1000:
                _RULES.clear()
            _RULES[key] = rules
    return rules


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
