"""Routing is pure: first enabled match wins, defaults per environment, roles imply permissions."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from valdrix.approvals import routing
from valdrix.errors import Forbidden
from valdrix.policies.schemas import Approval, EnvironmentFlags, RoutingRule


def _inp(environment: str = "prod", action: str = "terraform.apply", amount: str = "100",
         risk: str | None = "medium") -> routing.RoutingInput:
    return routing.RoutingInput(environment=environment, action=action, monthly_delta=Decimal(amount), risk_level=risk)


def test_defaults_per_environment() -> None:
    prod = routing.route(Approval(), _inp("prod"))
    assert (prod["rule_id"], prod["required_permission"], prod["require_requester_reviewer_separation"]) == \
        ("default-prod", "approve:prod", True)
    nonprod = routing.route(Approval(), _inp("nonprod"))
    assert (nonprod["required_permission"], nonprod["require_requester_reviewer_separation"]) == \
        ("approve:nonprod", False)
    other = routing.route(Approval(), _inp("qa"))
    assert other["rule_id"] == "default-default" and other["required_permission"] == "approve:nonprod"
    flags = Approval(requester_reviewer_separation=EnvironmentFlags(default=True, prod=False, nonprod=True))
    assert routing.route(flags, _inp("nonprod"))["require_requester_reviewer_separation"] is True


def test_first_enabled_match_wins_on_every_criterion() -> None:
    rules = (
        RoutingRule(rule_id="off", enabled=False, required_permission="approve:nonprod"),
        RoutingRule(rule_id="k8s", action_prefixes=("k8s.",), required_permission="approve:nonprod"),
        RoutingRule(rule_id="range", min_monthly_delta_usd=Decimal("50"), max_monthly_delta_usd=Decimal("100"),
                    required_permission="approve:prod", allowed_reviewer_roles=("member",)),
        RoutingRule(rule_id="risky", risk_levels=("high",), environments=("production",),
                    required_permission="approve:prod", require_requester_reviewer_separation=False),
        RoutingRule(rule_id="catch-all", required_permission="approve:prod"),
    )
    approval = Approval(routing_rules=rules)
    assert routing.route(approval, _inp(amount="100"))["rule_id"] == "range"
    assert routing.route(approval, _inp(amount="100.0001"))["rule_id"] == "catch-all"
    assert routing.route(approval, _inp(amount="49.9999"))["rule_id"] == "catch-all"
    risky = routing.route(approval, _inp(amount="500", risk="high"))
    assert risky["rule_id"] == "risky" and risky["require_requester_reviewer_separation"] is False
    assert routing.route(approval, _inp(amount="500", risk=None))["rule_id"] == "catch-all"
    assert routing.route(approval, _inp(action="k8s.deploy"))["rule_id"] == "k8s"
    catch = routing.route(approval, _inp(amount="500"))
    assert catch["matched"] == "policy_rule" and catch["require_requester_reviewer_separation"] is True


def test_authority() -> None:
    trace = routing.route(Approval(), _inp("prod"))
    me, other = uuid.uuid4(), uuid.uuid4()
    routing.authorize(trace, reviewer=other, role="owner", permissions=(), requesters=(me,))
    with pytest.raises(Forbidden) as sep:
        routing.authorize(trace, reviewer=me, role="owner", permissions=(), requesters=(None, me))
    assert sep.value.code == "requester_reviewer_separation"
    with pytest.raises(Forbidden) as perm:
        routing.authorize(trace, reviewer=other, role="admin", permissions=(), requesters=(me,))
    assert perm.value.code == "approval_permission_missing"
    routing.authorize(trace, reviewer=other, role="admin", permissions=("approve:prod",), requesters=(me,))
    with pytest.raises(Forbidden) as role:
        routing.authorize(trace, reviewer=other, role="member", permissions=("approve:prod",), requesters=(me,))
    assert role.value.code == "reviewer_role_not_allowed"
    assert routing.may_review(trace, role="owner", permissions=())
    assert not routing.may_review(trace, role="admin", permissions=())
    nonprod = routing.route(Approval(), _inp("nonprod"))
    routing.authorize(nonprod, reviewer=me, role="admin", permissions=(), requesters=(me,))
    assert routing.effective_permissions("member", ["approve:nonprod"]) == {"approve:nonprod"}
