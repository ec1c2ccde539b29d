"""The unbudgeted-projects rule of the pure engine: a cost increase no budget governs, in a tenant that budgets."""

from __future__ import annotations

import pytest

from tests.unit.decisions.test_engine import NOW, budget, policy, request
from valdrix.decisions import engine
from valdrix.decisions.engine import Funding


@pytest.mark.parametrize(("mode", "rule", "decision", "reasons"), [
    ("shadow", "escalate", "ALLOW", ["unbudgeted_project", "shadow_mode_unbudgeted_project_override"]),
    ("soft", "escalate", "REQUIRE_APPROVAL", ["unbudgeted_project"]),
    ("hard", "escalate", "REQUIRE_APPROVAL", ["unbudgeted_project"]),
    ("shadow", "deny", "ALLOW", ["unbudgeted_project", "shadow_mode_unbudgeted_project_override"]),
    ("soft", "deny", "REQUIRE_APPROVAL", ["unbudgeted_project", "soft_mode_unbudgeted_project_escalation"]),
    ("hard", "deny", "DENY", ["unbudgeted_project"]),
    ("hard", "allow", "ALLOW", []),
])
def test_rule_by_mode(mode: str, rule: str, decision: str, reasons: list[str]) -> None:
    ev = engine.evaluate(request("40"), policy(mode, unbudgeted_projects=rule), 1,
                         Funding(None, tenant_has_budgets=True), NOW)
    assert ev.decision == decision
    assert list(ev.reasons) == ["no_budget_configured", *reasons]


def test_default_is_escalate_and_a_mistyped_project_in_hard_mode_no_longer_passes() -> None:
    assert engine.evaluate(request("4000"), policy("hard"), 1, Funding(None, tenant_has_budgets=True),
                           NOW).decision == "REQUIRE_APPROVAL"


@pytest.mark.parametrize(("funding", "amount"), [
    (Funding(None, tenant_has_budgets=False), "40"),  # a tenant without budgets: nothing to mistype against
    (Funding(budget("100"), tenant_has_budgets=True), "40"),  # a budget governs the project
    (Funding(None, tenant_has_budgets=True), "0"),  # a decrease (sent as 0) spends nothing
])
def test_rule_does_not_apply(funding: Funding, amount: str) -> None:
    ev = engine.evaluate(request(amount), policy("hard"), 1, funding, NOW)
    assert ev.decision == "ALLOW" and "unbudgeted_project" not in ev.reasons


def test_an_already_escalated_decision_is_not_changed() -> None:
    ev = engine.evaluate(request("6000"), policy("hard"), 1, Funding(None, tenant_has_budgets=True), NOW)
    assert ev.decision == "DENY" and "unbudgeted_project" not in ev.reasons
