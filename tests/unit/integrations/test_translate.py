"""The run task's pure parts: mapping a workspace to a project, the key, the decision input and the task result."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from valdrix.decisions.models import Decision
from valdrix.integrations import service, translate
from valdrix.integrations.schemas import RunTaskRequest
from valdrix.pricing.summary import change_digest
from valdrix.pricing.terraform import PlanEstimate, ResourceCost, price_plan

REQUEST = json.loads((FIXTURES / "tfc-run-task" / "hcp-terraform__run_task_request_post_plan.json").read_text())
SCHEMA = json.loads((FIXTURES / "tfc-run-task" / "hcp-terraform__runtask-result.schema.json").read_text())
PLAN = json.loads((FIXTURES / "terraform-plans" / "infracost__small_terraform_plan_nat_ebs.json").read_text())


def rule(org: str, ws: str, project: str) -> dict[str, Any]:
    return {"organization": org, "workspace": ws, "project_id": project, "environment": "prod"}


def test_the_most_specific_mapping_wins_whatever_the_order() -> None:
    rules = [rule("*", "*", "any"), rule("*", "web", "any-web"), rule("acme", "*", "acme"),
             rule("acme", "web", "acme-web")]
    for order in (rules, rules[::-1]):
        assert translate.target(order, "ACME", "Web").project_id == "acme-web"
        assert translate.target(order, "acme", "db").project_id == "acme"
        assert translate.target(order, "other", "web").project_id == "any-web"
        assert translate.target(order, "other", "db").project_id == "any"
    assert translate.target([], "acme", "web") == translate.DEFAULT_TARGET


def test_the_fingerprint_covers_the_plan_and_the_workspace_but_not_the_run() -> None:
    req = RunTaskRequest.model_validate(REQUEST)
    estimate = price_plan(PLAN)
    where = translate.Target("payments", "nonprod")
    first = translate.to_input(req, estimate, change_digest(PLAN), where)
    rerun = RunTaskRequest.model_validate({**REQUEST, "run_id": "run-other", "task_result_id": "taskrs-other"})
    assert translate.to_input(rerun, estimate, change_digest(PLAN), where).fingerprint == first.fingerprint
    assert translate.idempotency_key(rerun) != translate.idempotency_key(req)
    moved = RunTaskRequest.model_validate({**REQUEST, "workspace_id": "ws-other"})
    assert translate.to_input(moved, estimate, change_digest(PLAN), where).fingerprint != first.fingerprint
    assert translate.to_input(req, estimate, "0" * 64, where).fingerprint != first.fingerprint
    assert (first.source, first.project_id, first.monthly_delta) == ("terraform", "payments", Decimal("54.7170"))
    assert first.resource_reference.startswith("hashicorp/tfr_github_0: aws_nat_gateway.nat")
    speculative = RunTaskRequest.model_validate({**REQUEST, "is_speculative": True})
    assert translate.to_input(speculative, estimate, change_digest(PLAN), where).dry_run


@given(st.text(min_size=1, max_size=128), st.text(min_size=1, max_size=128), st.sampled_from(["pre_plan", "post_plan"]))
def test_idempotency_keys_fit_the_column(workspace: str, run: str, stage: str) -> None:
    req = RunTaskRequest.model_validate({**REQUEST, "workspace_id": workspace, "run_id": run, "stage": stage})
    assert 0 < len(translate.idempotency_key(req)) <= 128


def decision(outcome: str, **extra: Any) -> Decision:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(), "decision": outcome, "reason_codes": ["budget_exceeded"], "mode": "soft",
        "project_id": "payments", "environment": "nonprod", "policy_version": 1, "dry_run": False,
        "approval_request_id": None, "computed_context": {}, "reserved_allocation_usd": Decimal(0),
        "reserved_credit_usd": Decimal(0), "created_at": now, **extra}
    return Decision(**values)


def test_task_results_follow_hcp_terraforms_schema_and_limits() -> None:
    many = tuple(ResourceCost(address=f"aws_instance.n[{i}]" + "x" * 300, resource_type="aws_instance",
                              action="create", before_monthly_usd=None, after_monthly_usd=Decimal(i),
                              monthly_delta_usd=Decimal(i), hourly_delta_usd=Decimal(0), priced=True, notes=())
                 for i in range(400))
    estimate = PlanEstimate(Decimal(79800), Decimal(0), many, (), "terraform_plan")
    approval = uuid.uuid4()
    body = translate.task_result(decision("REQUIRE_APPROVAL", approval_request_id=approval), estimate,
                                 url="https://gate.example/console/decisions/1", redeemed_approval=None, outcomes=True)
    jsonschema.Draft6Validator(SCHEMA).validate(body)
    rows = body["data"]["relationships"]["outcomes"]["data"]
    assert len(rows) == translate.MAX_OUTCOMES
    assert all(len(r["attributes"]["description"]) <= translate.MAX_DESCRIPTION for r in rows)
    assert body["data"]["attributes"]["status"] == "failed" and str(approval) in body["data"]["attributes"]["message"]
    plain = translate.task_result(decision("ALLOW"), estimate, url="https://x", redeemed_approval=None,
                                  outcomes=False)
    assert plain["data"]["attributes"]["status"] == "passed" and "relationships" not in plain["data"]
    redeemed = translate.task_result(decision("REQUIRE_APPROVAL"), estimate, url="https://x",
                                     redeemed_approval=str(approval), outcomes=False)
    assert redeemed["data"]["attributes"]["status"] == "passed"
    assert len(translate.failed("x" * 5000)["data"]["attributes"]["message"]) == translate.MAX_MESSAGE


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://app.terraform.io/api/v2/plans/p/json-output", True),
    ("http://127.0.0.1:9000/x", True), ("http://localhost/x", True), ("http://[::1]:80/x", True),
    ("http://app.terraform.io/x", False), ("ftp://app.terraform.io/x", False), ("https:///x", False),
    ("http://10.0.0.1/x", False)])
def test_only_https_or_loopback_urls_receive_the_token(url: str, allowed: bool) -> None:
    if allowed:
        assert service.checked_url(url) == url
    else:
        with pytest.raises(ValueError):
            service.checked_url(url)


def test_plan_and_callback_must_share_the_origin() -> None:
    assert service.same_origin("https://tfe.corp/api/v2/plans/p", "https://tfe.corp/api/v2/task-results/t/callback")
    assert not service.same_origin("https://tfe.corp/a", "https://evil.example/a")
    assert not service.same_origin("https://tfe.corp/a", "https://tfe.corp:8443/a")
