"""A stored decision in words: what was decided and why, stage by stage. One text for the API, the console page
and `valdrix decisions explain`, so an approver reads the same sentences everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from valdrix.money import monthly

if TYPE_CHECKING:  # the client (`valdrix preflight`) uses the sentences without the server's libraries
    from valdrix.decisions.models import Decision

REASONS = {
    "no_budget_configured": "No budget governs this project (nor a `default` budget): nothing limits or reserves it.",
    "unbudgeted_project": "The tenant has budgets, but none governs this project: is the project id right?",
    "computed_context_unavailable": "Actual spend data was required but unavailable or too old.",
    "hard_deny_threshold_exceeded": "The change is above the policy's hard-deny threshold for a single change.",
    "plan_limit_exceeded": "The tenant's plan ceiling would be exceeded.",
    "budget_exceeded": "The budget's headroom and the available credits cannot fund the change.",
    "enterprise_ceiling_exceeded": "The tenant's enterprise ceiling would be exceeded.",
    "credit_waterfall_used": "Credits fund part of the change.",
    "reserved_credit_waterfall_used": "Reserved-pool credits fund part of the change.",
    "emergency_credit_waterfall_used": "Emergency-pool credits fund part of the change.",
    "approval_required": "The policy requires a reviewer's approval for this environment and amount.",
    "shadow_mode_approval_override": "Approval would be required; shadow mode lets the change through unreviewed.",
    "dry_run": "A dry run: evaluated only, nothing was reserved.",
    "unpriced_resources": "Some resources of the plan could not be priced.",
    "container_resources_defaulted": "Containers without cpu/memory requests or limits were priced at the "
                                     "namespace's LimitRange or the policy's default container resources.",
    "project_id_missing": "The policy requires a valdrix.io/project-id label or annotation, and the object has none.",
    "gate_lock_timeout": "The gate could not lock the budget in time (fail-safe answer).",
    "gate_timeout": "The gate ran past its deadline (fail-safe answer).",
    "gate_evaluation_error": "The gate failed to evaluate the change (fail-safe answer).",
    "shadow_mode_fail_open": "Shadow mode answers a failed evaluation by allowing (fail-open).",
    "soft_mode_fail_safe_escalation": "Soft mode answers a failed evaluation by asking for approval.",
    "hard_mode_fail_closed": "Hard mode answers a failed evaluation by denying (fail-closed).",
    "shadow_mode_override": "Shadow mode records the violation but allows the change.",
    "soft_mode_escalation": "Soft mode turns the violation into an approval request.",
}
_SUBJECTS = {"plan_limit": "plan-ceiling", "budget": "budget", "enterprise_ceiling": "enterprise-ceiling",
             "cost_context": "missing-cost-data", "unpriced_resources": "unpriced-resources",
             "unbudgeted_project": "unbudgeted-project", "project_id": "missing-project-id"}
_MODE_REASON = re.compile(r"^(shadow|soft|hard)_mode_([a-z_]+)_(override|escalation|closed)$")
_HOW = {"override": "records the {s} violation but allows the change",
        "escalation": "turns the {s} violation into an approval request",
        "closed": "denies the change because of the {s} violation"}
_STAGES = {"plan_limit": "Plan ceiling", "project_allocation": "Project budget",
           "reserved_credits": "Reserved credits", "emergency_credits": "Emergency credits",
           "enterprise_ceiling": "Enterprise ceiling"}
_OUTCOMES = {"ALLOW": "allowed", "ALLOW_WITH_CREDITS": "allowed, funded partly by credits",
             "REQUIRE_APPROVAL": "held for a reviewer's approval", "DENY": "denied"}


def reason_text(code: str) -> str:
    """Return one reason code in words (an unknown code is named as such, never dropped)."""
    if code in REASONS:
        return REASONS[code]
    match = _MODE_REASON.match(code)
    if match and match.group(2) in _SUBJECTS:
        mode, subject, how = match.groups()
        return f"{mode.capitalize()} mode {_HOW[how].format(s=_SUBJECTS[subject])}."
    return f"Reason `{code}` (no description in this version)."


@dataclass(frozen=True)
class Line:
    label: str
    text: str


@dataclass(frozen=True)
class Explanation:
    summary: str
    reasons: list[Line] = field(default_factory=list)
    waterfall: list[Line] = field(default_factory=list)
    figures: list[Line] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def rows(lines: list[Line]) -> list[dict[str, str]]:
            return [{"label": line.label, "text": line.text} for line in lines]
        return {"summary": self.summary, "reasons": rows(self.reasons), "waterfall": rows(self.waterfall),
                "figures": rows(self.figures)}


def explain(decision: Decision) -> Explanation:
    """Return the decision in words: a summary, each reason, each waterfall stage and the figures it used."""
    response = decision.response_payload or {}
    context = decision.computed_context or {}
    amount = _usd(decision.estimated_monthly_delta_usd)
    mode = response.get("mode") or decision.mode
    summary = (f"The change ({decision.action or 'unspecified'}) to {decision.resource_reference} in "
               f"{decision.project_id}/{decision.environment} ({amount}/month) was "
               f"{_OUTCOMES.get(decision.decision, decision.decision)} in {mode} mode under policy version "
               f"{decision.policy_version}.")
    if decision.fail_safe:
        summary += " This is a fail-safe answer: the gate could not evaluate the change normally."
    reasons = [Line(code, reason_text(code)) for code in decision.reason_codes]
    waterfall = []
    for stage in response.get("entitlement_waterfall") or []:
        available = stage.get("available_usd")
        has = "unbounded" if available == "unbounded" else _usd(available)
        waterfall.append(Line(_STAGES.get(stage.get("stage"), str(stage.get("stage"))),
                              f"{stage.get('status')}: {_usd(stage.get('consumed_usd'))} drawn of {has} available"))
    figures = []
    for key, label in (("budget_scope", "Budget scope"), ("budget_limit_usd", "Monthly limit"),
                       ("scope_reserved_usd", "Reserved before this change"),
                       ("scope_headroom_usd", "Headroom before this change"),
                       ("scope_committed_usd", "Committed spend this month"),
                       ("reserved_credits_headroom_usd", "Reserved credits available"),
                       ("emergency_credits_headroom_usd", "Emergency credits available"),
                       ("risk_class", "Risk class"), ("budget_basis", "Budget basis")):
        value = context.get(key)
        if value is not None:
            figures.append(Line(label, _usd(value) if key.endswith("_usd") else str(value)))
    if decision.reservation_active or decision.reserved_allocation_usd:
        figures.append(Line("Reserved by this decision", f"{_usd(decision.reserved_allocation_usd)} of budget, "
                                                         f"{_usd(decision.reserved_credit_usd)} of credits"
                            + ("" if decision.reservation_active else " (released since)")))
    return Explanation(summary, reasons, waterfall, figures)


def _usd(value: Any) -> str:
    try:
        return f"${monthly(Decimal(str(value))):,.2f}"
    except (InvalidOperation, ValueError):
        return str(value)
