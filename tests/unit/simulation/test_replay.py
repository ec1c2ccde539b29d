"""Replay is exact: over generated histories, what the gate read and stored is enough to re-decide.

A generated *world* holds everything the gate could read for a request (budget, spend, credit headroom, the
tenant's reserved total, the server's cost-context setting). The gate reads from it what its policy needs
(`gate_reads`, mirroring `decisions.service._lock_funding`) and stores the decision as the service does. Then:

- replaying a stored decision under the policy that made it returns its outcome and computed context exactly;
- replaying under any other policy either says what is missing (not replayable), or returns exactly what the
  gate would have decided under that policy had it read the world itself.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valdrix.approvals import routing
from valdrix.costs.engine import Spend
from valdrix.decisions import engine as gate
from valdrix.money import ZERO, monthly
from valdrix.policies.schemas import PolicyDocument
from valdrix.simulation import engine
from valdrix.simulation.engine import NotReplayable, Outcome, Route, StoredDecision, Tally

MODES = ("shadow", "soft", "hard")
money = st.decimals(min_value=0, max_value=3000, places=2, allow_nan=False, allow_infinity=False).map(monthly)


@dataclass(frozen=True)
class World:
    """Everything the gate could read for one request."""

    budget: gate.BudgetState | None
    spend: Spend
    unreflected: Decimal
    reserved_credits: Decimal
    emergency_credits: Decimal
    tenant_total: Decimal
    cost_context: str
    fail_safe_trigger: str | None
    now: datetime


@st.composite
def policies(draw: st.DrawFn) -> PolicyDocument:
    modes = {source: {column: draw(st.sampled_from(MODES)) for column in ("default", "prod", "nonprod")}
             for source in gate.SOURCES}
    hard = draw(money.filter(lambda v: v > 0))
    auto = draw(st.decimals(min_value=0, max_value=hard, places=2))
    ceiling = st.one_of(st.none(), money)
    rules = draw(st.lists(st.fixed_dictionaries({
        "environments": st.lists(st.sampled_from(["prod", "nonprod", "qa"]), max_size=2),
        "min_monthly_delta_usd": st.one_of(st.none(), money.map(str)),
        "risk_levels": st.lists(st.sampled_from(["low", "medium", "high"]), max_size=2),
        "required_permission": st.sampled_from(["approve:prod", "approve:nonprod"]),
    }), max_size=2))
    return PolicyDocument.model_validate({
        "mode_matrix": modes,
        "approval": {"require_approval": {c: draw(st.booleans()) for c in ("default", "prod", "nonprod")},
                     "routing_rules": [{"rule_id": f"r{i}", **rule} for i, rule in enumerate(rules)]},
        "entitlements": {"hard_deny_above_monthly_usd": str(hard), "auto_approve_below_monthly_usd": str(auto),
                         "plan_monthly_ceiling_usd": draw(ceiling), "enterprise_monthly_ceiling_usd": draw(ceiling),
                         "unpriced_resources": draw(st.sampled_from(["ignore", "escalate", "deny"]))},
        "budget_basis": draw(st.sampled_from(["reservations", "forecast"])),
    })


@st.composite
def requests(draw: st.DrawFn) -> gate.DecisionInput:
    metadata: dict[str, Any] = {"team": "t"}
    if draw(st.booleans()):
        metadata["pricing"] = {"unpriced_count": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        metadata["criticality"] = draw(st.sampled_from(["high", "medium", "low"]))
    if draw(st.booleans()):
        metadata["risk_level"] = "low"  # caller-declared; the gate keeps it and the engine never reads it
    return gate.make_input(source=draw(st.sampled_from(gate.SOURCES)), project_id="payments",
                           environment=draw(st.sampled_from(["prod", "dev", "qa"])),
                           action=draw(st.sampled_from(["create", "update", "delete"])),
                           resource_reference=draw(st.sampled_from(["aws_db_instance.main", "aws_instance.web"])),
                           monthly_delta=draw(money), hourly_delta=Decimal("0.01"), metadata=metadata,
                           dry_run=draw(st.integers(0, 9)) == 0)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    reserved = draw(st.one_of(st.just(ZERO), money))
    budget = draw(st.one_of(st.none(), st.builds(lambda limit: gate.BudgetState("payments", limit, reserved),
                                                 money)))
    status = draw(st.sampled_from(["fresh", "fresh", "stale", "none", "unavailable"]))
    spend = Spend(scope_key="payments", status=status, data_through=date(2026, 3, 10), month_to_date=draw(money),
                  burn_rate_daily=draw(money), forecast_eom=draw(money), anomaly_delta=draw(money),
                  anomaly_percent=Decimal("42.00"), anomaly_kind=draw(st.sampled_from([None, "spike", "new_spend"])))
    return World(budget=budget, spend=spend,
                 unreflected=draw(money) if budget is not None and reserved > 0 else ZERO,
                 reserved_credits=draw(money), emergency_credits=draw(money), tenant_total=draw(money),
                 cost_context=draw(st.sampled_from(["off", "on", "required"])),
                 fail_safe_trigger=draw(st.sampled_from([None] * 8 + list(gate.FAIL_SAFE_TRIGGERS))),
                 now=datetime(2026, 3, 12, 9, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 10_000))))


def gate_reads(world: World, policy: PolicyDocument, inp: gate.DecisionInput) -> tuple[gate.Funding, bool]:
    """Return what the gate reads for `inp` under `policy` (as `decisions.service._lock_funding` does)."""
    forecast = policy.budget_basis == "forecast"
    ceilings = policy.entitlements.plan_monthly_ceiling_usd or policy.entitlements.enterprise_monthly_ceiling_usd
    spend = None
    if world.budget is not None and (forecast or world.cost_context != "off"):
        spend = world.spend
        if forecast and spend.usable and world.budget.reserved > 0:
            spend = replace(spend, unreflected_reserved=world.unreflected)
    unavailable = spend is not None and not spend.usable and (forecast or world.cost_context == "required")
    state = None
    if world.budget is not None:
        committed = spend.committed if forecast and spend is not None and spend.usable else None
        state = replace(world.budget, committed=committed)
    credits = not unavailable and gate.needs_credits(inp, state)
    return gate.Funding(budget=state, reserved_credits=world.reserved_credits if credits else ZERO,
                        emergency_credits=world.emergency_credits if credits else ZERO,
                        tenant_reserved_total=world.tenant_total if ceilings else ZERO, spend=spend), unavailable


def decide(world: World, policy: PolicyDocument, inp: gate.DecisionInput) -> tuple[gate.Evaluation, Route | None]:
    """Return the gate's evaluation of `inp` under `policy` in `world`, and the routing of its approval."""
    if world.fail_safe_trigger is not None:
        ev = gate.fail_safe(inp, policy, 1, world.fail_safe_trigger, world.now)
    else:
        funding, unavailable = gate_reads(world, policy, inp)
        ev = gate.evaluate(inp, policy, 1, funding, world.now, context_unavailable=unavailable)
    route = None
    if ev.decision == "REQUIRE_APPROVAL" and ev.mode != "shadow" and not inp.dry_run:
        trace = routing.route(policy.approval, routing.RoutingInput(inp.environment, inp.action, inp.monthly_delta,
                                                                    ev.risk.level))
        route = Route(trace["rule_id"], trace["required_permission"])
    return ev, route


def store(world: World, policy: PolicyDocument, inp: gate.DecisionInput) -> StoredDecision:
    """Return the decision as the gate stores it (JSON columns round-tripped through JSON)."""
    ev, route = decide(world, policy, inp)
    metadata = {**inp.metadata, "computed_risk_class": ev.risk.level, "computed_risk_score": ev.risk.score}
    metadata.setdefault("risk_level", ev.risk.level)
    return StoredDecision(
        id=uuid.uuid4(), created_at=world.now, source=inp.source, project_id=inp.project_id,
        environment=inp.environment, action=inp.action, resource_reference=inp.resource_reference,
        monthly_delta=inp.monthly_delta, hourly_delta=inp.hourly_delta, dry_run=inp.dry_run,
        fail_safe=ev.fail_safe_trigger is not None, policy_version=1, decision=ev.decision,
        reason_codes=ev.reasons, reserved_allocation=ev.reserve_allocation, reserved_credit=ev.reserve_credit,
        metadata=json.loads(json.dumps(metadata)),
        computed_context=json.loads(json.dumps(ev.computed_context)), route=route)


histories = st.lists(st.tuples(worlds(), requests()), min_size=1, max_size=8)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(policy=policies(), history=histories)
def test_replay_under_the_recording_policy_returns_every_stored_decision(
        policy: PolicyDocument, history: list[tuple[World, gate.DecisionInput]]) -> None:
    tally = Tally()
    for world, inp in history:
        stored = store(world, policy, inp)
        replayed = engine.replay(stored, policy)
        assert replayed.outcome == stored.outcome
        assert replayed.evaluation.computed_context == stored.computed_context
        tally.add(stored, replayed.outcome)
    assert (tally.replayed, tally.changed, sum(tally.not_replayable.values())) == (len(history), 0, 0)
    assert tally.reserved_candidate == tally.reserved_current


@FAST
@given(recorded=policies(), candidate=policies(), history=histories)
def test_replay_under_a_candidate_is_what_the_gate_would_have_decided_or_says_what_is_missing(
        recorded: PolicyDocument, candidate: PolicyDocument, history: list[tuple[World, gate.DecisionInput]]) -> None:
    for world, inp in history:
        stored = store(world, recorded, inp)
        try:
            outcome = engine.replay(stored, candidate).outcome
        except NotReplayable as exc:
            assert exc.reason in engine.UNREPLAYABLE_REASONS
            continue
        ev, route = decide(world, candidate, inp)
        assert outcome == Outcome(ev.decision, ev.reasons, ev.reserve_allocation, ev.reserve_credit, route)


def test_missing_or_old_context_is_not_replayable() -> None:
    policy = PolicyDocument()
    world = World(budget=None, spend=Spend("p", "none", None, ZERO, ZERO, ZERO, ZERO, None, None), unreflected=ZERO,
                  reserved_credits=ZERO, emergency_credits=ZERO, tenant_total=ZERO, cost_context="off",
                  fail_safe_trigger=None, now=datetime(2026, 3, 1, tzinfo=UTC))
    inp = gate.make_input(source="terraform", project_id="p", environment="dev", action="create",
                          resource_reference="r", monthly_delta=Decimal(5), hourly_delta=Decimal(0))
    stored = store(world, policy, inp)
    old = replace(stored, computed_context={**stored.computed_context,
                                            "context_version": "valdrix.computed_context.v1"})
    broken = replace(stored, computed_context={k: v for k, v in stored.computed_context.items() if k != "spend"})
    no_metadata = replace(stored, metadata=None)
    for case, reason in ((old, "computed_context_unsupported"), (broken, "stored_decision_incomplete"),
                         (no_metadata, "stored_decision_incomplete")):
        try:
            engine.replay(case, policy)
        except NotReplayable as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"{reason} was replayed")


def test_tally_ranks_the_most_affected_and_counts_reasons() -> None:
    def outcome(decision: str, reserved: str) -> Outcome:
        return Outcome(decision, (), Decimal(reserved), ZERO, None)

    def stored(project: str, decision: str, reserved: str) -> StoredDecision:
        return StoredDecision(uuid.uuid4(), datetime(2026, 3, 1, tzinfo=UTC), "terraform", project, "prod", "a", "r",
                              Decimal(1), ZERO, False, False, 1, decision, (), Decimal(reserved), ZERO, {}, {})

    tally = Tally()
    assert tally.add(stored("a", "ALLOW", "10"), outcome("DENY", "0"))
    assert tally.add(stored("b", "ALLOW", "10"), outcome("DENY", "0"))
    assert tally.add(stored("b", "ALLOW", "0"), outcome("ALLOW", "5"))
    assert not tally.add(stored("c", "ALLOW", "3"), outcome("ALLOW", "3"))
    assert not tally.add(stored("c", "ALLOW", "3"), None, "spend_not_recorded")
    assert tally.most_affected("projects", 2) == [("b", 2, Decimal("-5.0000")), ("a", 1, Decimal("-10.0000"))]
    assert dict(tally.transitions) == {("ALLOW", "DENY"): 2, ("ALLOW", "ALLOW"): 2}
    assert (tally.evaluated, tally.replayed, tally.changed, dict(tally.not_replayable)) == (
        5, 4, 3, {"spend_not_recorded": 1})
    assert tally.reserved_candidate - tally.reserved_current == Decimal(-15)


def _world(**changes: Any) -> World:
    base = World(budget=gate.BudgetState("payments", Decimal(100), ZERO),
                 spend=Spend("payments", "fresh", date(2026, 3, 11), Decimal(40), Decimal(5), Decimal(90), ZERO, None,
                             None),
                 unreflected=ZERO, reserved_credits=Decimal(100), emergency_credits=ZERO, tenant_total=Decimal(500),
                 cost_context="on", fail_safe_trigger=None, now=datetime(2026, 3, 12, 9, tzinfo=UTC))
    return replace(base, **changes)


def _policy(**changes: Any) -> PolicyDocument:
    return PolicyDocument.model_validate({"mode_matrix": {"terraform": {"nonprod": "hard"}}, **changes})


_STALE = Spend("payments", "stale", date(2026, 3, 1), ZERO, ZERO, ZERO, ZERO, None, None)
_SPIKE = replace(_world().spend, anomaly_kind="spike")


@pytest.mark.parametrize(("world", "recorded", "candidate", "reason"), [
    # Within budget on reservations, so no credit was read; on the forecast basis the budget is short.
    (_world(), _policy(), _policy(budget_basis="forecast"), "credit_headroom_not_recorded"),
    (_world(cost_context="off"), _policy(), _policy(budget_basis="forecast"), "spend_not_recorded"),
    (_world(budget=gate.BudgetState("payments", Decimal(100), Decimal(30)), unreflected=Decimal(30)), _policy(),
     _policy(budget_basis="forecast"), "unreflected_reservations_not_recorded"),
    (_world(spend=_STALE, cost_context="required"), _policy(budget_basis="forecast"), _policy(),
     "cost_context_setting_not_recorded"),
    (_world(spend=_SPIKE, cost_context="off"), _policy(budget_basis="forecast"),
     _policy(approval={"routing_rules": [{"rule_id": "risky", "risk_levels": ["medium"],
                                          "required_permission": "approve:prod"}]}),
     "cost_context_setting_not_recorded"),
    (_world(), _policy(), _policy(entitlements={"plan_monthly_ceiling_usd": "1000"}),
     "tenant_reserved_total_not_recorded"),
])
def test_each_missing_piece_of_state_is_named_where_it_would_change_the_answer(
        world: World, recorded: PolicyDocument, candidate: PolicyDocument, reason: str) -> None:
    inp = gate.make_input(source="terraform", project_id="payments", environment="dev", action="create",
                          resource_reference="aws_db_instance.main", monthly_delta=Decimal(50),
                          hourly_delta=Decimal(0), metadata={"criticality": "medium"})
    stored = store(world, recorded, inp)
    assert engine.replay(stored, recorded).outcome == stored.outcome
    with pytest.raises(NotReplayable) as raised:
        engine.replay(stored, candidate)
    assert raised.value.reason == reason
