"""The pure engine: worked decisions, waterfall invariants and fingerprint properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valdrix.canonical import LEGACY_SCHEME, sha256_hex
from valdrix.decisions import engine
from valdrix.decisions.engine import BudgetState, Funding, make_input
from valdrix.environments import environment_class, normalise_environment
from valdrix.money import monthly
from valdrix.policies.schemas import PolicyDocument

NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)
D = Decimal


def policy(mode: str = "soft", **entitlements: object) -> PolicyDocument:
    doc = PolicyDocument().model_dump()
    for source in doc["mode_matrix"].values():
        source.update(default=mode, prod=mode, nonprod=mode)
    doc["entitlements"].update(entitlements)
    return PolicyDocument.model_validate(doc)


def request(amount: str, env: str = "nonprod", **kw: object) -> engine.DecisionInput:
    return make_input(source="terraform", project_id="Payments", environment=env, action="terraform.apply",
                      resource_reference="aws_instance.web", monthly_delta=D(amount), hourly_delta=D(0), **kw)


def budget(limit: str, reserved: str = "0") -> BudgetState:
    return BudgetState("payments", D(limit), D(reserved))


def test_environment_normalisation() -> None:
    assert [normalise_environment(e) for e in ("Production", " live ", "staging", "DEV", "", "qa")] == \
        ["prod", "prod", "nonprod", "nonprod", "nonprod", "qa"]
    assert environment_class("qa") == "default"


def test_allow_within_budget_reserves_allocation() -> None:
    ev = engine.evaluate(request("30"), policy(), 1, Funding(budget("100")), NOW)
    assert ev.decision == "ALLOW" and ev.reasons == ()
    assert ev.reserve_allocation == D("30.0000") and ev.reservation_active


def test_credits_fund_the_rest_reserved_before_emergency() -> None:
    ev = engine.evaluate(request("12"), policy(), 1,
                         Funding(budget("0"), reserved_credits=D(5), emergency_credits=D(10)), NOW)
    assert ev.decision == "ALLOW_WITH_CREDITS"
    assert ev.reasons == ("credit_waterfall_used", "reserved_credit_waterfall_used", "emergency_credit_waterfall_used")
    assert (ev.reserve_reserved_credits, ev.reserve_emergency_credits) == (D("5.0000"), D("7.0000"))


@pytest.mark.parametrize(("mode", "decision", "reasons", "held"), [
    ("shadow", "ALLOW", ("budget_exceeded", "shadow_mode_budget_override"), D(0)),
    ("soft", "REQUIRE_APPROVAL", ("budget_exceeded", "soft_mode_budget_escalation"), D(10)),
    ("hard", "DENY", ("budget_exceeded",), D(0)),
])
def test_budget_exceeded_by_mode(mode: str, decision: str, reasons: tuple[str, ...], held: Decimal) -> None:
    ev = engine.evaluate(request("30"), policy(mode), 1, Funding(budget("10")), NOW)
    assert (ev.decision, ev.reasons, ev.reserve_allocation) == (decision, reasons, held)


def test_headroom_counts_only_this_scopes_reservations() -> None:
    ev = engine.evaluate(request("60"), policy("hard"), 1, Funding(budget("1000", reserved="960")), NOW)
    assert ev.decision == "DENY"
    assert engine.evaluate(request("40"), policy("hard"), 1, Funding(budget("1000", "960")), NOW).decision == "ALLOW"


def test_hard_deny_threshold_and_plan_ceiling() -> None:
    ev = engine.evaluate(request("6000"), policy("soft"), 1, Funding(budget("10000")), NOW)
    assert ev.reasons == ("hard_deny_threshold_exceeded", "soft_mode_escalation")
    assert not ev.reservation_active
    ev = engine.evaluate(request("60"), policy("soft", plan_monthly_ceiling_usd="50"), 1,
                         Funding(budget("500")), NOW)
    assert ev.reasons == ("plan_limit_exceeded", "soft_mode_plan_limit_escalation")
    assert ev.waterfall[0].status == "fail" and not ev.reservation_active


def test_enterprise_ceiling_holds_partial_in_soft_mode() -> None:
    ev = engine.evaluate(request("30"), policy("soft", enterprise_monthly_ceiling_usd="25"), 1,
                         Funding(budget("100")), NOW)
    assert ev.decision == "REQUIRE_APPROVAL"
    assert ev.reasons == ("enterprise_ceiling_exceeded", "soft_mode_enterprise_ceiling_escalation")
    assert ev.reserve_allocation == D("25.0000")


def test_prod_requires_approval_unless_below_auto_approve() -> None:
    assert engine.evaluate(request("250", env="prod"), policy(), 1, Funding(budget("5000")), NOW).reasons == \
        ("approval_required",)
    assert engine.evaluate(request("24.99", env="prod"), policy(), 1, Funding(budget("5000")), NOW).decision == "ALLOW"
    shadow = engine.evaluate(request("250", env="prod"), policy("shadow"), 1, Funding(budget("5000")), NOW)
    assert shadow.decision == "ALLOW" and shadow.reasons == ("shadow_mode_approval_override",)
    assert not shadow.reservation_active


def test_dry_run_never_reserves_and_no_budget_reserves_nothing() -> None:
    ev = engine.evaluate(request("30", dry_run=True), policy(), 1, Funding(budget("100")), NOW)
    assert ev.reasons == ("dry_run",) and not ev.reservation_active
    ev = engine.evaluate(request("30"), policy(), 1, Funding(None), NOW)
    assert ev.decision == "ALLOW" and ev.reasons == ("no_budget_configured",) and not ev.reservation_active


@pytest.mark.parametrize(("mode", "decision", "suffix"), [
    ("shadow", "ALLOW", "shadow_mode_fail_open"), ("soft", "REQUIRE_APPROVAL", "soft_mode_fail_safe_escalation"),
    ("hard", "DENY", "hard_mode_fail_closed")])
def test_fail_safe_by_mode(mode: str, decision: str, suffix: str) -> None:
    ev = engine.fail_safe(request("30"), policy(mode), 1, "gate_lock_timeout", NOW)
    assert (ev.decision, ev.reasons, ev.reservation_active) == (decision, ("gate_lock_timeout", suffix), False)


def test_cost_context_unavailable_follows_mode() -> None:
    ev = engine.evaluate(request("42"), policy("hard"), 1, Funding(budget("100")), NOW, context_unavailable=True)
    assert (ev.decision, ev.reasons[-1]) == ("DENY", "hard_mode_cost_context_closed")


def test_risk_matches_tokens_not_substrings() -> None:
    feedback = make_input(source="terraform", project_id="p", environment="nonprod", action="apply",
                          resource_reference="feedback-service", monthly_delta=D(1), hourly_delta=D(0))
    assert "high_impact_resource_class" not in engine.assess_risk(feedback).factors
    db = make_input(source="terraform", project_id="p", environment="prod", action="destroy",
                    resource_reference="aws_db_instance.main-db", monthly_delta=D(6000), hourly_delta=D(0))
    risk = engine.assess_risk(db)
    assert risk.level == "high" and risk.score == 3 + 2 + 1 + 2


money = st.decimals(min_value=0, max_value=300, places=2)


@settings(max_examples=300, deadline=None)
@given(delta=money, limit=money, reserved=money, credits=money, emergency=money,
       mode=st.sampled_from(["shadow", "soft", "hard"]))
def test_waterfall_invariants(delta: Decimal, limit: Decimal, reserved: Decimal, credits: Decimal,
                              emergency: Decimal, mode: str) -> None:
    state = BudgetState("payments", limit, reserved)
    ev = engine.evaluate(request(str(delta)), policy(mode, auto_approve_below_monthly_usd="5000"), 1,
                         Funding(state, reserved_credits=credits, emergency_credits=emergency), NOW)
    held = ev.reserve_allocation + ev.reserve_credit
    # Never reserve more than requested, more than the scope's headroom, or more than a pool holds.
    assert held <= monthly(delta)
    assert ev.reserve_allocation <= state.headroom
    assert ev.reserve_reserved_credits <= credits and ev.reserve_emergency_credits <= emergency
    fundable = state.headroom + credits + emergency
    if monthly(delta) <= state.headroom:
        assert ev.decision == "ALLOW" and ev.reserve_credit == 0
        assert held == (0 if mode == "shadow" else monthly(delta))
    elif monthly(delta) <= fundable:
        # Shadow reports what would have happened (credits used) but holds nothing.
        assert ev.decision == "ALLOW_WITH_CREDITS"
        assert held == (0 if mode == "shadow" else monthly(delta))
    else:
        assert ev.decision == engine.violation_decision(mode)
        assert "budget_exceeded" in ev.reasons
        assert held == (min(monthly(delta), fundable) if mode == "soft" else 0)
    if mode == "shadow" or ev.decision == "DENY":
        assert held == 0
    assert ev.reservation_active == (held > 0)


# Integers within RFC 8785's range: the request schema refuses larger ones (tests/unit/test_canonical.py).
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(meta=st.dictionaries(st.text(max_size=6), json_values, max_size=4), amount=money,
       action=st.text(min_size=1, max_size=10).filter(str.strip))
def test_fingerprint_deterministic_and_sensitive(meta: dict[str, object], amount: Decimal, action: str) -> None:
    def build(**over: object) -> engine.DecisionInput:
        base: dict[str, object] = dict(source="terraform", project_id="p", environment="prod", action=action,
                                       resource_reference="r", monthly_delta=amount, hourly_delta=D(0), metadata=meta)
        base.update(over)
        return make_input(**base)  # type: ignore[arg-type]

    fp = build().fingerprint
    assert fp == build(metadata=dict(reversed(list(meta.items())))).fingerprint
    assert fp == build(environment="Production").fingerprint
    assert fp == build(dry_run=True).fingerprint
    assert fp != build(monthly_delta=amount + D("0.0001")).fingerprint
    assert fp != build(action=action + "x").fingerprint
    assert fp != build(metadata={**meta, "extra-key": 1}).fingerprint
    assert fp != build(resource_reference="r2").fingerprint


def test_a_fingerprint_stored_before_rfc8785_still_matches_its_request() -> None:
    inp = make_input(source="terraform", project_id="p", environment="prod", action="terraform.apply",
                     resource_reference="module.café", monthly_delta=D("1"), hourly_delta=D(0),
                     metadata={"ratio": 1.0})
    legacy = sha256_hex(inp.fingerprint_fields(), LEGACY_SCHEME)
    assert legacy != inp.fingerprint and inp.fingerprints == (inp.fingerprint, legacy)
    assert inp.has_fingerprint(legacy) and inp.has_fingerprint(inp.fingerprint.upper())
    assert not inp.has_fingerprint("0" * 64)
    ascii_only = make_input(source="terraform", project_id="p", environment="prod", action="terraform.apply",
                            resource_reference="r", monthly_delta=D("1"), hourly_delta=D(0), metadata={"n": 3})
    assert ascii_only.fingerprints == (ascii_only.fingerprint,)
