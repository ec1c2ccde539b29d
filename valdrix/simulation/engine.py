"""Pure what-if replay: a stored decision and a candidate policy in, what the candidate would have decided out.

A decision stores its input (the columns, and the caller's metadata in `request_payload`) and the state the gate
read under lock (`computed_context`: budget, credit headroom, tenant total, spend, the clock). Replaying feeds
exactly those to `decisions.engine.evaluate` with the candidate policy, so under the policy that made a decision
the replay returns the stored outcome. Each decision is replayed against the state recorded *at its time*: a candidate
that would have denied an earlier request does not free headroom for a later one (first-order what-if).

Where the candidate needs state the gate did not read for that decision, the decision is not replayable and
the reason says what is missing; nothing is guessed:

- `computed_context_unsupported`: no context of the current version (`valdrix.computed_context.v2`);
- `stored_decision_incomplete`: a field the replay reads is missing or malformed;
- `credit_headroom_not_recorded`: the candidate needs credits where the gate did not need to read them;
- `tenant_reserved_total_not_recorded`: the candidate has a plan or enterprise ceiling, the decision's
  policy had none, so the tenant-wide reserved total was not read;
- `spend_not_recorded` / `unreflected_reservations_not_recorded`: the candidate measures headroom on the
  forecast basis and the gate read no spend, or read it without the reservations it does not yet reflect;
- `cost_context_setting_not_recorded`: the candidate leaves the forecast basis and the outcome would depend on
  the server's `VALDRIX_COST_CONTEXT` at the time (an anomaly signal, or unusable spend), which is not stored.

Also here: the comparison of outcomes and the streaming summary (`Tally`), both plain data.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from valdrix.approvals import routing
from valdrix.costs.engine import Spend
from valdrix.decisions import engine
from valdrix.money import ZERO, monthly
from valdrix.policies.schemas import PolicyDocument

# Keys the gate adds to the caller's metadata when it stores the request (`decisions.service._decision_row`);
# the engine reads none of them, and they are removed so the replayed input is the one the gate evaluated.
GATE_METADATA_KEYS = ("computed_risk_class", "computed_risk_score")
UNREPLAYABLE_REASONS = ("computed_context_unsupported", "stored_decision_incomplete", "credit_headroom_not_recorded",
                        "tenant_reserved_total_not_recorded", "spend_not_recorded",
                        "unreflected_reservations_not_recorded", "cost_context_setting_not_recorded")


class NotReplayable(Exception):
    """The stored decision lacks what the candidate policy needs; `reason` is one of UNREPLAYABLE_REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Route(NamedTuple):
    """Where an approval is routed: the matching rule and the permission a reviewer needs."""

    rule_id: str
    required_permission: str


# The simulation's own types are plain (not frozen) dataclasses and named tuples: a replay builds several per
# stored decision, and a frozen dataclass's __init__ (one object.__setattr__ per field) cost several times a
# plain one's, a tenth of the whole replay.
@dataclass(slots=True)
class StoredDecision:
    """The stored decision as the replay reads it (plain data, as loaded from its row; never mutated).

    Amounts are as their columns hold them: already at the monthly quantum (reservations and the monthly delta)
    and the hourly one.
    """

    id: uuid.UUID
    created_at: datetime
    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    monthly_delta: Decimal
    hourly_delta: Decimal
    dry_run: bool
    fail_safe: bool
    policy_version: int
    decision: str
    reason_codes: tuple[str, ...]
    reserved_allocation: Decimal
    reserved_credit: Decimal
    # The caller's metadata, as the gate stored it in `request_payload` (the only part of it the engine reads);
    # None when the stored request has none.
    metadata: Any
    computed_context: dict[str, Any]
    # The routing of its approval request, when it has one.
    route: Route | None = None

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.decision, self.reason_codes, self.reserved_allocation, self.reserved_credit, self.route)


class Outcome(NamedTuple):
    """What a decision came to: the answer, its reasons, what it reserved and where its approval goes."""

    decision: str
    reasons: tuple[str, ...]
    reserved_allocation: Decimal
    reserved_credit: Decimal
    route: Route | None

    @property
    def reserved_total(self) -> Decimal:
        return self.reserved_allocation + self.reserved_credit  # both quantised: the sum is exact


class Replay(NamedTuple):
    """A stored decision replayed: the candidate's outcome and the full evaluation behind it."""

    outcome: Outcome
    evaluation: engine.Evaluation


def replay(stored: StoredDecision, policy: PolicyDocument, policy_version: int | None = None) -> Replay:
    """Return what `policy` would have decided for `stored`; raise NotReplayable naming what is missing.

    `policy_version` only labels the replayed computed context (default: the stored decision's own).
    """
    version = stored.policy_version if policy_version is None else policy_version
    try:
        inp = _input(stored)
        context = stored.computed_context
        if context.get("context_version") != engine.CONTEXT_VERSION:
            raise NotReplayable("computed_context_unsupported")
        now = datetime.fromisoformat(context["generated_at"])
        if stored.fail_safe:
            evaluation = engine.fail_safe(inp, policy, version, str(context["fail_safe_trigger"]), now)
        else:
            funding, unavailable = _funding(stored, inp, policy)
            evaluation = engine.evaluate(inp, policy, version, funding, now, context_unavailable=unavailable)
    except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as exc:
        raise NotReplayable("stored_decision_incomplete") from exc
    route = None
    if evaluation.decision == "REQUIRE_APPROVAL" and evaluation.mode != "shadow" and not inp.dry_run:
        # The approval the gate would open, routed as `approvals.service.open_for_decision` routes it.
        trace = routing.route(policy.approval, routing.RoutingInput(inp.environment, inp.action, inp.monthly_delta,
                                                                    evaluation.risk.level))
        route = Route(str(trace["rule_id"]), str(trace["required_permission"]))
    outcome = Outcome(evaluation.decision, evaluation.reasons, evaluation.reserve_allocation,
                      evaluation.reserve_credit, route)
    return Replay(outcome, evaluation)


def _input(stored: StoredDecision) -> engine.DecisionInput:
    metadata = stored.metadata
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return engine.DecisionInput(
        source=stored.source, project_id=stored.project_id, environment=stored.environment, action=stored.action,
        resource_reference=stored.resource_reference, monthly_delta=stored.monthly_delta,
        hourly_delta=stored.hourly_delta, dry_run=stored.dry_run,
        metadata={k: v for k, v in metadata.items() if k not in GATE_METADATA_KEYS})


def _money(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise TypeError("amount is not a string")
    return monthly(value)


def _optional_money(value: Any) -> Decimal | None:
    return None if value is None else _money(value)


def _spend(block: dict[str, Any] | None) -> Spend | None:
    """Return the spend summary the gate recorded (`Spend.as_json`), or None when it read none."""
    if block is None:
        return None
    through = block["data_through"]
    percent = block["anomaly_percent"]
    return Spend(scope_key=block["scope_key"], status=block["data_status"],
                 data_through=None if through is None else date.fromisoformat(through),
                 month_to_date=_money(block["mtd_spend_usd"]), burn_rate_daily=_money(block["burn_rate_daily_usd"]),
                 forecast_eom=_money(block["forecast_eom_usd"]), anomaly_delta=_money(block["anomaly_delta_usd"]),
                 anomaly_percent=None if percent is None else Decimal(percent), anomaly_kind=block["anomaly_kind"],
                 unreflected_reserved=_money(block["unreflected_reserved_usd"]))


def _funding(stored: StoredDecision, inp: engine.DecisionInput,
             policy: PolicyDocument) -> tuple[engine.Funding, bool]:
    """Return the funding the gate would have read for `policy`, from what it read for the stored decision.

    Mirrors `decisions.service._lock_funding`: which reads happen depends on the policy (its budget basis and
    ceilings) and on whether the budget alone covers the request; what was read is in the computed context.
    """
    context = stored.computed_context
    was_forecast = context["budget_basis"] == "forecast"
    forecast = policy.budget_basis == "forecast"
    spend = _spend(context["spend"])
    scope = context["budget_scope"]
    budget_was = budget = None
    unavailable = was_unavailable = False
    if scope is not None:
        limit, reserved = _money(context["budget_limit_usd"]), _money(context["scope_reserved_usd"])
        usable = spend is not None and spend.usable
        # The gate reports unusable spend as an unavailable context on the forecast basis always, and on the
        # reservations basis when the server requires cost context, which its reason code records.
        was_unavailable = spend is not None and not usable and (
            was_forecast or "computed_context_unavailable" in stored.reason_codes)
        budget_was = budget = engine.BudgetState(scope, limit, reserved,
                                                 spend.committed if was_forecast and spend and usable else None)
        if forecast and not was_forecast:
            if spend is None:
                raise NotReplayable("spend_not_recorded")
            if usable and reserved > 0:
                raise NotReplayable("unreflected_reservations_not_recorded")
            unavailable = not usable
            budget = engine.BudgetState(scope, limit, reserved, spend.committed if usable else None)
        elif was_forecast and not forecast:
            anomaly = usable and spend is not None and spend.anomaly_kind is not None
            if anomaly or (not usable and inp.monthly_delta > 0):
                raise NotReplayable("cost_context_setting_not_recorded")
            # Neither a risk signal nor an unavailable context follows from this spend, whatever the setting.
            spend = None
            budget = engine.BudgetState(scope, limit, reserved)
        else:
            # On the same basis the candidate reads exactly what the gate read.
            unavailable = was_unavailable
    credits_read = not was_unavailable and engine.needs_credits(inp, budget_was)
    credits_needed = credits_read if budget is budget_was else not unavailable and engine.needs_credits(inp, budget)
    if credits_needed and not credits_read:
        raise NotReplayable("credit_headroom_not_recorded")
    tenant_total = ZERO
    if policy.entitlements.plan_monthly_ceiling_usd or policy.entitlements.enterprise_monthly_ceiling_usd:
        recorded = _optional_money(context["tenant_reserved_total_usd"])
        if recorded is None:
            raise NotReplayable("tenant_reserved_total_not_recorded")
        tenant_total = recorded
    funding = engine.Funding(
        budget=budget,
        reserved_credits=_money(context["reserved_credits_headroom_usd"]) if credits_needed else ZERO,
        emergency_credits=_money(context["emergency_credits_headroom_usd"]) if credits_needed else ZERO,
        tenant_reserved_total=tenant_total, spend=spend)
    return funding, unavailable


def changed(current: Outcome, candidate: Outcome) -> bool:
    """Return whether the candidate's outcome differs from the stored one.

    A stored decision whose approval was never opened (a dry run, or one recorded before approvals opened with
    the decision) has no route to compare, so only the decision, reasons and reservations are compared.
    """
    if current.route is None and current.decision == candidate.decision == "REQUIRE_APPROVAL":
        candidate = Outcome(candidate.decision, candidate.reasons, candidate.reserved_allocation,
                            candidate.reserved_credit, None)
    return current != candidate


@dataclass
class _Impact:
    changed: int = 0
    reserved_change: Decimal = ZERO


@dataclass
class Tally:
    """The simulation summary, accumulated one decision at a time in memory bounded by the distinct keys."""

    evaluated: int = 0
    replayed: int = 0
    changed: int = 0
    not_replayable: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    reserved_current: Decimal = ZERO
    reserved_candidate: Decimal = ZERO
    projects: dict[str, _Impact] = field(default_factory=dict)
    environments: dict[str, _Impact] = field(default_factory=dict)

    def add(self, stored: StoredDecision, candidate: Outcome | None, unreplayable: str | None = None) -> bool:
        """Count one decision (its candidate outcome, or why it has none); return whether it changed."""
        self.evaluated += 1
        if candidate is None:
            self.not_replayable[unreplayable or "stored_decision_incomplete"] += 1
            return False
        current = stored.outcome
        self.replayed += 1
        self.transitions[(current.decision, candidate.decision)] += 1
        self.reserved_current += current.reserved_total
        self.reserved_candidate += candidate.reserved_total
        if not changed(current, candidate):
            return False
        self.changed += 1
        delta = candidate.reserved_total - current.reserved_total
        for impacts, key in ((self.projects, stored.project_id), (self.environments, stored.environment)):
            impact = impacts.setdefault(key, _Impact())
            impact.changed += 1
            impact.reserved_change += delta
        return True

    def most_affected(self, kind: str, top: int) -> list[tuple[str, int, Decimal]]:
        """Return the `top` projects or environments by changed decisions: (key, changed, reserved change)."""
        impacts = self.projects if kind == "projects" else self.environments
        ranked = sorted(impacts.items(), key=lambda item: (-item[1].changed, -abs(item[1].reserved_change), item[0]))
        return [(key, impact.changed, monthly(impact.reserved_change)) for key, impact in ranked[:top]]
