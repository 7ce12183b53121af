"""Rule sets: versioned per workspace and brand, audited; stacked so the strictest wins."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.policy import store
from tactful.policy.models import PolicyRuleSet
from tactful.policy.schemas import DEFAULT_RULES, CapRule, RuleSet, SendWindows, SpacingRule
from tactful.tenancy.service import get_brand, record_audit


def scope_of(brand_id: int | None) -> str:
    return "ws" if brand_id is None else f"b{brand_id}"


@dataclass(frozen=True)
class EffectiveRules:
    """The workspace's and the brand's rules together."""

    caps: tuple[tuple[str, CapRule], ...]  # (scope, rule)
    spacing: tuple[tuple[str, SpacingRule], ...]
    send_windows: tuple[tuple[str, SendWindows], ...]
    dedupe_window_hours: float
    bundle_window_minutes: float
    held_out_sources: frozenset[str]
    use_best_channel: bool
    versions: dict[str, int]

    def rule_name(self, scope: str, rule_id: str) -> str:
        return f"{scope}:{rule_id}@v{self.versions.get(scope, 0)}"


def stack(sets: dict[str, RuleSet], versions: dict[str, int]) -> EffectiveRules:
    """Stack rule sets: every cap and spacing rule applies (so the strictest binds), a moment
    must be allowed by every set of send windows, and the longest dedupe and bundle windows
    are kept."""
    ordered = sorted(sets.items())
    return EffectiveRules(
        caps=tuple((scope, cap) for scope, rules in ordered for cap in rules.caps),
        spacing=tuple((scope, rule) for scope, rules in ordered for rule in rules.spacing),
        send_windows=tuple(
            (scope, rules.send_windows)
            for scope, rules in ordered
            if rules.send_windows is not None
        ),
        dedupe_window_hours=max(r.default_dedupe_window_hours for _, r in ordered),
        bundle_window_minutes=max(r.bundle_window_minutes for _, r in ordered),
        held_out_sources=frozenset(s for _, r in ordered for s in r.held_out_sources),
        use_best_channel=all(r.use_best_channel for _, r in ordered),
        versions=versions,
    )


def effective(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    proposed: tuple[str, RuleSet] | None = None,
) -> EffectiveRules:
    """The rules that apply to a brand's messages (workspace defaults when none are set);
    ``proposed`` replaces one scope's rules (what-if)."""
    scopes = ["ws"] + ([scope_of(brand_id)] if brand_id is not None else [])
    rows = store.active_rule_sets(session, workspace_id, scopes)
    sets = {scope: RuleSet.model_validate(row.rules) for scope, row in rows.items()}
    versions = {scope: row.version for scope, row in rows.items()}
    if "ws" not in sets:
        sets["ws"] = DEFAULT_RULES
        versions["ws"] = 0
    if proposed is not None and proposed[0] in scopes:
        sets[proposed[0]] = proposed[1]
        versions[proposed[0]] = -1  # a proposal, not a published version
    return stack(sets, versions)


def current(session: Session, *, workspace_id: int, brand_id: int | None) -> tuple[RuleSet, int]:
    """A scope's own active rules and their version (workspace defaults: version 0)."""
    scope = scope_of(brand_id)
    row = store.active_rule_sets(session, workspace_id, [scope]).get(scope)
    if row is None:
        return (DEFAULT_RULES if brand_id is None else RuleSet()), 0
    return RuleSet.model_validate(row.rules), row.version


def set_rules(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    rules: RuleSet,
    actor: str,
    comment: str | None = None,
) -> PolicyRuleSet:
    """Publish a new version of a workspace's or brand's rules (audited)."""
    if brand_id is not None:
        get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    scope = scope_of(brand_id)
    version = store.latest_version(session, workspace_id, scope) + 1
    store.deactivate(session, workspace_id, scope)
    row = PolicyRuleSet(
        workspace_id=workspace_id,
        brand_id=brand_id,
        scope=scope,
        version=version,
        rules=rules.model_dump(mode="json"),
        active=True,
        comment=comment,
        created_by=actor,
        created_at=clock.now(),
    )
    session.add(row)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="policy.changed",
        target_type="policy",
        target_id=scope,
        brand_id=brand_id,
        details={"version": version, "comment": comment, "rules": row.rules},
    )
    return row


def history(session: Session, *, workspace_id: int, brand_id: int | None) -> list[PolicyRuleSet]:
    """Every version of a scope's rules, newest first."""
    return store.rule_history(session, workspace_id, scope_of(brand_id))
