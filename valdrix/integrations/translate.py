"""HCP Terraform run task ↔ the gate: request + priced plan → the one decision input; decision → task result.

The fingerprint of the decision input covers what the plan changes (its change digest and priced summary), the
workspace, the stage, the project and the environment, and not the run: an approval of one run's plan is
redeemed by a later run of the very same plan (docs/terraform-cloud.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valdrix.canonical import sha256_hex
from valdrix.decisions import engine
from valdrix.decisions.models import Decision
from valdrix.integrations.schemas import RunTaskRequest
from valdrix.money import ZERO, hourly, monthly
from valdrix.pricing.summary import clip, ranked, request_metadata, resource_reference
from valdrix.pricing.terraform import PlanEstimate, ResourceCost

SOURCE = "terraform"
ACTION = "terraform.apply"
# HCP Terraform takes at most 250 outcomes: one for the decision, the rest for resources.
MAX_OUTCOMES = 250
MAX_MESSAGE = 1000
MAX_DESCRIPTION = 200
_PASSING = ("ALLOW", "ALLOW_WITH_CREDITS")
_STATUS_TAG = {"ALLOW": ("Passed", "none"), "ALLOW_WITH_CREDITS": ("Passed on credits", "info"),
               "REQUIRE_APPROVAL": ("Approval required", "warning"), "DENY": ("Denied", "error")}


@dataclass(frozen=True)
class Target:
    """The project (budget scope) and environment a run is decided for."""

    project_id: str
    environment: str


DEFAULT_TARGET = Target("default", "nonprod")


def target(mappings: list[dict[str, Any]], organization: str, workspace: str) -> Target:
    """Return the most specific mapping's target: exact workspace before `*`, exact organization before `*`."""
    best: tuple[int, Target] | None = None
    org, ws = organization.lower(), workspace.lower()
    for rule in mappings:
        rule_org, rule_ws = str(rule["organization"]).lower(), str(rule["workspace"]).lower()
        if rule_org not in (org, "*") or rule_ws not in (ws, "*"):
            continue
        rank = (2 if rule_ws == ws else 0) + (1 if rule_org == org else 0)
        if best is None or rank > best[0]:
            best = (rank, Target(str(rule["project_id"]), str(rule["environment"])))
    return best[1] if best is not None else DEFAULT_TARGET


def idempotency_key(req: RunTaskRequest) -> str:
    """Return the key of one run's task stage: every delivery of it meets the same decision."""
    key = f"tfc:{req.workspace_id}:{req.run_id}:{req.stage}"
    return key if len(key) <= 128 else "tfc:" + sha256_hex([req.workspace_id, req.run_id, req.stage])


def to_input(req: RunTaskRequest, estimate: PlanEstimate, digest: str, where: Target) -> engine.DecisionInput:
    """Return the decision input for a priced run; a speculative (plan-only) run is a dry run."""
    metadata = {**request_metadata(estimate, digest), "terraform_stage": req.stage,
                "terraform_organization": req.organization_name, "terraform_workspace_id": req.workspace_id,
                "terraform_workspace_name": req.workspace_name}
    return engine.make_input(
        source=SOURCE, project_id=where.project_id, environment=where.environment, action=ACTION,
        resource_reference=resource_reference(f"{req.organization_name}/{req.workspace_name}", estimate),
        # A cost decrease reserves nothing; the signed delta travels in the pricing metadata.
        monthly_delta=max(ZERO, estimate.monthly_delta_usd), hourly_delta=max(hourly(0), estimate.hourly_delta_usd),
        metadata=metadata, dry_run=req.is_speculative)


def failed(message: str) -> dict[str, Any]:
    """Return a failed task result that carries only a message (no decision was made)."""
    return {"data": {"type": "task-results", "attributes": {"status": "failed", "message": clip(message, MAX_MESSAGE)}}}


def task_result(decision: Decision, estimate: PlanEstimate, *, url: str, redeemed_approval: str | None,
                outcomes: bool) -> dict[str, Any]:
    """Return the JSON:API task result for a decision: status, message, console link and (if wanted) outcomes.

    `redeemed_approval` is the approval this run used up: the run passes on the approved decision.
    """
    passed = redeemed_approval is not None or decision.decision in _PASSING
    attributes = {"status": "passed" if passed else "failed",
                  "message": clip(_message(decision, estimate, redeemed_approval), MAX_MESSAGE), "url": url}
    body: dict[str, Any] = {"data": {"type": "task-results", "attributes": attributes}}
    if outcomes:
        rows = [_decision_outcome(decision, estimate, url, redeemed_approval)]
        rows += [_resource_outcome(r) for r in ranked(estimate) if r.kind != "free"][: MAX_OUTCOMES - 1]
        body["data"]["relationships"] = {"outcomes": {"data": rows}}
    return body


def _signed(amount: Decimal) -> str:
    return f"{monthly(amount):+} USD/month"


def _reasons(decision: Decision) -> str:
    return ", ".join(decision.reason_codes) or "none"


def _message(decision: Decision, estimate: PlanEstimate, redeemed_approval: str | None) -> str:
    scope = f"project {decision.project_id} ({decision.environment}, {decision.mode} mode)"
    change = _signed(estimate.monthly_delta_usd)
    if redeemed_approval is not None:
        return (f"Valdrix Gate: {change} for {scope} passes on approval {redeemed_approval}, used up by this "
                "run; another run of this plan needs a new approval.")
    text = f"Valdrix Gate {decision.decision}: {change} for {scope}; reasons: {_reasons(decision)}."
    if decision.decision == "DENY":
        context = decision.computed_context or {}
        if context.get("budget_limit_usd") is not None:
            text += (f" Budget {context.get('budget_scope') or decision.project_id}: limit "
                     f"{context['budget_limit_usd']} USD/month, headroom {context.get('scope_headroom_usd')} USD.")
    if decision.decision == "REQUIRE_APPROVAL":
        if decision.dry_run:
            text += " A speculative plan cannot be approved: run a real plan to ask for approval."
        elif decision.approval_request_id is not None:
            text += (f" Approval required: an approver approves request {decision.approval_request_id} (link "
                     f"below, or `valdrix approve {decision.approval_request_id}`); then re-run this plan, "
                     "which passes once.")
    return text


def _decision_outcome(decision: Decision, estimate: PlanEstimate, url: str,
                      redeemed_approval: str | None) -> dict[str, Any]:
    label, level = ("Approved", "info") if redeemed_approval is not None else _STATUS_TAG[decision.decision]
    pricing = estimate.breakdown()["counts"]
    lines = [f"**{decision.decision}** in {decision.mode} mode for project `{decision.project_id}` "
             f"({decision.environment}), policy v{decision.policy_version}.", "",
             f"Monthly change: {_signed(estimate.monthly_delta_usd)}; reserved: {decision.reserved_allocation_usd} "
             f"USD budget + {decision.reserved_credit_usd} USD credits.", "",
             "Reasons:", *[f"- `{code}`" for code in decision.reason_codes or ["none"]], "",
             f"Resources: {pricing.get('priced', 0)} priced, {pricing.get('usage_based', 0)} usage-based, "
             f"{pricing.get('unpriced', 0)} unpriced, {pricing.get('free', 0)} without cost."]
    if redeemed_approval is not None:
        lines += ["", f"This run used up approval `{redeemed_approval}`."]
    elif decision.approval_request_id is not None:
        lines += ["", f"Approval request `{decision.approval_request_id}`: approve it in the console "
                      f"({url}), then re-run this plan."]
    return {"type": "task-result-outcomes", "attributes": {
        "outcome-id": f"valdrix-decision-{decision.id}",
        "description": clip(f"{decision.decision}: {_reasons(decision)}", MAX_DESCRIPTION),
        "tags": {"Status": [{"label": label, "level": level}],
                 "Monthly cost": [{"label": _signed(estimate.monthly_delta_usd), "level": "none"}]},
        "body": "\n".join(lines), "url": url}}


def _resource_outcome(resource: ResourceCost) -> dict[str, Any]:
    delta = resource.monthly_delta_usd
    level = "warning" if delta > 0 else "info" if delta < 0 else "none"
    tags: dict[str, list[dict[str, str]]] = {"Monthly cost": [{"label": _signed(delta), "level": level}],
                                             "Action": [{"label": resource.action, "level": "none"}]}
    if resource.kind != "priced":
        tags["Pricing"] = [{"label": resource.kind.replace("_", "-"), "level": "warning"}]
    before = "—" if resource.before_monthly_usd is None else str(resource.before_monthly_usd)
    after = "—" if resource.after_monthly_usd is None else str(resource.after_monthly_usd)
    body = ("| before (USD/month) | after (USD/month) | change (USD/month) |\n|---:|---:|---:|\n"
            f"| {before} | {after} | {delta} |")
    if resource.notes:
        body += "\n\n" + "\n".join(f"- {note}" for note in resource.notes)
    return {"type": "task-result-outcomes", "attributes": {
        "outcome-id": clip(resource.address, MAX_DESCRIPTION),
        "description": clip(f"{resource.address} ({resource.action}): {_signed(delta)}", MAX_DESCRIPTION),
        "tags": tags, "body": body}}
