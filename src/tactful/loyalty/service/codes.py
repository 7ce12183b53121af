"""The app's rotating one-time codes (TOTP, RFC 6238, via ``pyotp``).

An app installation is enrolled once and receives a secret. From it the app makes two codes,
shown as a barcode or QR code:

- the **accrual code** ``A`` + device reference + 6 digits, changing every 2 minutes: it only
  names the customer, so accruing to a photographed code steals nothing;
- the **redemption code** ``R`` + device reference + 8 digits, changing every 30 seconds and
  accepted for at most 60 seconds (the current and the previous step), once: the device's
  newest used step is kept and any code at or before it is a replay.

A photographed or replayed redemption code is therefore refused, and so is a code from
another customer's device.

Device secrets are stored encrypted (AES-256-GCM, bound to the device's reference) under a key
derived from the installation's signing secret; rows written before encryption (plain base32)
stay readable.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import ConfigError, Forbidden, NotFound, ValidationFailed
from tactful.core.security import Signer
from tactful.customers.service import get_customer
from tactful.loyalty.models import Device
from tactful.loyalty.store import cards as card_store
from tactful.tenancy.service import record_audit

ACCRUAL = "A"
REDEMPTION = "R"
REF_LENGTH = 8
# (interval seconds, digits, steps accepted back in time)
SPECS: dict[str, tuple[int, int, int]] = {ACCRUAL: (120, 6, 1), REDEMPTION: (30, 8, 1)}
CODE = re.compile(r"^([AR])([A-Z2-7]{8})([0-9]{6}|[0-9]{8})$")
_REF_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SEALED = "v1:"  # prefix of an encrypted secret; anything else is a plain (older) one
_KEY_PURPOSE = "loyalty.device-secret"


@functools.lru_cache(maxsize=16)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def _cipher(signer: Signer) -> AESGCM:
    """AES-256-GCM under a key derived (HMAC-SHA256) from the installation's secret."""
    key = bytes.fromhex(signer.hmac_hex(b"aes-256-gcm device secrets", purpose=_KEY_PURPOSE))
    return _aead(key)


def _aad(ref: str) -> bytes:
    # binds a sealed secret to its device: copied onto another row it no longer opens
    return f"loyalty-device:{ref}".encode()


def seal_secret(signer: Signer, ref: str, secret: str) -> str:
    """A device secret as stored: encrypted and bound to the device's reference."""
    nonce = secrets.token_bytes(12)
    sealed = _cipher(signer).encrypt(nonce, secret.encode(), _aad(ref))
    return SEALED + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_secret(signer: Signer, ref: str, stored: str) -> str:
    """The device secret from its stored form (plain rows from before encryption as they are)."""
    if not stored.startswith(SEALED):
        return stored
    try:
        blob = base64.urlsafe_b64decode(stored[len(SEALED) :])
        plain = _cipher(signer).decrypt(blob[:12], blob[12:], _aad(ref))
    except (InvalidTag, ValueError, binascii.Error) as exc:
        raise ConfigError(
            f"the secret of app installation {ref} cannot be decrypted: the installation's "
            "secret key (TACTFUL_SECURITY_SECRET_KEY) changed since it was enrolled, or the "
            "stored secret was altered; enrol the app again",
            field="TACTFUL_SECURITY_SECRET_KEY",
        ) from exc
    return plain.decode()


@dataclass(frozen=True)
class CodeCheck:
    """A code that matched its device's secret (not yet consumed)."""

    code: str
    kind: str
    device_id: int
    customer_id: int
    step: int
    last_redeem_step: int | None  # the device's newest used redemption step when checked


def _spec(kind: str) -> dict[str, Any]:
    interval, digits, _back = SPECS[kind]
    return {"interval": interval, "digits": digits, "algorithm": "SHA1", "prefix": kind}


def enrol_device(
    session: Session,
    *,
    workspace_id: int,
    customer_id: int,
    label: str | None,
    actor: str,
    signer: Signer,
) -> tuple[Device, str]:
    """Enrol an app installation: returns the device and its secret (shown once)."""
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    secret = pyotp.random_base32()
    for _attempt in range(5):
        ref = "".join(secrets.choice(_REF_ALPHABET) for _ in range(REF_LENGTH))
        if card_store.device_by_ref(session, ref) is None:
            break
    else:  # 32^8 references: five collisions in a row mean something is badly wrong
        raise AssertionError("could not draw a free device reference")
    device = Device(
        workspace_id=workspace_id,
        customer_id=customer.id,
        ref=ref,
        secret=seal_secret(signer, ref, secret),
        label=label,
        created_at=clock.now(),
    )
    session.add(device)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="loyalty.device_enrolled",
        target_type="customer",
        target_id=customer.id,
        details={"device_id": device.id, "ref": ref, "label": label},
    )
    return device, secret


def code_specs() -> dict[str, dict[str, Any]]:
    """How the app makes each code (returned with the secret at enrolment)."""
    return {"accrual": _spec(ACCRUAL), "redemption": _spec(REDEMPTION)}


def revoke_device(session: Session, *, workspace_id: int, device_id: int, actor: str) -> Device:
    """Revoke an installation: its codes stop working at once."""
    device = session.get(Device, device_id)
    if device is None or device.workspace_id != workspace_id:
        raise NotFound(f"device {device_id} does not exist", field="device_id")
    if device.revoked_at is None:
        device.revoked_at = clock.now()
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="loyalty.device_revoked",
            target_type="customer",
            target_id=device.customer_id,
            details={"device_id": device.id},
        )
    return device


def list_devices(session: Session, *, workspace_id: int, customer_id: int) -> list[Device]:
    """A customer's enrolled app installations."""
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    return card_store.devices_of(session, customer.id)


def make_code(secret: str, ref: str, kind: str, at: datetime) -> str:
    """The code an app shows at ``at`` (what the app computes; used by tests and tools)."""
    interval, digits, _back = SPECS[kind]
    otp = pyotp.TOTP(secret, digits=digits, interval=interval)
    return f"{kind}{ref}{otp.at(at)}"


def check_code(
    session: Session,
    *,
    workspace_id: int,
    code: str,
    at: datetime,
    field: str,
    signer: Signer,
    for_redemption: bool = False,
) -> CodeCheck:
    """Match a code against its device's secret; refuse expired and unknown codes, and (when
    it is to authorise spending) used ones.

    Nothing is written: a redemption code is consumed by :func:`consume`.
    """
    code = code.strip().upper()
    match = CODE.match(code)
    if match is None:
        raise ValidationFailed(
            "a code is A or R, 8 letters or digits 2-7, then 6 or 8 digits", field=field
        )
    kind, ref, digits = match.groups()
    interval, length, back = SPECS[kind]
    if len(digits) != length:
        raise ValidationFailed(f"a {kind} code ends in {length} digits", field=field)
    device = card_store.device_key(session, ref)
    if device is None or device.workspace_id != workspace_id or device.revoked_at is not None:
        raise Forbidden("the code is not valid (unknown or revoked app installation)", field=field)
    otp = pyotp.TOTP(open_secret(signer, ref, device.secret), digits=length, interval=interval)
    now_step = otp.timecode(at)
    for step in range(now_step, now_step - back - 1, -1):
        if hmac.compare_digest(otp.generate_otp(step), digits):
            check = CodeCheck(
                code, kind, device.id, device.customer_id, step, device.last_redeem_step
            )
            if for_redemption:
                require_redeemable(check, field=field)
            return check
    raise Forbidden("the code has expired or is wrong", field=field)


def is_used(check: CodeCheck) -> bool:
    """Whether a code's step (or a later one) of its device has paid already."""
    return check.last_redeem_step is not None and check.step <= check.last_redeem_step


def is_redeemable(check: CodeCheck) -> bool:
    """Whether a checked code can authorise spending: a redemption code not used yet."""
    return check.kind == REDEMPTION and not is_used(check)


def require_redeemable(check: CodeCheck, *, field: str) -> None:
    """Refuse a checked code that cannot authorise spending: an accrual code, or a redemption
    code whose step was used already."""
    if check.kind != REDEMPTION:
        raise Forbidden("an accrual code cannot authorise spending", field=field)
    if is_used(check):
        raise Forbidden("the redemption code was already used", field=field)


def consume(session: Session, check: CodeCheck, *, field: str) -> None:
    """Use a redemption code up (atomically: a concurrent second use is refused)."""
    if not card_store.consume_redeem_step(session, check.device_id, check.step):
        raise Forbidden("the redemption code was already used", field=field)
