"""Pure gate evaluation: plain data in, a decision out; time is passed in, nothing is read or written.

Reason-code catalogue (ordered as they are appended; documented in docs/decisions.md):
  no_budget_configured, computed_context_unavailable, {shadow_mode_cost_context_override |
  soft_mode_cost_context_escalation | hard_mode_cost_context_closed}, hard_deny_threshold_exceeded,
  {shadow_mode_override | soft_mode_escalation}, plan_limit_exceeded, budget_exceeded,
  enterprise_ceiling_exceeded, {shadow|soft}_mode_{plan_limit|budget|enterprise_ceiling}_{override|escalation},
  unbudgeted_project [{shadow_mode_unbudgeted_project_override | soft_mode_unbudgeted_project_escalation}],
  unpriced_resources [{shadow_mode_unpriced_resources_override | soft_mode_unpriced_resources_escalation}],
  container_resources_defaulted, project_id_missing [{shadow_mode_project_id_override |
  soft_mode_project_id_escalation}], credit_waterfall_used, reserved_credit_waterfall_used,
  emergency_credit_waterfall_used,
  shadow_mode_approval_override, approval_required, dry_run; fail-safe: gate_lock_timeout | gate_timeout |
  gate_evaluation_error, then shadow_mode_fail_open | soft_mode_fail_safe_escalation | hard_mode_fail_closed.

`unpriced_resources`: the client's cost estimate could not price some resources (request metadata
`pricing.unpriced_count`, a non-negative integer, > 0; anything else counts as 0) and the policy's
`entitlements.unpriced_resources` is not `ignore`. It only ever raises an otherwise allowed decision:
`escalate` → REQUIRE_APPROVAL in soft and hard mode; `deny` → the mode's violation decision (soft
REQUIRE_APPROVAL with `soft_mode_unpriced_resources_escalation`, hard DENY); shadow allows and adds
`shadow_mode_unpriced_resources_override`. An escalation keeps the reservation the waterfall made, like an
approval required by policy.

`unbudgeted_project`: the request increases cost, no budget governs its project, yet the tenant has budgets
(a mistyped project id, or a project nobody budgeted). `entitlements.unbudgeted_projects` decides, exactly
like `unpriced_resources`: `escalate` (default) → REQUIRE_APPROVAL, `deny` → the mode's violation decision,
`allow` → unchanged; shadow only records it.

`project_id_missing`: the policy's `kubernetes.require_project_id` is on and the Kubernetes object declares no
`valdrix.io/project-id` label or annotation (request metadata `project_declared: false`): shadow allows with
`shadow_mode_project_id_override`, soft asks for approval, hard denies.

`container_resources_defaulted`: informational, never changes the decision. The Kubernetes adapter priced
containers that name no cpu/memory request or limit at the namespace's LimitRange or the policy's
`kubernetes.default_container_resources` (request metadata `pricing.defaulted_containers` > 0).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property, partial
from typing import Any, Literal, NamedTuple

from valdrix.canonical import digests, is_digest_of, sha256_hex
from valdrix.costs.engine import Spend
from valdrix.environments import environment_class, normalise_environment
from valdrix.money import ZERO, hourly, monthly
from valdrix.policies.schemas import PolicyDocument

Source = Literal["terraform", "k8s_admission", "cloud_event"]
SOURCES: tuple[str, ...] = ("terraform", "k8s_admission", "cloud_event")
DECISIONS: tuple[str, ...] = ("ALLOW", "ALLOW_WITH_CREDITS", "REQUIRE_APPROVAL", "DENY")
FAIL_SAFE_TRIGGERS: tuple[str, ...] = ("gate_lock_timeout", "gate_timeout", "gate_evaluation_error")
CONTEXT_VERSION = "valdrix.computed_context.v2"


def mode_for(policy: PolicyDocument, source: str, environment: str) -> tuple[str, str]:
    """Return (mode, mode_scope) for a source and normalised environment."""
    column = environment_class(environment)
    modes = getattr(policy.mode_matrix, source)
    return getattr(modes, column), f"{source}:{column}"


def violation_decision(mode: str) -> str:
    """Return what a policy violation becomes in a mode: shadow allows, soft escalates, hard denies."""
    return {"shadow": "ALLOW", "soft": "REQUIRE_APPROVAL", "hard": "DENY"}[mode]


@dataclass(frozen=True)
class DecisionInput:
    """The one normalised request every adapter translates its payload into."""

    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    monthly_delta: Decimal
    hourly_delta: Decimal
    metadata: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def fingerprint_fields(self) -> dict[str, Any]:
        """Return exactly the fields the request fingerprint covers (dry_run and the key are excluded)."""
        return {
            "source": self.source,
            "project_id": self.project_id,
            "environment": self.environment,
            "action": self.action,
            "resource_reference": self.resource_reference,
            "estimated_monthly_delta_usd": str(monthly(self.monthly_delta)),
            "estimated_hourly_delta_usd": str(hourly(self.hourly_delta)),
            "metadata": self.metadata,
        }

    @cached_property
    def fingerprint(self) -> str:
        """The SHA-256 of the canonical JSON of the fingerprint fields, computed once per input.

        The input is frozen and its metadata is never mutated after construction (the gate copies it).
        """
        return sha256_hex(self.fingerprint_fields())

    def has_fingerprint(self, stored: str) -> bool:
        """True when `stored` is this input's fingerprint, also as hashed before RFC 8785 (a decision recorded
        before the upgrade still replays and still matches a pipeline's persisted expected fingerprint)."""
        return stored.lower() == self.fingerprint or is_digest_of(stored, self.fingerprint_fields())

    @cached_property
    def fingerprints(self) -> tuple[str, ...]:
        """Every fingerprint a stored decision of this input may carry (current first, then the legacy one)."""
        return digests(self.fingerprint_fields())


def make_input(*, source: str, project_id: str | None, environment: str | None, action: str,
               resource_reference: str, monthly_delta: Decimal, hourly_delta: Decimal,
               metadata: dict[str, Any] | None = None, dry_run: bool = False) -> DecisionInput:
    """Return a DecisionInput with identifiers normalised and money quantised."""
    return DecisionInput(
        source=source,
        project_id=(project_id or "").strip().lower() or "default",
        environment=normalise_environment(environment),
        action=action.strip().lower(),
        resource_reference=resource_reference.strip(),
        monthly_delta=monthly(monthly_delta),
        hourly_delta=hourly(hourly_delta),
        metadata=dict(metadata or {}),
        dry_run=dry_run,
    )


@dataclass(frozen=True)
class BudgetState:
    """A scope's limit and what counts against it: active reservations, or (forecast basis) committed spend."""

    scope_key: str
    limit: Decimal
    reserved: Decimal
    # Set on the forecast basis: max(month-to-date, forecast) + reservations not yet reflected in spend.
    committed: Decimal | None = None

    @property
    def headroom(self) -> Decimal:
        used = self.reserved if self.committed is None else self.committed
        return max(ZERO, monthly(self.limit - used))


@dataclass(frozen=True)
class Funding:
    """What the waterfall may draw on, read under the scope's lock."""

    budget: BudgetState | None
    reserved_credits: Decimal = ZERO
    emergency_credits: Decimal = ZERO
    tenant_reserved_total: Decimal = ZERO
    spend: Spend | None = None
    # Whether the tenant has any active budget (read only when none governs the request's project).
    tenant_has_budgets: bool = False


# Stage and Risk are named tuples rather than frozen dataclasses: an evaluation builds six of them, and a
# frozen dataclass's __init__ (one object.__setattr__ per field) costs several times a tuple's.
class Stage(NamedTuple):
    stage: str
    status: str
    available_usd: Decimal | None
    consumed_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "status": self.status, "consumed_usd": str(self.consumed_usd),
                "available_usd": "unbounded" if self.available_usd is None else str(self.available_usd)}


class Risk(NamedTuple):
    level: str
    score: int
    factors: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    decision: str
    reasons: tuple[str, ...]
    mode: str
    mode_scope: str
    reserve_allocation: Decimal
    reserve_reserved_credits: Decimal
    reserve_emergency_credits: Decimal
    waterfall: tuple[Stage, ...]
    risk: Risk
    # Builds the computed context when it is first asked for: the gate stores it with every decision, while a
    # replay of history (`simulation`) needs only the outcome, and building it is a third of an evaluation.
    build_context: Callable[[], dict[str, Any]] = field(repr=False, compare=False)
    fail_safe_trigger: str | None = None

    @cached_property
    def computed_context(self) -> dict[str, Any]:
        """The facts the decision was made on, stored with it (`_context`)."""
        return self.build_context()

    @property
    def reserve_credit(self) -> Decimal:
        return self.reserve_reserved_credits + self.reserve_emergency_credits

    @property
    def reservation_active(self) -> bool:
        return self.reserve_allocation + self.reserve_credit > 0

    @property
    def approval_required(self) -> bool:
        return self.decision == "REQUIRE_APPROVAL"


_DESTRUCTIVE = ("destroy", "delete", "terminate", "remove", "revoke", "detach", "scale_down", "downscale")
_HIGH_IMPACT = {"gpu", "db", "database", "cluster", "k8s", "kubernetes", "warehouse", "redshift", "bigquery",
                "rds", "postgres", "postgresql", "mysql", "elasticsearch", "sql"}
_CRITICAL = {"critical", "high", "tier0", "tier1", "p0", "sev0"}
_MEDIUM = {"medium", "tier2", "p1", "sev1"}
_NOT_TOKEN = re.compile(r"[^a-z0-9]+")


def assess_risk(inp: DecisionInput, *, anomaly: bool = False) -> Risk:
    """Return the additive risk score and class; resource words match whole tokens, not substrings."""
    score = 0
    factors: list[str] = []  # not list[str](): building the generic alias each call cost more than the list
    if inp.environment == "prod":
        score += 3
        factors.append("production_environment")
    if any(word in inp.action for word in _DESTRUCTIVE):
        score += 2
        factors.append("destructive_action")
    criticality = str(inp.metadata.get("criticality") or inp.metadata.get("business_criticality") or "").lower()
    if criticality in _CRITICAL:
        score += 2
        factors.append("criticality_high")
    elif criticality in _MEDIUM:
        score += 1
        factors.append("criticality_medium")
    text = " ".join(str(inp.metadata.get(k) or "") for k in ("resource_class", "resource_type"))
    if not _HIGH_IMPACT.isdisjoint(_NOT_TOKEN.split(f"{text} {inp.resource_reference}".lower())):
        score += 1
        factors.append("high_impact_resource_class")
    if inp.monthly_delta >= 5000:
        score += 2
        factors.append("large_monthly_delta")
    elif inp.monthly_delta >= 1000:
        score += 1
        factors.append("moderate_monthly_delta")
    if anomaly:
        score += 1
        factors.append("anomaly_spike_signal")
    level = "high" if score >= 6 else "medium" if score >= 3 else "low"
    return Risk(level=level, score=score, factors=tuple(factors))


def month_window(now: datetime) -> tuple[date, date, int, int]:
    """Return (first day, last day, elapsed days inclusive, days in month) of `now`'s UTC month."""
    today = now.date()
    total = calendar.monthrange(today.year, today.month)[1]
    start = today.replace(day=1)
    return start, start + timedelta(days=total - 1), today.day, total


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(monthly(value))


def _context(inp: DecisionInput, policy: PolicyDocument, policy_version: int, mode: str, mode_scope: str,
             funding: Funding | None, risk: Risk, now: datetime) -> dict[str, Any]:
    start, end, elapsed, total = month_window(now)
    budget = funding.budget if funding else None
    ceilings = policy.entitlements
    return {
        "context_version": CONTEXT_VERSION,
        "generated_at": now.isoformat(),
        "policy_version": policy_version,
        "mode": mode,
        "mode_scope": mode_scope,
        "month_start": start.isoformat(),
        "month_end": end.isoformat(),
        "month_elapsed_days": elapsed,
        "month_total_days": total,
        "budget_basis": policy.budget_basis,
        "budget_scope": budget.scope_key if budget else None,
        "budget_limit_usd": _money(budget.limit) if budget else None,
        "hard_deny_above_monthly_usd": _money(ceilings.hard_deny_above_monthly_usd),
        "scope_reserved_usd": _money(budget.reserved) if budget else None,
        "scope_headroom_usd": _money(budget.headroom) if budget else None,
        "scope_committed_usd": _money(budget.committed) if budget and budget.committed is not None else None,
        "reserved_credits_headroom_usd": _money(funding.reserved_credits) if funding else None,
        "emergency_credits_headroom_usd": _money(funding.emergency_credits) if funding else None,
        "tenant_reserved_total_usd": (_money(funding.tenant_reserved_total) if funding and (
            ceilings.plan_monthly_ceiling_usd or ceilings.enterprise_monthly_ceiling_usd) else None),
        "risk_class": risk.level,
        "risk_score": risk.score,
        "risk_factors": list(risk.factors),
        "spend": funding.spend.as_json() if funding and funding.spend else None,
    }


def _ceiling(value: Decimal | None, used: Decimal) -> Decimal | None:
    # A ceiling of 0 (or none) means "no ceiling".
    if not value:
        return None
    return max(ZERO, monthly(value - used))


def needs_credits(inp: DecisionInput, budget: BudgetState | None) -> bool:
    """Return whether the budget alone cannot fund the request, so credit grants must be read and locked."""
    return budget is not None and inp.monthly_delta > budget.headroom


@dataclass
class _Waterfall:
    decision: str = "ALLOW"
    reason: str | None = None
    allocation: Decimal = ZERO
    reserved_credits: Decimal = ZERO
    emergency_credits: Decimal = ZERO
    stages: list[Stage] = field(default_factory=list)


def _waterfall(requested: Decimal, mode: str, policy: PolicyDocument, funding: Funding) -> _Waterfall:
    """Plan ceiling → project budget → reserved credits → emergency credits → enterprise ceiling."""
    out = _Waterfall()
    plan = _ceiling(policy.entitlements.plan_monthly_ceiling_usd, funding.tenant_reserved_total)
    if plan is not None and requested > plan:
        out.stages.append(Stage("plan_limit", "fail", plan, ZERO))
        out.decision, out.reason = violation_decision(mode), "plan_limit_exceeded"
        return out
    out.stages.append(Stage("plan_limit", "skipped" if plan is None else "pass", plan,
                            ZERO if plan is None else requested))
    enterprise = _ceiling(policy.entitlements.enterprise_monthly_ceiling_usd, funding.tenant_reserved_total)
    target = requested if enterprise is None else min(requested, enterprise)
    remaining = target
    if funding.budget is None:
        # Without a budget the scope is unbounded and nothing is reserved against it.
        out.stages.append(Stage("project_allocation", "skipped", None, remaining))
        remaining = ZERO
    else:
        headroom = funding.budget.headroom
        out.allocation = min(remaining, headroom)
        remaining -= out.allocation
        out.stages.append(Stage("project_allocation", "pass" if remaining == 0 else "partial", headroom,
                                out.allocation))
    for name, pool in (("reserved_credits", funding.reserved_credits),
                       ("emergency_credits", funding.emergency_credits)):
        take = min(remaining, pool) if remaining > 0 else ZERO
        remaining -= take
        status = "skipped" if take == 0 else "pass" if remaining == 0 else "partial"
        out.stages.append(Stage(name, status, pool, take))
        if name == "reserved_credits":
            out.reserved_credits = take
        else:
            out.emergency_credits = take
    exceeded = enterprise is not None and requested > enterprise
    out.stages.append(Stage("enterprise_ceiling", "skipped" if enterprise is None else
                            ("fail" if exceeded else "pass"), enterprise, min(requested, enterprise or requested)))
    if remaining > 0 or exceeded:
        out.decision = violation_decision(mode)
        out.reason = "budget_exceeded" if remaining > 0 else "enterprise_ceiling_exceeded"
        if mode != "soft":
            # Only a soft escalation holds what it could fund, pending review; shadow and hard hold nothing.
            out.allocation = out.reserved_credits = out.emergency_credits = ZERO
    elif out.reserved_credits + out.emergency_credits > 0:
        out.decision = "ALLOW_WITH_CREDITS"
    return out


def unpriced_count(metadata: dict[str, Any]) -> int:
    """Return `metadata.pricing.unpriced_count` when it is a non-negative integer, else 0."""
    pricing = metadata.get("pricing")
    count = pricing.get("unpriced_count") if isinstance(pricing, dict) else None
    # bool is an int subclass; `true` is not a count.
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def defaulted_containers(metadata: dict[str, Any]) -> int:
    """Return `metadata.pricing.defaulted_containers` when it is a non-negative integer, else 0."""
    pricing = metadata.get("pricing")
    count = pricing.get("defaulted_containers") if isinstance(pricing, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def _escalation_rule(rule: str, reason: str, mode: str, decision: str, reasons: list[str]) -> str:
    """Return the decision after a rule that can only raise an allowed decision (`escalate` or `deny`)."""
    if rule in ("ignore", "allow") or decision not in ("ALLOW", "ALLOW_WITH_CREDITS"):
        return decision
    reasons.append(reason)
    if mode == "shadow":
        reasons.append(f"shadow_mode_{reason}_override")
        return decision
    if rule == "deny":
        if mode == "soft":
            reasons.append(f"soft_mode_{reason}_escalation")
        return violation_decision(mode)
    return "REQUIRE_APPROVAL"


def _project_missing(mode: str, decision: str, reasons: list[str]) -> str:
    """Return the decision after the project-id rule (an object declaring no valdrix.io/project-id)."""
    reasons.append("project_id_missing")
    if mode == "shadow":
        reasons.append("shadow_mode_project_id_override")
        return decision
    if mode == "soft":
        reasons.append("soft_mode_project_id_escalation")
        return decision if decision in ("REQUIRE_APPROVAL", "DENY") else "REQUIRE_APPROVAL"
    return "DENY"


_SUFFIX_SUBJECT = {"plan_limit_exceeded": "plan_limit", "budget_exceeded": "budget",
                   "enterprise_ceiling_exceeded": "enterprise_ceiling"}


def evaluate(inp: DecisionInput, policy: PolicyDocument, policy_version: int, funding: Funding,
             now: datetime, *, context_unavailable: bool = False) -> Evaluation:
    """Return the decision for `inp` under `policy` given the funding read under lock at time `now`."""
    mode, mode_scope = mode_for(policy, inp.source, inp.environment)
    anomaly = funding.spend is not None and funding.spend.usable and funding.spend.anomaly_kind is not None
    risk = assess_risk(inp, anomaly=anomaly)
    reasons: list[str] = []
    if funding.budget is None:
        reasons.append("no_budget_configured")
    decision = "ALLOW"
    wf = _Waterfall()
    requested = inp.monthly_delta
    if context_unavailable and requested > 0:
        reasons.append("computed_context_unavailable")
        reasons.append({"shadow": "shadow_mode_cost_context_override", "soft": "soft_mode_cost_context_escalation",
                        "hard": "hard_mode_cost_context_closed"}[mode])
        decision = violation_decision(mode)
    elif requested > policy.entitlements.hard_deny_above_monthly_usd:
        reasons.append("hard_deny_threshold_exceeded")
        if mode != "hard":
            reasons.append("shadow_mode_override" if mode == "shadow" else "soft_mode_escalation")
        decision = violation_decision(mode)
    else:
        wf = _waterfall(requested, mode, policy, funding)
        decision = wf.decision
        if wf.reason:
            reasons.append(wf.reason)
            if mode != "hard":
                suffix = "override" if mode == "shadow" else "escalation"
                reasons.append(f"{mode}_mode_{_SUFFIX_SUBJECT[wf.reason]}_{suffix}")
        if wf.reserved_credits + wf.emergency_credits > 0:
            reasons.append("credit_waterfall_used")
            if wf.reserved_credits > 0:
                reasons.append("reserved_credit_waterfall_used")
            if wf.emergency_credits > 0:
                reasons.append("emergency_credit_waterfall_used")
    if funding.budget is None and funding.tenant_has_budgets and requested > 0:
        decision = _escalation_rule(policy.entitlements.unbudgeted_projects, "unbudgeted_project", mode, decision,
                                    reasons)
    if unpriced_count(inp.metadata):
        decision = _escalation_rule(policy.entitlements.unpriced_resources, "unpriced_resources", mode, decision,
                                    reasons)
    if defaulted_containers(inp.metadata):
        reasons.append("container_resources_defaulted")
    if policy.kubernetes.require_project_id and inp.metadata.get("project_declared") is False:
        decision = _project_missing(mode, decision, reasons)
    column = environment_class(inp.environment)
    approval_by_policy = (getattr(policy.approval.require_approval, column)
                          and requested >= policy.entitlements.auto_approve_below_monthly_usd)
    if decision in ("ALLOW", "ALLOW_WITH_CREDITS") and approval_by_policy and requested > 0:
        if mode == "shadow":
            reasons.append("shadow_mode_approval_override")
        else:
            decision = "REQUIRE_APPROVAL"
            reasons.append("approval_required")
    allocation, reserved_credits, emergency_credits = wf.allocation, wf.reserved_credits, wf.emergency_credits
    if inp.dry_run:
        reasons.append("dry_run")
    if inp.dry_run or mode == "shadow" or decision == "DENY":
        # Shadow observes, DENY provisions nothing, and a dry run must never hold money.
        allocation = reserved_credits = emergency_credits = ZERO
    return Evaluation(
        decision=decision, reasons=_dedupe(reasons), mode=mode, mode_scope=mode_scope,
        reserve_allocation=monthly(allocation), reserve_reserved_credits=monthly(reserved_credits),
        reserve_emergency_credits=monthly(emergency_credits), waterfall=tuple(wf.stages), risk=risk,
        build_context=partial(_context, inp, policy, policy_version, mode, mode_scope, funding, risk, now),
    )


@dataclass(frozen=True)
class Unrecorded:
    """The mode's fail-safe answer when no decision could be recorded: no id, nothing reserved."""

    decision: str
    reasons: tuple[str, ...]
    mode: str
    trigger: str


def fail_safe_reasons(mode: str, trigger: str) -> list[str]:
    """Return the reasons of a fail-safe answer: the trigger, then what the mode makes of it."""
    if trigger not in FAIL_SAFE_TRIGGERS:
        trigger = "gate_evaluation_error"
    return [trigger, {"shadow": "shadow_mode_fail_open", "soft": "soft_mode_fail_safe_escalation",
                      "hard": "hard_mode_fail_closed"}[mode]]


def fail_safe(inp: DecisionInput, policy: PolicyDocument, policy_version: int, trigger: str,
              now: datetime) -> Evaluation:
    """Return the mode's fail-safe decision (shadow allows, soft escalates, hard denies) for a failed gate."""
    mode, mode_scope = mode_for(policy, inp.source, inp.environment)
    reasons = fail_safe_reasons(mode, trigger)
    trigger = reasons[0]
    if inp.dry_run:
        reasons.append("dry_run")
    risk = assess_risk(inp)

    def context() -> dict[str, Any]:
        context = _context(inp, policy, policy_version, mode, mode_scope, None, risk, now)
        return {**context, "fail_safe_trigger": trigger}

    return Evaluation(decision=violation_decision(mode), reasons=tuple(reasons), mode=mode, mode_scope=mode_scope,
                      reserve_allocation=ZERO, reserve_reserved_credits=ZERO, reserve_emergency_credits=ZERO,
                      waterfall=(), risk=risk, build_context=context, fail_safe_trigger=trigger)


def _dedupe(reasons: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.strip().lower() for r in reasons if r.strip()))
