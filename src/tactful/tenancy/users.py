"""People: users with argon2-hashed passwords, roles per brand or workspace, sign-in with a
lock-out after repeated failures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.auth import ROLES, Principal
from tactful.core.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from tactful.core.security import random_token
from tactful.tenancy.audit import record_audit
from tactful.tenancy.models import Brand, RoleGrant, User

MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)
_hasher = PasswordHasher()
# verified against when the e-mail is unknown, so a wrong address costs the same time
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


def _email(value: str, field: str = "email") -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(str(exc), field=field) from exc


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"use at least {MIN_PASSWORD} characters", field="password")


def _check_roles(
    session: Session, workspace_id: int, roles: Sequence[tuple[int | None, str]]
) -> None:
    if not roles:
        raise ValidationFailed("give the user at least one role", field="roles")
    for index, (brand_id, role) in enumerate(roles):
        if role not in ROLES:
            raise ValidationFailed(
                f"role must be one of {list(ROLES)}", field=f"roles[{index}].role"
            )
        brand = session.get(Brand, brand_id) if brand_id is not None else None
        if brand_id is not None and (brand is None or brand.workspace_id != workspace_id):
            raise NotFound(
                f"brand {brand_id} does not exist in this workspace",
                field=f"roles[{index}].brand_id",
            )


def _replace_roles(session: Session, user: User, roles: Sequence[tuple[int | None, str]]) -> None:
    session.execute(delete(RoleGrant).where(RoleGrant.user_id == user.id))
    seen: set[str] = set()
    for brand_id, role in roles:
        scope = "ws" if brand_id is None else f"b{brand_id}"
        if scope in seen:
            raise ValidationFailed(f"two roles for the same scope {scope!r}", field="roles")
        seen.add(scope)
        session.add(RoleGrant(user_id=user.id, brand_id=brand_id, scope=scope, role=role))
    session.flush()


def create_user(
    session: Session,
    *,
    workspace_id: int,
    email: str,
    name: str,
    password: str,
    roles: Sequence[tuple[int | None, str]],
    actor: str,
) -> User:
    """Add a person who can sign in, with their roles."""
    address = _email(email)
    _check_password(password)
    _check_roles(session, workspace_id, roles)
    exists = session.scalar(
        select(User.id).where(User.workspace_id == workspace_id, User.email == address)
    )
    if exists is not None:
        raise Conflict(f"a user {address} already exists", field="email")
    user = User(
        workspace_id=workspace_id,
        email=address,
        name=name.strip() or address,
        password_hash=_hasher.hash(password),
        failed_logins=0,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    _replace_roles(session, user, roles)
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="user.created",
        target_type="user",
        target_id=user.id,
        details={"email": address, "roles": [[b, r] for b, r in roles]},
    )
    return user


def set_roles(
    session: Session,
    *,
    workspace_id: int,
    user_id: int,
    roles: Sequence[tuple[int | None, str]],
    actor: str,
) -> User:
    """Replace a user's roles (audited)."""
    user = get_user(session, workspace_id=workspace_id, user_id=user_id)
    _check_roles(session, workspace_id, roles)
    _replace_roles(session, user, roles)
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="user.roles_changed",
        target_type="user",
        target_id=user.id,
        details={"roles": [[b, r] for b, r in roles]},
    )
    return user


def get_user(session: Session, *, workspace_id: int, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.workspace_id != workspace_id:
        raise NotFound(f"user {user_id} does not exist", field="user_id")
    return user


def list_users(session: Session, *, workspace_id: int) -> list[tuple[User, list[RoleGrant]]]:
    """Users with their role grants."""
    users = list(
        session.scalars(select(User).where(User.workspace_id == workspace_id).order_by(User.id))
    )
    grants = (
        list(session.scalars(select(RoleGrant).where(RoleGrant.user_id.in_([u.id for u in users]))))
        if users
        else []
    )
    return [(u, [g for g in grants if g.user_id == u.id]) for u in users]


def principal_for(session: Session, user: User) -> Principal:
    """What a signed-in user may do."""
    grants = session.scalars(select(RoleGrant).where(RoleGrant.user_id == user.id)).all()
    roles = tuple((g.brand_id, g.role) for g in grants)
    workspace_role = next((role for brand, role in roles if brand is None), None)
    return Principal(
        workspace_id=user.workspace_id,
        actor=f"user:{user.id}",
        user_id=user.id,
        role=workspace_role or (roles[0][1] if roles else None),
        brand_roles=roles,
    )


def principal_by_id(session: Session, user_id: int) -> Principal | None:
    """The principal of an active user, or None (deleted, disabled)."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return None
    return principal_for(session, user)


def authenticate_user(
    session: Session, *, workspace_id: int, email: str, password: str
) -> Principal:
    """Check a sign-in; five failures lock the account for a quarter of an hour."""
    now = clock.now()
    try:
        address = _email(email)
    except ValidationFailed:
        address = email.strip().lower()
    user = session.scalar(
        select(User).where(User.workspace_id == workspace_id, User.email == address)
    )
    if user is None:
        _verify(_DUMMY_HASH, password)
        raise Unauthorized("the e-mail or password is wrong")
    if user.disabled_at is not None:
        raise Unauthorized("this account is disabled")
    if user.locked_until is not None and user.locked_until > now:
        raise Unauthorized("too many failed sign-ins; try again in a few minutes")
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until, user.failed_logins = now + LOCK_FOR, 0
            record_audit(
                session,
                workspace_id=workspace_id,
                actor=f"user:{user.id}",
                action="user.locked",
                target_type="user",
                target_id=user.id,
            )
        raise Unauthorized("the e-mail or password is wrong")
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return principal_for(session, user)


def _verify(digest: str, password: str) -> bool:
    try:
        return _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def change_password(
    session: Session, *, workspace_id: int, user_id: int, password: str, actor: str
) -> None:
    """Set a new password (audited; the old sessions stay valid until they expire)."""
    user = get_user(session, workspace_id=workspace_id, user_id=user_id)
    _check_password(password)
    user.password_hash = _hasher.hash(password)
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="user.password_changed",
        target_type="user",
        target_id=user.id,
    )


def disable_user(session: Session, *, workspace_id: int, user_id: int, actor: str) -> User:
    """Stop a user from signing in."""
    user = get_user(session, workspace_id=workspace_id, user_id=user_id)
    if user.disabled_at is None:
        user.disabled_at = clock.now()
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="user.disabled",
            target_type="user",
            target_id=user.id,
        )
    return user


def generated_password() -> str:
    """A strong random password to hand over once."""
    return random_token(12)
