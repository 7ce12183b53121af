"""Domain errors. Services raise these; the HTTP layer renders them as RFC 9457 problems."""

from __future__ import annotations

from typing import Any, ClassVar


class TactfulError(Exception):
    """Base of every error a person can act on."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        """The RFC 9457 body (without ``instance``)."""
        body: dict[str, Any] = {
            "type": f"https://tactful.dev/problems/{self.code}",
            "title": self.code.replace("_", " ").capitalize(),
            "status": self.status_code,
            "detail": self.message,
        }
        if self.field is not None:
            body["errors"] = [{"field": self.field, "reason": self.message}]
        body.update(self.extra)
        return body


class ValidationFailed(TactfulError):
    """Input that names a field and a reason."""

    status_code = 422
    code = "validation_failed"

    def __init__(
        self, message: str, *, field: str | None = None, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.errors = errors

    def to_problem(self) -> dict[str, Any]:
        body = super().to_problem()
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class NotFound(TactfulError):
    status_code = 404
    code = "not_found"


class Conflict(TactfulError):
    status_code = 409
    code = "conflict"


class Unauthorized(TactfulError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TactfulError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(TactfulError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(TactfulError):
    status_code = 429
    code = "too_many_requests"


class Unavailable(TactfulError):
    status_code = 503
    code = "unavailable"


class ConfigError(TactfulError):
    """Bad configuration: stops start-up with one sentence naming the setting."""

    status_code = 500
    code = "configuration_error"
