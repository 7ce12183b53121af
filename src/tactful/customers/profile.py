"""Applying traits to a profile: standard fields, custom attributes with inferred types, and
conflicts resolved by source priority."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tactful.customers.models import Customer

# Which source wins a conflicting attribute: earlier in the list wins. The offline CRM is
# often the master; a workspace overrides this in settings["source_priority"].
DEFAULT_SOURCE_PRIORITY = ("crm", "pos", "import", "shop", "app", "web", "api")

STANDARD_TRAITS: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name", "firstName", "firstname"),
    "last_name": ("last_name", "lastName", "lastname"),
    "gender": ("gender", "sex"),
    "birthday": ("birthday", "birth_date", "birthDate", "date_of_birth"),
    "timezone": ("timezone", "time_zone", "timeZone"),
    "city": ("city",),
    "locale": ("locale", "language"),
}
# Traits that are identities or consents, handled elsewhere, never stored as attributes.
RESERVED_TRAITS = frozenset(
    {
        "email",
        "phone",
        "card",
        "loyalty_card",
        "loyaltyCard",
        "userId",
        "user_id",
        "anonymousId",
        "anonymous_id",
        "device_id",
        "push_token",
        "address",
        "name",
        "id",
        "consents",
        "is_test",
        *(alias for aliases in STANDARD_TRAITS.values() for alias in aliases),
    }
)
GENDERS = {
    "f": "f",
    "female": "f",
    "w": "f",
    "woman": "f",
    "ж": "f",
    "жен": "f",
    "m": "m",
    "male": "m",
    "man": "m",
    "м": "m",
    "муж": "m",
}
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


class Profile(Protocol):
    """What traits are applied to: a stored customer, or one being created in bulk."""

    first_name: str | None
    last_name: str | None
    gender: str | None
    birthday: date | None
    timezone: str | None
    city: str | None
    locale: str | None
    email: str | None
    phone: str | None
    anonymous: bool
    is_test: bool
    attributes: dict[str, Any]
    attribute_sources: dict[str, Any]
    updated_at: datetime
    last_seen_at: datetime | None


def source_rank(source: str, priority: Sequence[str]) -> int:
    """Lower is stronger; unknown sources rank after every listed one."""
    base = source.split(":", 1)[0]
    try:
        return priority.index(base)
    except ValueError:
        return len(priority)


def infer_type(value: Any) -> str:
    """The catalog type of a custom attribute value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        if DATE_RE.match(value):
            return "date"
        if DATETIME_RE.match(value):
            return "datetime"
    return "string"


def standard_value(field: str, raw: Any) -> Any:
    """A cleaned standard field value, or None to ignore it."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if field == "gender":
        return GENDERS.get(text.lower())
    if field == "birthday":
        if isinstance(raw, datetime):
            return raw.date()
        if isinstance(raw, date):
            return raw
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None
    if field == "timezone":
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            return None
        return text
    limit = 16 if field == "locale" else 100
    return text[:limit]


def standard_fields(traits: Mapping[str, Any]) -> dict[str, Any]:
    """The standard profile fields named in traits (first alias found wins)."""
    found: dict[str, Any] = {}
    for field, aliases in STANDARD_TRAITS.items():
        for alias in aliases:
            if alias in traits:
                value = standard_value(field, traits[alias])
                if value is not None:
                    found[field] = value
                break
    name = traits.get("name")
    if isinstance(name, str) and name.strip() and "first_name" not in found:
        first, _, last = name.strip().partition(" ")
        found["first_name"] = first[:100]
        if last and "last_name" not in found:
            found["last_name"] = last.strip()[:100]
    address = traits.get("address")
    if isinstance(address, dict) and "city" not in found and address.get("city"):
        found["city"] = str(address["city"])[:100]
    return found


def custom_attributes(traits: Mapping[str, Any]) -> dict[str, Any]:
    """Traits that are neither standard fields nor identities: the custom attributes."""
    return {
        key: value
        for key, value in traits.items()
        if key not in RESERVED_TRAITS and ATTRIBUTE_NAME.match(key)
    }


def apply_traits(
    customer: Profile,
    traits: Mapping[str, Any],
    *,
    source: str,
    priority: Sequence[str],
) -> dict[str, Any]:
    """Write traits to the profile where ``source`` may; returns the custom attributes set."""
    rank = source_rank(source, priority)
    sources = dict(customer.attribute_sources or {})
    attributes = dict(customer.attributes or {})
    changed_custom: dict[str, Any] = {}

    def may_write(name: str) -> bool:
        current = sources.get(name)
        return current is None or rank <= source_rank(str(current), priority)

    for field, value in standard_fields(traits).items():
        current = getattr(customer, field)
        if current is None or (may_write(field) and current != value):
            setattr(customer, field, value)
            sources[field] = source
    for name, value in custom_attributes(traits).items():
        if may_write(name) or name not in attributes:
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = value
                changed_custom[name] = value
            sources[name] = source
    if "is_test" in traits and isinstance(traits["is_test"], bool) and may_write("is_test"):
        customer.is_test = traits["is_test"]
        sources["is_test"] = source
    if sources != (customer.attribute_sources or {}):
        customer.attribute_sources = sources
    if attributes != (customer.attributes or {}):
        customer.attributes = attributes
    return changed_custom


def fill_from(survivor: Customer, merged: Customer, *, priority: Sequence[str]) -> None:
    """Merge a merged customer's profile into the survivor by source priority."""
    merged_sources = merged.attribute_sources or {}
    traits: dict[str, Any] = {field: getattr(merged, field) for field in STANDARD_TRAITS}
    traits = {k: v for k, v in traits.items() if v is not None}
    by_source: dict[str, dict[str, Any]] = {}
    for name, value in {**traits, **(merged.attributes or {})}.items():
        by_source.setdefault(str(merged_sources.get(name, "import")), {})[name] = (
            value.isoformat() if isinstance(value, date) else value
        )
    for source, values in by_source.items():
        apply_traits(survivor, values, source=source, priority=priority)
    survivor.is_test = survivor.is_test or merged.is_test
    if survivor.email is None:
        survivor.email = merged.email
    if survivor.phone is None:
        survivor.phone = merged.phone
