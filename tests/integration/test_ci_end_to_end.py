"""End to end as a pipeline runs it: `valdrix serve` and `valdrix preflight` as separate processes.

preflight → REQUIRE_APPROVAL → another principal approves from a parallel thread while the client waits →
the client collects and consumes the token and exits 0; a retry with a changed plan exits 5 with the 409
explained; the approval's token used again exits 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.live import LiveServer, make_tenant, process_servers

PLANS = FIXTURES / "terraform-plans"
PLAN = PLANS / "infracost__small_terraform_plan_nat_ebs.json"  # $54.7170/month
CHANGED_PLAN = PLANS / "terraform-compliance__vpc_module_3_nat_gateways.json"  # $116.0700/month
SECRET = "end-to-end-ci-" + "k" * 40
ROOT = Path(__file__).resolve().parents[2]


def cli(workdir: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "valdrix", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def approve_when_pending(url: str, key: str, state_file: Path, out: dict[str, Any]) -> None:
    """Reviewer side: wait for the pipeline's state file, then approve its approval request."""
    deadline = time.monotonic() + 30
    while not state_file.exists():
        if time.monotonic() > deadline:
            out["error"] = "state file never appeared"
            return
        time.sleep(0.05)
    approval_id = json.loads(state_file.read_text())["approval_request_id"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        # Let the client poll at least once while pending, as a real reviewer would take a while.
        time.sleep(0.5)
        r = c.post(f"/api/v1/enforcement/approvals/{approval_id}/approve", json={"notes": "looks right"})
    out["status"], out["body"] = r.status_code, r.json()


@pytest.mark.slow
def test_pipeline_end_to_end(server: LiveServer, tmp_path: Path) -> None:
    server_env = {"VALDRIX_TOKEN_ALGORITHM": "HS256", "VALDRIX_TOKEN_HS256_SECRET": SECRET}
    with process_servers(server.settings.database_url, 1, env=server_env) as [url]:
        tenant = make_tenant(server.settings, url)
        ci_key = tenant.key("github-actions", role="member")
        reviewer_key = tenant.key("alice", role="admin", permissions=["approve:prod"])
        with tenant.client() as c:
            assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
                {"scope_key": "payments", "monthly_limit_usd": "1000"}]}).status_code == 200
        workdir = tmp_path / "payments-infra"
        workdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CI_", "VALDRIX_"))}
        env.update(PYTHONPATH=str(ROOT), VALDRIX_SERVER=url, VALDRIX_API_KEY=ci_key,
                   GITHUB_RUN_ID="9001", GITHUB_RUN_ATTEMPT="1", GITHUB_JOB="apply", GITHUB_REPOSITORY="acme/infra")
        state_file = workdir / ".valdrix" / "preflight-gh-9001-apply-pre_apply.json"
        approval: dict[str, Any] = {}
        reviewer = threading.Thread(target=approve_when_pending, args=(url, reviewer_key, state_file, approval))
        reviewer.start()
        started = time.monotonic()
        run = cli(workdir, env, "preflight", "--plan", str(PLAN), "--project", "payments", "--environment", "prod",
                  "--wait-for-approval", "--poll-interval", "0.2")
        reviewer.join(30)
        assert approval.get("status") == 200, approval
        assert run.returncode == 0, run.stdout + run.stderr
        assert "REQUIRE_APPROVAL" in run.stdout and "approval_required" in run.stdout
        assert "aws_nat_gateway" in run.stdout and "54.7170" in run.stdout
        assert "waiting for approval" in run.stderr and "collected the approval token" in run.stderr
        assert "exit 0 (consumed)" in run.stdout
        assert time.monotonic() - started < 30
        state = json.loads(state_file.read_text())
        assert state["run_id"] == "gh-9001-apply" and state["consumed_at"]
        with tenant.client() as c:
            events = [e["event"] for e in c.get("/api/v1/enforcement/ledger").json()["items"]
                      if e["decision_id"] == state["decision_id"]]
            decision = c.get(f"/api/v1/enforcement/decisions/{state['decision_id']}").json()
        assert {"approval_approved", "token_picked_up", "token_consumed"} <= set(events), events
        assert decision["request_payload"]["metadata"]["terraform_run_url"] == "https://github.com/acme/infra/actions/runs/9001"

        # Re-run attempt 2 of the same job with a plan that changed in between: refused, explained, exit 5.
        env["GITHUB_RUN_ATTEMPT"] = "2"
        changed = cli(workdir, env, "preflight", "--plan", str(CHANGED_PLAN), "--project", "payments",
                      "--environment", "prod", "--wait-for-approval=10s")
        assert changed.returncode == 5, changed.stdout + changed.stderr
        assert "plan_changed" in changed.stdout and "cannot be reused" in changed.stdout.replace("\n", " ")

        # The reviewer's copy of the token, replayed against the persisted binding: hard stop, exit 4.
        replay = cli(workdir, env, "consume", "--token", approval["body"]["approval_token"], "--binding-file",
                     str(state_file), "--json")
        assert replay.returncode == 4, replay.stdout + replay.stderr
        doc = json.loads(replay.stdout)
        assert doc["outcome"] == "consume_refused" and doc["error"]["code"] == "token_replayed"
