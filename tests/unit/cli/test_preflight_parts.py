"""The pure parts of `valdrix preflight`: CI run ids, keys, durations, argv, plan digests and bounded metadata."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from valdrix.canonical import canonical_json
from valdrix.cli.continuation import Continuation, StateError, parse_duration, read_binding
from valdrix.cli.preflight import ci_run_id, ci_run_url, idempotency_key, optional_values
from valdrix.pricing.summary import MAX_REFERENCE, change_digest, pricing_metadata, resource_reference
from valdrix.pricing.terraform import PlanEstimate, ResourceCost, price_plan

PLANS = FIXTURES / "terraform-plans"


def test_github_run_id_ignores_the_attempt() -> None:
    env = {"GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "plan"}
    assert ci_run_id(env) == "gh-42-plan"
    assert ci_run_id({**env, "GITHUB_RUN_ATTEMPT": "2"}) == "gh-42-plan"
    assert ci_run_url({**env, "GITHUB_REPOSITORY": "o/r"}) == "https://github.com/o/r/actions/runs/42"


def test_gitlab_run_id_is_pipeline_and_job_name() -> None:
    env = {"CI_PIPELINE_ID": "7", "CI_JOB_ID": "100", "CI_JOB_NAME": "preflight"}
    assert ci_run_id(env) == "gl-7-preflight"
    # A job retry gets a new CI_JOB_ID but must meet the same decision.
    assert ci_run_id({**env, "CI_JOB_ID": "101"}) == "gl-7-preflight"
    assert ci_run_id({}) is None


def test_idempotency_key_is_bounded_and_stable() -> None:
    assert idempotency_key("payments", "prod", "gh-1-plan", "pre_apply") == "tf:payments:prod:gh-1-plan:pre_apply"
    long = idempotency_key("p" * 100, "prod", "r" * 100, "s")
    assert len(long) <= 128 and long == idempotency_key("p" * 100, "prod", "r" * 100, "s")
    assert long != idempotency_key("p" * 100, "prod", "r" * 100, "t")


@pytest.mark.parametrize(("raw", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                              ("1h30m", 5400), ("0.5", 0.5)])
def test_durations(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "m", "10x", "5m3", "-5", "1.2.3"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_bare_wait_flag_gets_the_default() -> None:
    assert optional_values(["preflight", "--wait-for-approval"]) == ["preflight", "--wait-for-approval=30m"]
    assert optional_values(["preflight", "--wait-for-approval", "--json"])[1] == "--wait-for-approval=30m"
    assert optional_values(["preflight", "--wait-for-approval", "5m"]) == ["preflight", "--wait-for-approval", "5m"]
    assert optional_values(["preflight", "--wait-for-approval=1h"]) == ["preflight", "--wait-for-approval=1h"]


def test_change_digest_ignores_plan_time_but_not_planned_values() -> None:
    plan = json.loads((PLANS / "infracost__small_terraform_plan_nat_ebs.json").read_text())
    replanned = copy.deepcopy(plan)
    replanned["timestamp"] = "2030-01-01T00:00:00Z"
    replanned["prior_state"] = {"values": {}}
    replanned["resource_changes"].reverse()
    assert change_digest(replanned) == change_digest(plan)
    retagged = copy.deepcopy(plan)
    change = next(rc for rc in retagged["resource_changes"] if rc["change"]["actions"] != ["no-op"])
    change["change"]["after"] = {**(change["change"]["after"] or {}), "tags": {"team": "x"}}
    assert change_digest(retagged) != change_digest(plan)


def _cost(i: int, kind: str = "priced") -> ResourceCost:
    return ResourceCost(address=f"module.m{i}.aws_instance.{'x' * 300}[{i}]", resource_type="aws_instance",
                        action="create", before_monthly_usd=None, after_monthly_usd=Decimal(i),
                        monthly_delta_usd=Decimal(i), hourly_delta_usd=Decimal(0), priced=kind == "priced",
                        notes=("n" * 1000,), kind=kind)


def test_metadata_and_reference_stay_bounded_for_huge_plans() -> None:
    resources = tuple(_cost(i, "unpriced" if i % 3 == 0 else "priced") for i in range(3000))
    estimate = PlanEstimate(monthly_delta_usd=Decimal(1), hourly_delta_usd=Decimal(0), resources=resources,
                            unpriced=tuple(r for r in resources if not r.priced), source="terraform_plan")
    meta = pricing_metadata(estimate, "d" * 64)
    assert len(canonical_json(meta)) < 32_000
    assert meta["unpriced_count"] == 1000 and meta["unpriced_omitted"] == 980
    assert meta["resources"][0]["monthly_delta_usd"] == "2999"
    reference = resource_reference("stack", estimate)
    assert len(reference) <= MAX_REFERENCE and reference.startswith("stack: ")


def test_reference_lists_changed_addresses_costliest_first() -> None:
    plan = json.loads((PLANS / "infracost__small_terraform_plan_nat_ebs.json").read_text())
    reference = resource_reference("network", price_plan(plan))
    assert reference.startswith("network: aws_nat_gateway.")
    assert resource_reference("network", None) == "network"


def test_binding_file_shapes(tmp_path: Path) -> None:
    binding = {"expected_source": "terraform", "expected_project_id": "p", "expected_environment": "prod",
               "expected_request_fingerprint": "a" * 64, "expected_resource_reference": "r"}
    for i, doc in enumerate([binding, {"binding": binding}, {"continuation": {"binding": binding}}]):
        path = tmp_path / f"b{i}.json"
        path.write_text(json.dumps(doc))
        assert read_binding(path) == Continuation.model_validate({"binding": binding})
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"continuation": {"binding": binding,
                                                    "approval_consume_endpoint": "https://evil.example/x"}}))
    with pytest.raises(StateError):
        read_binding(foreign)


class _Unrecorded:
    """A gate client whose preflight gets the fail-safe answer the server could not record."""

    server = "http://gate"

    def __init__(self, decision: str) -> None:
        self.decision = decision

    def preflight(self, body: dict[str, object], key: str) -> dict[str, object]:
        return {"decision_id": None, "recorded": False, "decision": self.decision, "continuation": None,
                "reason_codes": ["gate_timeout", "hard_mode_fail_closed"], "request_fingerprint": "0" * 64}


@pytest.mark.parametrize(("decision", "code", "outcome"), [("DENY", 2, "denied"), ("ALLOW", 0, "allowed"),
                                                           ("REQUIRE_APPROVAL", 3, "gate_unrecorded")])
def test_an_unrecorded_answer_is_followed_without_a_state_file(tmp_path: Path, decision: str, code: int,
                                                                outcome: str) -> None:
    from valdrix.cli.preflight import _run

    state = tmp_path / "state.json"
    body = {"run_id": "r", "stage": "s", "project_id": "p", "environment": "prod"}
    result = _run(_Unrecorded(decision), body, "k", None, state, 1.0, 0.1, False, False, {})  # type: ignore[arg-type]
    assert (int(result.code), result.outcome) == (code, outcome)
    assert not state.exists()
