"""The contact policy: the rules of the workspace or a brand (caps, spacing, send windows per
weekday, holidays), an editor with what-if replays of the last days, the suppression reasons
of the last days and every version of the rules."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from tactful.core.api import SessionDep, api_router
from tactful.core.errors import TactfulError, ValidationFailed
from tactful.policy import service as policy
from tactful.policy.schemas import CHANNELS, WEEKDAYS, RuleSet
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    optional_int,
    redirect,
    render,
    split_list,
    text,
    values,
)

router = api_router()
BLANK_ROWS = 2  # empty rows offered for new caps and spacing rules
CAP_FIELDS = ("id", "limit", "period", "channel", "message_class", "tag")
SPACING_FIELDS = ("id", "min_hours", "message_class", "channel")
WINDOW = re.compile(r"^\s*(\S*)\s*-\s*(\S*)\s*$")


def _scope(viewer: Viewer, brand_id: int | None) -> int | None:
    """The brand whose rules are shown (None: the workspace's)."""
    return brand_id if brand_id in {b.id for b in viewer.brands} else None


def _windows_text(windows: list[Any]) -> str:
    return ", ".join(f"{w.start}-{w.end}" for w in windows)


def _values_of(rules: RuleSet) -> dict[str, Any]:
    """The form's fields for a rule set."""
    found: dict[str, Any] = {
        "default_dedupe_window_hours": f"{rules.default_dedupe_window_hours:g}",
        "bundle_window_minutes": f"{rules.bundle_window_minutes:g}",
        "held_out_sources": ", ".join(rules.held_out_sources),
        "use_best_channel": rules.use_best_channel,
        "comment": "",
        "caps_count": len(rules.caps) + BLANK_ROWS,
        "spacing_count": len(rules.spacing) + BLANK_ROWS,
    }
    for i, cap in enumerate(rules.caps):
        for name in CAP_FIELDS:
            value = getattr(cap, name)
            found[f"caps.{i}.{name}"] = "" if value is None else str(value)
    for i, rule in enumerate(rules.spacing):
        for name in SPACING_FIELDS:
            value = getattr(rule, name)
            found[f"spacing.{i}.{name}"] = (
                "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
            )
    windows = rules.send_windows
    found["send_windows.enabled"] = windows is not None
    if windows is not None:
        found["send_windows.default"] = _windows_text(windows.default)
        for day in WEEKDAYS:
            found[f"send_windows.weekdays.{day}"] = _windows_text(windows.weekdays.get(day, []))
        found["send_windows.holidays"] = ", ".join(d.isoformat() for d in windows.holidays)
        found["send_windows.holiday_windows"] = _windows_text(windows.holiday_windows)
        found["send_windows.applies_to"] = list(windows.applies_to)
    else:
        found["send_windows.applies_to"] = ["marketing"]
    return found


def _rows(
    form: dict[str, Any], prefix: str, names: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    """The non-empty rows of a repeated group, with their form index."""
    count = int_or_none(text(form, f"{prefix}_count")) or 0
    rows = []
    for i in range(count):
        row = {name: text(form, f"{prefix}.{i}.{name}") for name in names}
        if row["id"] or any(row[n] for n in names[1:2]):
            rows.append((i, row))
    return rows


def _windows(raw: str) -> list[dict[str, str]]:
    found = []
    for piece in split_list(raw):
        match = WINDOW.match(piece)
        start, end = (match.group(1), match.group(2)) if match else (piece, "")
        found.append({"start": start, "end": end})
    return found


def _values_from(form: dict[str, Any]) -> dict[str, Any]:
    """What was typed, to show again."""
    found: dict[str, Any] = {
        name: text(form, name)
        for name in (
            "default_dedupe_window_hours",
            "bundle_window_minutes",
            "held_out_sources",
            "comment",
            "caps_count",
            "spacing_count",
            "send_windows.default",
            "send_windows.holidays",
            "send_windows.holiday_windows",
            "days",
        )
    }
    found["use_best_channel"] = bool(text(form, "use_best_channel"))
    found["send_windows.enabled"] = bool(text(form, "send_windows.enabled"))
    found["send_windows.applies_to"] = values(form, "send_windows.applies_to")
    for day in WEEKDAYS:
        found[f"send_windows.weekdays.{day}"] = text(form, f"send_windows.weekdays.{day}")
    for prefix, names in (("caps", CAP_FIELDS), ("spacing", SPACING_FIELDS)):
        for i in range(int_or_none(found[f"{prefix}_count"]) or 0):
            for name in names:
                found[f"{prefix}.{i}.{name}"] = text(form, f"{prefix}.{i}.{name}")
    return found


def _number(raw: str) -> float | str | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw


def rules_from(form: dict[str, Any]) -> RuleSet:
    """The rule set a form describes, or a 422 naming each form field that is wrong."""
    caps = _rows(form, "caps", CAP_FIELDS)
    spacing = _rows(form, "spacing", SPACING_FIELDS)
    data: dict[str, Any] = {
        "caps": [
            {
                "id": row["id"],
                "limit": optional_int(row["limit"]),
                "period": row["period"] or "day",
                "channel": row["channel"] or None,
                "message_class": row["message_class"] or None,
                "tag": row["tag"] or None,
            }
            for _i, row in caps
        ],
        "spacing": [
            {
                "id": row["id"],
                "min_hours": _number(row["min_hours"]),
                "message_class": row["message_class"] or "marketing",
                "channel": row["channel"] or None,
            }
            for _i, row in spacing
        ],
        "held_out_sources": split_list(text(form, "held_out_sources")),
        "use_best_channel": bool(text(form, "use_best_channel")),
    }
    for name in ("default_dedupe_window_hours", "bundle_window_minutes"):
        value = _number(text(form, name))
        if value is not None:
            data[name] = value
    if text(form, "send_windows.enabled"):
        data["send_windows"] = {
            "default": _windows(text(form, "send_windows.default")),
            "weekdays": {
                day: _windows(text(form, f"send_windows.weekdays.{day}"))
                for day in WEEKDAYS
                if text(form, f"send_windows.weekdays.{day}")
            },
            "holidays": split_list(text(form, "send_windows.holidays")),
            "holiday_windows": _windows(text(form, "send_windows.holiday_windows")),
            "applies_to": values(form, "send_windows.applies_to"),
        }
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        rows = {"caps": [i for i, _ in caps], "spacing": [i for i, _ in spacing]}
        errors = [
            {"field": _field(tuple(e["loc"]), rows), "reason": _reason(e)}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationFailed(
            f"{errors[0]['field']}: {errors[0]['reason']}", errors=errors
        ) from exc


def _reason(error: Any) -> str:
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def _field(loc: tuple[Any, ...], rows: dict[str, list[int]]) -> str:
    """The form field a pydantic location names."""
    if not loc:
        return "_"
    head = str(loc[0])
    if head in rows and len(loc) > 1 and isinstance(loc[1], int):
        row = rows[head][loc[1]]
        return f"{head}.{row}.{loc[2]}" if len(loc) > 2 else f"{head}.{row}.id"
    if head == "send_windows" and len(loc) > 1:
        if loc[1] == "weekdays" and len(loc) > 2:
            return f"send_windows.weekdays.{loc[2]}"
        return f"send_windows.{loc[1]}"
    return head


@router.get("/policy", include_in_schema=False)
def policy_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    brand_id: int | None = None,
    days: int = 7,
    saved: int = 0,
) -> Response:
    viewer.demand("policy.view")
    scope = _scope(viewer, brand_id)
    days = min(max(days, 1), 90)
    rules, version = policy.current_rules(session, workspace_id=viewer.workspace_id, brand_id=scope)
    summary = policy.suppression_summary(session, workspace_id=viewer.workspace_id, days=days)
    by_reason: Counter[str] = Counter()
    for row in summary:
        by_reason[row["explanation"]] += row["count"]
    return render(
        request,
        "policy.html",
        viewer,
        scope=scope,
        rules=rules,
        version=version,
        days=days,
        summary=summary,
        by_reason=by_reason.most_common(),
        history=policy.rule_history(session, workspace_id=viewer.workspace_id, brand_id=scope),
        notice="The rules are published." if saved else None,
    )


def _editor(
    request: Request,
    viewer: Viewer,
    *,
    scope: int | None,
    version: int,
    values_: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    what_if: dict[str, Any] | None = None,
) -> Response:
    return render(
        request,
        "policy_edit.html",
        viewer,
        status=status,
        scope=scope,
        version=version,
        values=values_,
        errors=errors,
        what_if=what_if,
        weekdays=WEEKDAYS,
        channels=CHANNELS,
        caps_count=int_or_none(str(values_["caps_count"])) or 0,
        spacing_count=int_or_none(str(values_["spacing_count"])) or 0,
    )


@router.get("/policy/edit", include_in_schema=False)
def policy_edit(
    request: Request, session: SessionDep, viewer: ViewerDep, brand_id: int | None = None
) -> Response:
    viewer.demand("policy.edit")
    scope = _scope(viewer, brand_id)
    rules, version = policy.current_rules(session, workspace_id=viewer.workspace_id, brand_id=scope)
    found = _values_of(rules)
    found["days"] = "7"
    return _editor(request, viewer, scope=scope, version=version, values_=found, errors={})


@router.post("/policy/edit", include_in_schema=False)
def policy_save(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    form: FormDep,
    brand_id: int | None = None,
) -> Response:
    """Publish the rules (``action=save``) or replay the last days under them (``whatif``)."""
    viewer.demand("policy.edit")
    scope = _scope(viewer, brand_id)
    _current, version = policy.current_rules(
        session, workspace_id=viewer.workspace_id, brand_id=scope
    )
    typed = _values_from(form)
    try:
        rules = rules_from(form)
        if text(form, "action") == "whatif":
            days = _number(typed["days"] or "7")
            if not isinstance(days, float):
                raise ValidationFailed("a number of days", field="days")
            with attempt(session):
                result = policy.what_if(
                    session,
                    workspace_id=viewer.workspace_id,
                    brand_id=scope,
                    proposed=rules,
                    days=days,
                )
            return _editor(
                request,
                viewer,
                scope=scope,
                version=version,
                values_=typed,
                errors={},
                what_if=result,
            )
        with attempt(session):
            policy.set_rules(
                session,
                workspace_id=viewer.workspace_id,
                brand_id=scope,
                rules_=rules,
                actor=viewer.actor,
                comment=typed["comment"] or None,
            )
    except TactfulError as exc:
        return _editor(
            request,
            viewer,
            scope=scope,
            version=version,
            values_=typed,
            errors=errors_of(exc),
            status=exc.status_code,
        )
    suffix = f"&brand_id={scope}" if scope is not None else ""
    return redirect(f"/policy?saved=1{suffix}")
