"""Normalising identifiers: phones to E.164 (``phonenumbers``), e-mails (``email-validator``),
card numbers, anonymous/device/external ids. Invalid contacts come back marked, with the
reason, so they can be kept but never used."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from tactful.customers.models import (
    ANONYMOUS,
    CARD,
    DEVICE,
    EMAIL,
    EXTERNAL,
    PHONE,
    PUSH_TOKEN,
    TELEGRAM,
)

MAX_ID_LENGTH = 200
CARD_PATTERN = re.compile(r"^[0-9A-Za-z]{4,40}$")
# A lower-case ASCII dot-atom address: email-validator accepts it exactly as written whenever
# it accepts its domain (checked once per domain below), so such addresses skip the full parse.
PLAIN_EMAIL = re.compile(r"([a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*)@([a-z0-9.-]+)")
MAX_LOCAL_PART = 64
MAX_EMAIL = 254


@dataclass(frozen=True)
class Ident:
    """One normalised identifier (or an invalid contact with its reason)."""

    kind: str
    value: str
    raw: str
    namespace: str = ""
    valid: bool = True
    reason: str | None = None
    # (kind, namespace, value): how identities are matched; computed once, it is used a lot
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.kind, self.namespace, self.value))

    def as_list(self) -> list[object]:
        return [self.kind, self.namespace, self.value, self.raw, self.valid, self.reason]

    @classmethod
    def from_list(cls, item: list[object]) -> Ident:
        kind, namespace, value, raw, valid, reason = item
        return cls(
            kind=str(kind),
            namespace=str(namespace),
            value=str(value),
            raw=str(raw),
            valid=bool(valid),
            reason=None if reason is None else str(reason),
        )


@lru_cache(maxsize=65536)
def normalise_phone(raw: str, region: str) -> Ident:
    """E.164 for a valid number; otherwise the raw text marked invalid with the reason."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return Ident(
            PHONE,
            text[:MAX_ID_LENGTH],
            text,
            valid=False,
            reason=f"not a phone number ({str(exc).split('. ', 1)[-1]})",
        )
    if not phonenumbers.is_valid_number(number):
        return Ident(
            PHONE,
            text[:MAX_ID_LENGTH],
            text,
            valid=False,
            reason=f"not a valid phone number in region {region}",
        )
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Ident(PHONE, e164, text)


@lru_cache(maxsize=65536)
def normalise_email(raw: str) -> Ident:
    """The normalised, lower-cased address; otherwise marked invalid with the reason.

    A plain address (lower-case ASCII dot-atom) is checked by its domain, once per domain;
    everything else goes through email-validator's full parse."""
    text = raw.strip()
    lowered = text.lower()
    match = PLAIN_EMAIL.fullmatch(lowered) if text.isascii() else None
    if (
        match is not None
        and len(match.group(1)) <= MAX_LOCAL_PART
        and len(lowered) <= MAX_EMAIL
        and _plain_domain(match.group(2))
    ):
        return Ident(EMAIL, lowered, text)
    return parse_email(raw)


def parse_email(raw: str) -> Ident:
    """:func:`normalise_email` by email-validator's full parse, whatever the address."""
    text = raw.strip()
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        return Ident(EMAIL, text[:MAX_ID_LENGTH].lower(), text, valid=False, reason=str(exc))
    return Ident(EMAIL, result.normalized.lower(), text)


@lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> bool:
    """True when email-validator accepts ``domain`` unchanged (its special-use, TLD and
    label rules included)."""
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return False
    return bool(result.domain == domain)


def normalise_card(raw: str) -> Ident:
    """A loyalty card number without spaces or dashes."""
    text = raw.strip()
    compact = re.sub(r"[\s-]", "", text)
    if not CARD_PATTERN.match(compact):
        return Ident(
            CARD,
            text[:MAX_ID_LENGTH],
            text,
            valid=False,
            reason="a card number has 4-40 letters or digits",
        )
    return Ident(CARD, compact, text)


def normalise_plain(kind: str, raw: str, namespace: str = "") -> Ident:
    """Anonymous, device, external ids, push tokens and chat ids: trimmed, length-checked."""
    text = str(raw).strip()
    if not text:
        return Ident(kind, "", text, namespace, valid=False, reason="empty identifier")
    limit = 320 if kind == PUSH_TOKEN else MAX_ID_LENGTH
    if len(text) > limit:
        return Ident(
            kind,
            text[:MAX_ID_LENGTH],
            text[:MAX_ID_LENGTH],
            namespace,
            valid=False,
            reason=f"longer than {limit} characters",
        )
    return Ident(kind, text, text, namespace)


def normalise(kind: str, raw: str, *, region: str, namespace: str = "") -> Ident:
    """Normalise any identifier kind."""
    if kind == PHONE:
        return normalise_phone(raw, region)
    if kind == EMAIL:
        return normalise_email(raw)
    if kind == CARD:
        return normalise_card(raw)
    if kind in (ANONYMOUS, DEVICE, EXTERNAL, PUSH_TOKEN, TELEGRAM):
        return normalise_plain(kind, raw, namespace if kind == EXTERNAL else "")
    raise ValueError(f"unknown identity kind {kind!r}")
