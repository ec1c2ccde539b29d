"""The project-id rule of the pure engine (`kubernetes.require_project_id`): each mode, off by default."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from valdrix.decisions import engine
from valdrix.policies.schemas import PolicyDocument

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def policy(mode: str, required: bool = True) -> PolicyDocument:
    return PolicyDocument.model_validate({
        "mode_matrix": {"k8s_admission": {"default": mode, "prod": mode, "nonprod": mode}},
        "kubernetes": {"require_project_id": required},
    })


def evaluate(doc: PolicyDocument, declared: bool = False, amount: str = "10") -> engine.Evaluation:
    # The admission adapter sets the flag only for an object without a project; other adapters never set it.
    metadata = {} if declared else {"project_declared": False}
    inp = engine.make_input(source="k8s_admission", project_id="team-a", environment="nonprod",
                            action="admission.create", resource_reference="deployments/team-a/web",
                            monthly_delta=Decimal(amount), hourly_delta=Decimal(0), metadata=metadata)
    funding = engine.Funding(budget=engine.BudgetState("team-a", Decimal(1000), Decimal(0)))
    return engine.evaluate(inp, doc, 1, funding, NOW)


@pytest.mark.parametrize(("mode", "decision", "reasons"), [
    ("shadow", "ALLOW", ["project_id_missing", "shadow_mode_project_id_override"]),
    ("soft", "REQUIRE_APPROVAL", ["project_id_missing", "soft_mode_project_id_escalation"]),
    ("hard", "DENY", ["project_id_missing"]),
])
def test_missing_project_by_mode(mode: str, decision: str, reasons: list[str]) -> None:
    out = evaluate(policy(mode))
    assert out.decision == decision
    assert list(out.reasons) == reasons
    if decision == "DENY":
        assert not out.reservation_active


def test_off_by_default_and_silent_when_declared() -> None:
    assert PolicyDocument().kubernetes.require_project_id is False
    assert evaluate(PolicyDocument()).decision == "ALLOW"
    assert evaluate(policy("hard", required=False)).reasons == ()
    assert evaluate(policy("hard"), declared=True).decision == "ALLOW"


def test_never_softens_a_harder_decision() -> None:
    # Above the hard-deny threshold a soft policy asks for approval for that reason; the rule adds its own.
    out = evaluate(policy("soft"), amount="6000")
    assert out.decision == "REQUIRE_APPROVAL"
    assert "hard_deny_threshold_exceeded" in out.reasons and "project_id_missing" in out.reasons
