"""`valdrix preflight|approve|deny|consume` against a live server on each backend: every exit code."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import FIXTURES
from tests.live import Tenant
from tests.pg import free_port
from valdrix.canonical import LEGACY_SCHEME
from valdrix.cli import app, optional_values
from valdrix.cli import preflight as preflight_module
from valdrix.pricing.infracost import read_infracost
from valdrix.pricing.summary import change_digest

PLANS = FIXTURES / "terraform-plans"
SMALL_PLAN = PLANS / "infracost__small_terraform_plan_nat_ebs.json"  # $54.7170/month, all priced
OTHER_PLAN = PLANS / "infracost__plan_with_target_update_t3micro_to_t3small.json"  # $7.5920/month
UNPRICED_PLAN = PLANS / "checkov__plan_tags_55_resources.json"  # 2 resource types not in the catalogue


@dataclass
class Pipeline:
    tenant: Tenant
    ci_key: str
    reviewer_key: str
    workdir: Path

    def run(self, *args: str, key: str | None = None) -> tuple[int, dict[str, Any], str]:
        """Run the CLI as the pipeline (or with `key`); return (exit code, JSON output, stderr)."""
        env = {"VALDRIX_API_KEY": key or self.ci_key, "VALDRIX_SERVER": self.tenant.url}
        result = CliRunner().invoke(app, optional_values([*args, "--json"]), env=env, catch_exceptions=False)
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            doc = {"raw": result.stdout}
        return result.exit_code, doc, result.stderr

    def preflight(self, *args: str, run: str = "run-1", plan: Path = SMALL_PLAN) -> tuple[int, dict[str, Any], str]:
        return self.run("preflight", "--plan", str(plan), "--project", "payments", "--run-id", run,
                        "--poll-interval", "0.05", *args)

    def put_policy(self, **changes: Any) -> None:
        with self.tenant.client() as c:
            doc = c.get("/api/v1/enforcement/policies").json()["document"]
            for section, values in changes.items():
                doc[section].update(values)
            assert c.put("/api/v1/enforcement/policies", json=doc).status_code == 200


@pytest.fixture
def pipeline(tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    for name in ("GITHUB_RUN_ID", "GITHUB_JOB", "CI_PIPELINE_ID", "CI_JOB_NAME", "VALDRIX_APPROVAL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "network"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with tenant.client() as c:
        r = c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": "payments",
                                                                   "monthly_limit_usd": "1000"}]})
        assert r.status_code == 200, r.text
    return Pipeline(tenant=tenant, ci_key=tenant.key("ci", role="member"),
                    reviewer_key=tenant.key("reviewer", role="admin", permissions=["approve:prod", "approve:nonprod"]),
                    workdir=workdir)


def state_path(pipeline: Pipeline, run: str = "run-1") -> Path:
    return pipeline.workdir / ".valdrix" / f"preflight-{run}-pre_apply.json"


def test_exit_0_allowed_and_a_retry_replays(pipeline: Pipeline) -> None:
    code, doc, _ = pipeline.preflight()
    assert code == 0, doc
    assert doc["outcome"] == "allowed" and doc["preflight"]["decision"] == "ALLOW"
    assert doc["preflight"]["idempotency_key"] == "tf:payments:nonprod:run-1:pre_apply"
    state = json.loads(state_path(pipeline).read_text())
    assert state["request_fingerprint"] == doc["preflight"]["request_fingerprint"]
    assert state["continuation"]["binding"]["expected_resource_reference"].startswith("network: aws_nat_gateway.")
    assert oct(state_path(pipeline).stat().st_mode & 0o777) == "0o600"
    with pipeline.tenant.client() as c:
        stored = c.get(f"/api/v1/enforcement/decisions/{state['decision_id']}").json()
    assert stored["estimated_monthly_delta_usd"] == "54.7170"
    pricing = stored["request_payload"]["metadata"]["pricing"]
    assert pricing["unpriced_count"] == 0 and pricing["source"] == "terraform_plan"
    assert len(pricing["change_digest"]) == 64
    again, replay, _ = pipeline.preflight()
    assert again == 0 and replay["preflight"]["replayed"] is True
    assert replay["preflight"]["decision_id"] == state["decision_id"]


def test_exit_0_with_manual_delta_and_human_output(pipeline: Pipeline) -> None:
    env = {"VALDRIX_API_KEY": pipeline.ci_key, "VALDRIX_SERVER": pipeline.tenant.url}
    result = CliRunner().invoke(app, ["preflight", "--monthly-delta", "12.5", "--run-id", "manual",
                                      "--project", "payments", "--resource-ref", "svc/cache"], env=env)
    assert result.exit_code == 0, result.stdout
    assert "ALLOW" in result.stdout and "exit 0 (allowed)" in result.stdout


def test_exit_2_denied(pipeline: Pipeline) -> None:
    pipeline.put_policy(mode_matrix={"terraform": {"default": "hard", "prod": "hard", "nonprod": "hard"}})
    with pipeline.tenant.client() as c:
        c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "10"}]})
    code, doc, _ = pipeline.preflight()
    assert code == 2, doc
    assert doc["outcome"] == "denied" and doc["preflight"]["reason_codes"] == ["budget_exceeded"]


def test_exit_3_pending_then_timed_out_then_denied_by_reviewer(pipeline: Pipeline) -> None:
    code, doc, _ = pipeline.preflight("--environment", "prod")
    assert code == 3 and doc["outcome"] == "approval_pending", doc
    approval_id = doc["preflight"]["approval_request_id"]
    assert approval_id and doc["preflight"]["reason_codes"] == ["approval_required"]
    code, doc, err = pipeline.preflight("--environment", "prod", "--wait-for-approval=0.3s")
    assert code == 3 and doc["outcome"] == "approval_timed_out", doc
    assert f"waiting for approval {approval_id}: pending" in err
    code, _, _ = pipeline.run("deny", approval_id, "--notes", "too big", key=pipeline.reviewer_key)
    assert code == 0
    code, doc, _ = pipeline.preflight("--environment", "prod", "--wait-for-approval=5s")
    assert code == 3 and doc["outcome"] == "approval_denied" and "too big" in doc["message"], doc


def test_unpriced_resources_escalate_by_policy(pipeline: Pipeline) -> None:
    code, doc, _ = pipeline.preflight(plan=UNPRICED_PLAN)
    assert code == 3, doc
    assert doc["preflight"]["reason_codes"] == ["unpriced_resources"]
    pipeline.put_policy(entitlements={"unpriced_resources": "ignore"})
    code, doc, _ = pipeline.preflight(plan=UNPRICED_PLAN, run="run-2")
    assert code == 0 and doc["preflight"]["reason_codes"] == [], doc


def test_exit_0_after_approval_then_exit_4_for_a_replayed_token(pipeline: Pipeline) -> None:
    code, doc, _ = pipeline.preflight("--environment", "prod")
    assert code == 3
    approval_id = doc["preflight"]["approval_request_id"]
    code, approved, _ = pipeline.run("approve", approval_id, "--notes", "ok", key=pipeline.reviewer_key)
    assert code == 0 and approved["status"] == "approved"
    code, doc, _ = pipeline.preflight("--environment", "prod", "--wait-for-approval=5s")
    assert code == 0 and doc["outcome"] == "consumed", doc
    state = json.loads(state_path(pipeline).read_text())
    assert state["consumed_at"] and state["approval_token"] is None
    # The same token again, with the persisted binding: one-time use → hard stop.
    code, doc, _ = pipeline.run("consume", "--token", approved["approval_token"], "--binding-file",
                                str(state_path(pipeline)))
    assert code == 4 and doc["outcome"] == "consume_refused" and doc["error"]["code"] == "token_replayed", doc
    # A retry of the job whose state recorded the consume continues without a second token.
    code, doc, _ = pipeline.preflight("--environment", "prod", "--wait-for-approval=5s")
    assert code == 0 and doc["outcome"] == "already_consumed", doc


def test_exit_4_when_the_token_was_collected_elsewhere(pipeline: Pipeline) -> None:
    code, doc, _ = pipeline.preflight("--environment", "prod")
    approval_id = doc["preflight"]["approval_request_id"]
    assert pipeline.run("approve", approval_id, key=pipeline.reviewer_key)[0] == 0
    backup = state_path(pipeline).read_text()
    code, doc, _ = pipeline.run("consume", "--state-file", str(state_path(pipeline)))
    assert code == 0 and doc["outcome"] == "consumed", doc
    # An attempt that lost the state of the one that collected the token cannot collect it again.
    state_path(pipeline).write_text(backup)
    code, doc, _ = pipeline.preflight("--environment", "prod", "--wait-for-approval=5s")
    assert code == 4 and doc["outcome"] == "token_unavailable", doc


def test_exit_4_for_a_binding_mismatch(pipeline: Pipeline, tmp_path: Path) -> None:
    code, doc, _ = pipeline.preflight("--environment", "prod")
    approval_id = doc["preflight"]["approval_request_id"]
    _, approved, _ = pipeline.run("approve", approval_id, key=pipeline.reviewer_key)
    binding = dict(doc["preflight"]["continuation"]["binding"], expected_resource_reference="something else")
    (tmp_path / "binding.json").write_text(json.dumps(binding))
    code, doc, _ = pipeline.run("consume", "--token", approved["approval_token"], "--binding-file",
                                str(tmp_path / "binding.json"))
    assert code == 4 and doc["outcome"] == "consume_refused", doc


def test_exit_5_changed_plan_on_retry(pipeline: Pipeline) -> None:
    assert pipeline.preflight("--environment", "prod")[0] == 3
    code, doc, _ = pipeline.preflight("--environment", "prod", plan=OTHER_PLAN)
    assert code == 5 and doc["outcome"] == "plan_changed", doc
    assert doc["error"]["code"] == "request_fingerprint_mismatch"
    assert "not the one this run had evaluated" in doc["message"] and "approval" in doc["message"]
    # Without the state file the server still refuses: the key is derived from the run, not stored only locally.
    state_path(pipeline).unlink()
    code, doc, _ = pipeline.preflight("--environment", "prod", plan=OTHER_PLAN)
    assert code == 5 and doc["error"]["code"] == "idempotency_key_reused", doc
    assert "already asked the gate about a different change" in doc["message"]


@pytest.mark.parametrize("args", [
    ["preflight", "--run-id", "r"],
    ["preflight", "--run-id", "r", "--monthly-delta", "1", "--plan", str(SMALL_PLAN)],
    ["preflight", "--monthly-delta", "1"],
    ["preflight", "--run-id", "r", "--monthly-delta", "abc"],
    ["preflight", "--run-id", "r", "--monthly-delta", "-3"],
    ["preflight", "--run-id", "r", "--monthly-delta", "1", "--wait-for-approval=soon"],
    ["consume"],
    ["consume", "--token", "t" * 20],
])
def test_exit_1_usage(pipeline: Pipeline, args: list[str]) -> None:
    code, doc, _ = pipeline.run(*args)
    assert code == 1, doc


def test_exit_1_bad_plan_bad_key_unreachable_server(pipeline: Pipeline, tmp_path: Path) -> None:
    junk = tmp_path / "plan.json"
    junk.write_text('{"format_version": "1.2", "resource_changes": [{"address": 1}]}')
    code, doc, _ = pipeline.preflight(plan=junk)
    assert code == 1 and "resource_changes" in doc["message"], doc
    junk.write_text("{not json")
    assert pipeline.preflight(plan=junk)[0] == 1
    code, doc, _ = pipeline.run("preflight", "--monthly-delta", "1", "--run-id", "r", key="vx_not_a_key")
    assert code == 1 and doc["outcome"] == "preflight_refused" and "401" in doc["message"], doc
    code, doc, _ = pipeline.run("preflight", "--monthly-delta", "1", "--run-id", "r", "--retries", "1",
                                "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and doc["outcome"] == "transport_error" and "2 attempt(s)" in doc["message"], doc
    code, doc, _ = pipeline.run("approve", "00000000-0000-0000-0000-000000000000", key=pipeline.reviewer_key)
    assert code == 1 and "approval_not_found" in doc["message"], doc


def test_state_file_of_another_run_is_refused(pipeline: Pipeline) -> None:
    assert pipeline.preflight()[0] == 0
    shutil.copy(state_path(pipeline), pipeline.workdir / "other.json")
    code, doc, _ = pipeline.preflight("--state-file", "other.json", run="run-9")
    assert code == 1 and doc["outcome"] == "state_file_unusable", doc


INFRACOST = FIXTURES / "infracost"
HARD = {"terraform": {"default": "hard", "prod": "hard", "nonprod": "hard"}}


def test_infracost_cost_decrease_is_allowed(pipeline: Pipeline) -> None:
    # Unchanged lambdas with older-format components (a price, no quantity) no longer make it "unpriced".
    decrease = INFRACOST / "infracost__multi_project_cost_decrease.json"
    code, doc, _ = pipeline.run("preflight", "--infracost", str(decrease), "--project", "payments", "--run-id",
                                "decrease")
    assert code == 0, doc
    assert doc["preflight"]["decision"] == "ALLOW" and "unpriced_resources" not in doc["preflight"]["reason_codes"]
    assert doc["pricing"]["monthly_delta_usd"].startswith("-")


def test_infracost_in_another_currency_needs_a_rate(pipeline: Pipeline, tmp_path: Path) -> None:
    doc = json.loads((INFRACOST / "infracost__example_out.json").read_text())
    doc["currency"] = "EUR"
    eur = tmp_path / "eur.json"
    eur.write_text(json.dumps(doc))
    code, out, _ = pipeline.run("preflight", "--infracost", str(eur), "--project", "payments", "--run-id", "eur")
    assert code == 1 and "priced in 'EUR'" in out["message"] and "--fx-rate EUR=" in out["message"]
    code, out, _ = pipeline.run("preflight", "--infracost", str(eur), "--fx-rate", "EUR=2", "--project", "payments",
                                "--run-id", "eur", "--dry-run")
    assert code in (0, 3), out
    usd = read_infracost(json.loads((INFRACOST / "infracost__example_out.json").read_text()))
    assert Decimal(out["pricing"]["monthly_delta_usd"]) == 2 * usd.monthly_delta_usd


@pytest.mark.parametrize(("rule", "code", "decision"), [("escalate", 3, "REQUIRE_APPROVAL"), ("deny", 2, "DENY"),
                                                         ("allow", 0, "ALLOW")])
def test_mistyped_project_in_hard_mode(pipeline: Pipeline, rule: str, code: int, decision: str) -> None:
    pipeline.put_policy(mode_matrix=HARD, entitlements={"unbudgeted_projects": rule})
    got, doc, _ = pipeline.run("preflight", "--plan", str(SMALL_PLAN), "--project", "paymnets", "--run-id",
                               f"typo-{rule}")
    assert (got, doc["preflight"]["decision"]) == (code, decision), doc
    assert ("unbudgeted_project" in doc["preflight"]["reason_codes"]) == (rule != "allow")


def test_markdown_comment_and_step_summary(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.put_policy(mode_matrix=HARD)
    summary = tmp_path / "summary.md"
    env = {"VALDRIX_API_KEY": pipeline.ci_key, "VALDRIX_SERVER": pipeline.tenant.url,
           "GITHUB_STEP_SUMMARY": str(summary)}
    result = CliRunner().invoke(app, ["preflight", "--monthly-delta", "6000", "--project", "payments", "--run-id",
                                      "md", "--format", "markdown"], env=env, catch_exceptions=False)
    assert result.exit_code == 2
    comment = result.stdout
    assert comment.startswith("<!-- valdrix-preflight payments/nonprod/pre_apply -->\n"
                              "### ⛔ Valdrix preflight: **DENY**")
    assert "above the policy's hard-deny threshold for a single change. (`hard_deny_threshold_exceeded`)" in comment
    assert "- Hard-deny limit: $5000.0000/month" in comment
    assert "- Budget: payments: limit $1000.0000/month, headroom $1000.0000" in comment
    assert "**Next**: Do not apply." in comment
    assert summary.read_text() == comment + "\n"


def test_table_shows_notes_limits_and_reasons_in_words(pipeline: Pipeline) -> None:
    env = {"VALDRIX_API_KEY": pipeline.ci_key, "VALDRIX_SERVER": pipeline.tenant.url, "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["preflight", "--plan", str(SMALL_PLAN), "--project", "payments", "--run-id",
                                      "table"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    assert "assumed gp2" in result.stdout  # a priced resource's assumption is in its row
    assert "limit $1000.0000/month, headroom" in result.stdout
    pipeline.put_policy(mode_matrix=HARD)
    denied = CliRunner().invoke(app, ["preflight", "--monthly-delta", "1200", "--project", "payments", "--run-id",
                                      "table-deny"], env=env, catch_exceptions=False)
    assert denied.exit_code == 2
    assert "available credits cannot fund the change" in " ".join(denied.stdout.split())
    assert "exit 2 (denied): DENY: do not apply (reasons: budget_exceeded); Budget payments: limit $1000.0000/month, " \
           "headroom $945.2830" in " ".join(denied.stdout.split())  # the first run holds $54.7170


def test_a_run_started_before_rfc8785_continues_after_the_upgrade(pipeline: Pipeline, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file written by a CLI that hashed the change digest the legacy way: the retry hashes it the same
    way, so it sends the same request and replays instead of meeting a changed-plan conflict."""
    plan = json.loads(SMALL_PLAN.read_text())
    change = next(rc["change"] for rc in plan["resource_changes"] if rc["change"]["actions"] not in (["no-op"],))
    change["after"] = {**(change.get("after") or {}), "tags": {"équipe": "paiements", "ratio": 1.0}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert change_digest(plan) != change_digest(plan, LEGACY_SCHEME)
    with monkeypatch.context() as old_cli:
        old_cli.setattr(preflight_module, "current_scheme", lambda: LEGACY_SCHEME)
        code, first, _ = pipeline.preflight(plan=path)
    assert code == 0, first
    state = json.loads(state_path(pipeline).read_text())
    del state["canonicalization"]  # what a CLI from before RFC 8785 wrote
    state_path(pipeline).write_text(json.dumps(state))
    code, again, _ = pipeline.preflight(plan=path)
    assert code == 0 and again["preflight"]["replayed"] is True, again
    assert again["preflight"]["decision_id"] == first["preflight"]["decision_id"]
    assert json.loads(state_path(pipeline).read_text())["canonicalization"] == LEGACY_SCHEME
