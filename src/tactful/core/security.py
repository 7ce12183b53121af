"""Auth primitives: random tokens, API key hashing, signed values for links."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from tactful.core.errors import Unauthorized

KEY_PREFIX = "tk"


def random_token(nbytes: int = 24) -> str:
    """A URL-safe random token."""
    return secrets.token_urlsafe(nbytes)


def new_api_key() -> tuple[str, str, str]:
    """A new API key: ``(full key, lookup prefix, sha256 hash)``. Only the hash is stored."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, hash_api_key(key)


def hash_api_key(key: str) -> str:
    """SHA-256 of a high-entropy key (salting adds nothing for random 192-bit secrets)."""
    return hashlib.sha256(key.encode()).hexdigest()


def split_api_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8:
        return None
    return parts[1]


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


class Signer:
    """Signs and verifies small payloads (unsubscribe links, click redirects, CSRF)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        # keyed HMAC states per purpose, copied for each message: the key is derived once
        self._keyed: dict[str, hmac.HMAC] = {}

    def dumps(self, value: Any, *, purpose: str) -> str:
        return URLSafeTimedSerializer(self._secret, salt=purpose).dumps(value)

    def loads(self, token: str, *, purpose: str, max_age: int | None = None) -> Any:
        try:
            return URLSafeTimedSerializer(self._secret, salt=purpose).loads(token, max_age=max_age)
        except BadSignature as exc:
            raise Unauthorized("the link or token is invalid or has expired") from exc

    def hmac_hex(self, message: bytes, *, purpose: str) -> str:
        """HMAC-SHA256 of ``message`` under a key derived from the secret and ``purpose``."""
        keyed = self._keyed.get(purpose)
        if keyed is None:
            key = hashlib.sha256(f"{purpose}:{self._secret}".encode()).digest()
            keyed = self._keyed[purpose] = hmac.new(key, digestmod=hashlib.sha256)
        mac = keyed.copy()
        mac.update(message)
        return mac.hexdigest()
