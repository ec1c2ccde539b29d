"""The unpriced-resources rule of the pure engine: each mode, policy setting and incoming decision."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from valdrix.decisions import engine
from valdrix.policies.schemas import PolicyDocument

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def policy(mode: str, rule: str, **entitlements: Any) -> PolicyDocument:
    modes = {"default": mode, "prod": mode, "nonprod": mode}
    return PolicyDocument.model_validate({
        "mode_matrix": {"terraform": modes},
        "entitlements": {"unpriced_resources": rule, **entitlements},
    })


def evaluate(doc: PolicyDocument, amount: str = "10", unpriced: Any = 2, limit: str = "1000") -> engine.Evaluation:
    metadata = {} if unpriced is None else {"pricing": {"unpriced_count": unpriced}}
    inp = engine.make_input(source="terraform", project_id="p", environment="nonprod", action="terraform.apply",
                            resource_reference="stack", monthly_delta=Decimal(amount), hourly_delta=Decimal(0),
                            metadata=metadata)
    funding = engine.Funding(budget=engine.BudgetState("p", Decimal(limit), Decimal(0)))
    return engine.evaluate(inp, doc, 1, funding, NOW)


@pytest.mark.parametrize(("mode", "rule", "decision", "reasons"), [
    ("shadow", "escalate", "ALLOW", ["unpriced_resources", "shadow_mode_unpriced_resources_override"]),
    ("soft", "escalate", "REQUIRE_APPROVAL", ["unpriced_resources"]),
    ("hard", "escalate", "REQUIRE_APPROVAL", ["unpriced_resources"]),
    ("shadow", "deny", "ALLOW", ["unpriced_resources", "shadow_mode_unpriced_resources_override"]),
    ("soft", "deny", "REQUIRE_APPROVAL", ["unpriced_resources", "soft_mode_unpriced_resources_escalation"]),
    ("hard", "deny", "DENY", ["unpriced_resources"]),
    ("soft", "ignore", "ALLOW", []),
    ("hard", "ignore", "ALLOW", []),
])
def test_rule_by_mode(mode: str, rule: str, decision: str, reasons: list[str]) -> None:
    out = evaluate(policy(mode, rule))
    assert out.decision == decision
    assert list(out.reasons) == reasons
    if decision == "REQUIRE_APPROVAL":
        # An escalation holds what the budget funded, pending the reviewer, like a policy approval does.
        assert out.reserve_allocation == Decimal("10.0000")
    if decision == "DENY" or mode == "shadow":
        assert not out.reservation_active


def test_default_policy_escalates() -> None:
    assert PolicyDocument().entitlements.unpriced_resources == "escalate"
    assert evaluate(PolicyDocument()).decision == "REQUIRE_APPROVAL"


@pytest.mark.parametrize("junk", [None, 0, -1, "3", 2.0, True, [1], {"n": 1}])
def test_absent_or_junk_counts_are_zero(junk: Any) -> None:
    out = evaluate(policy("hard", "deny"), unpriced=junk)
    assert out.decision == "ALLOW" and out.reasons == ()


def test_junk_pricing_block_is_ignored() -> None:
    assert engine.unpriced_count({"pricing": "lots"}) == 0
    assert engine.unpriced_count({"pricing": {"unpriced_count": 4}}) == 4


def test_never_softens_a_stronger_decision() -> None:
    out = evaluate(policy("hard", "escalate"), amount="2000", limit="1000")
    assert out.decision == "DENY" and out.reasons == ("budget_exceeded",)


def test_zero_delta_with_unpriced_still_escalates() -> None:
    # A plan whose priced part nets to zero may hide its whole cost in the unpriced resources.
    assert evaluate(policy("soft", "escalate"), amount="0").decision == "REQUIRE_APPROVAL"


def test_hard_deny_threshold_in_shadow_adds_unpriced_override() -> None:
    out = evaluate(policy("shadow", "escalate", hard_deny_above_monthly_usd="5",
                              auto_approve_below_monthly_usd="1"), amount="10")
    assert out.decision == "ALLOW"
    assert out.reasons == ("hard_deny_threshold_exceeded", "shadow_mode_override", "unpriced_resources",
                           "shadow_mode_unpriced_resources_override")
