"""Pure approval routing: which permission, reviewer roles and separation rule an approval needs, and who has them.

The first enabled policy rule whose every non-empty criterion matches wins; otherwise the environment
default applies (prod: `approve:prod` with separation per policy, default on; every other environment:
`approve:nonprod` with its policy flag, default off). Roles imply permissions: an owner holds both, an admin
holds `approve:nonprod`; anything more comes from the principal's explicit permissions. Risk is the gate's
computed risk class, never a caller-declared one, so a pipeline cannot route itself to laxer reviewers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valdrix.environments import environment_class
from valdrix.errors import Forbidden
from valdrix.money import monthly
from valdrix.policies.schemas import Approval, RoutingRule

__all__ = ["IMPLIED_PERMISSIONS", "RoutingInput", "authorize", "effective_permissions", "may_review", "route"]

IMPLIED_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset({"approve:prod", "approve:nonprod"}),
    "admin": frozenset({"approve:nonprod"}),
    "member": frozenset(),
}


@dataclass(frozen=True)
class RoutingInput:
    """The decision facts routing looks at."""

    environment: str
    action: str
    monthly_delta: Decimal
    risk_level: str | None


def _matches(rule: RoutingRule, inp: RoutingInput) -> bool:
    if not rule.enabled:
        return False
    if rule.environments and inp.environment not in rule.environments:
        return False
    if rule.action_prefixes and not any(inp.action.startswith(p) for p in rule.action_prefixes):
        return False
    amount = monthly(inp.monthly_delta)
    if rule.min_monthly_delta_usd is not None and amount < rule.min_monthly_delta_usd:
        return False
    if rule.max_monthly_delta_usd is not None and amount > rule.max_monthly_delta_usd:
        return False
    return not rule.risk_levels or inp.risk_level in rule.risk_levels


def route(approval: Approval, inp: RoutingInput) -> dict[str, Any]:
    """Return the routing trace for `inp`: the first enabled matching rule, else the environment default."""
    column = environment_class(inp.environment)
    default_permission = "approve:prod" if column == "prod" else "approve:nonprod"
    default_separation = bool(getattr(approval.requester_reviewer_separation, column))
    facts = {"environment": inp.environment, "action": inp.action, "monthly_delta_usd": str(monthly(inp.monthly_delta)),
             "risk_level": inp.risk_level}
    for index, rule in enumerate(approval.routing_rules):
        if _matches(rule, inp):
            separation = rule.require_requester_reviewer_separation
            return {
                "matched": "policy_rule", "rule_id": rule.rule_id, "rule_index": index,
                "required_permission": rule.required_permission,
                "allowed_reviewer_roles": list(rule.allowed_reviewer_roles),
                "require_requester_reviewer_separation": default_separation if separation is None else separation,
                "conditions": rule.model_dump(mode="json", exclude={"rule_id", "enabled", "required_permission",
                                                                    "allowed_reviewer_roles",
                                                                    "require_requester_reviewer_separation"}),
                "facts": facts,
            }
    return {"matched": "default", "rule_id": f"default-{column}", "rule_index": None,
            "required_permission": default_permission, "allowed_reviewer_roles": ["owner", "admin"],
            "require_requester_reviewer_separation": default_separation, "conditions": {"environment": column},
            "facts": facts}


def effective_permissions(role: str, explicit: Iterable[str]) -> frozenset[str]:
    """Return the approval permissions a principal holds: its explicit ones plus those its role implies."""
    return frozenset(explicit) | IMPLIED_PERMISSIONS.get(role, frozenset())


def authorize(trace: dict[str, Any], *, reviewer: uuid.UUID, role: str, permissions: Iterable[str],
              requesters: Iterable[uuid.UUID | None], enforce_separation: bool = True) -> None:
    """Return when the reviewer may review under `trace`; raise Forbidden naming the reason otherwise."""
    rule_id = trace["rule_id"]
    if role not in trace["allowed_reviewer_roles"]:
        raise Forbidden(f"reviewer role {role!r} is not allowed by routing rule {rule_id!r}",
                        code="reviewer_role_not_allowed", rule_id=rule_id,
                        allowed_reviewer_roles=trace["allowed_reviewer_roles"])
    needed = trace["required_permission"]
    if needed not in effective_permissions(role, permissions):
        raise Forbidden(f"reviewer lacks permission {needed!r} required by routing rule {rule_id!r}",
                        code="approval_permission_missing", rule_id=rule_id, required_permission=needed)
    if enforce_separation and trace["require_requester_reviewer_separation"] and reviewer in set(requesters):
        raise Forbidden(f"routing rule {rule_id!r} requires a reviewer other than the requester",
                        code="requester_reviewer_separation", rule_id=rule_id)


def may_review(trace: dict[str, Any], *, role: str, permissions: Iterable[str]) -> bool:
    """Return whether a principal could review under `trace`, separation aside (the queue's view)."""
    return role in trace["allowed_reviewer_roles"] and \
        trace["required_permission"] in effective_permissions(role, permissions)
