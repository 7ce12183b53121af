"""Messaging's errors."""

from __future__ import annotations

from typing import Any

from tactful.core.errors import ValidationFailed


class TemplateInvalid(ValidationFailed):
    """A template that does not parse: each error names the field, line and column."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        super().__init__(f"{first['field']}: {first['reason']}", field=str(first["field"]))
        self.problems = problems

    def to_problem(self) -> dict[str, Any]:
        body = super().to_problem()
        body["errors"] = self.problems
        return body
