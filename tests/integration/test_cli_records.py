"""`valdrix decisions …` and `valdrix approvals …` against a live server: 80-column tables, the console's words,
revocation, and the VALDRIX_SERVER / VALDRIX_API_KEY fallbacks named in every client command's help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.pipeline import APPROVALS, approve, consume, preflight, set_budget
from tests.live import Tenant


def cli(tenant: Tenant, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VALDRIX_SERVER": tenant.url, "VALDRIX_API_KEY": key or tenant.owner_key, "COLUMNS": "80",
           "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "valdrix", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_decisions_and_approvals_from_a_terminal(tenant: Tenant) -> None:
    reviewer = tenant.key("alice", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci)
        gate = preflight(ci, amount="812.5")
        listed = cli(tenant, "approvals", "list", "--status", "pending")
        assert listed.returncode == 0, listed.stderr
        assert "pending" in listed.stdout and "$812.50" in listed.stdout and "payments" in listed.stdout
        assert all(len(line) <= 80 for line in listed.stdout.splitlines())
        shown = cli(tenant, "approvals", "show", gate["approval_request_id"])
        assert "default-prod" in shown.stdout and "approval_required" in shown.stdout
        token = approve(rv, gate["approval_request_id"]).json()["approval_token"]
        revoked = cli(tenant, "approvals", "revoke", gate["approval_request_id"], "--notes", "wrong window",
                      key=reviewer)
        assert revoked.returncode == 0, revoked.stderr
        assert consume(ci, token, gate).json()["code"] == "approval_revoked"
        again = cli(tenant, "approvals", "revoke", gate["approval_request_id"], key=reviewer)
        assert again.returncode == 1 and "approval_not_approved" in again.stderr
        as_json = json.loads(cli(tenant, "approvals", "list", "--status", "revoked", "--json").stdout)
        assert [a["approval_id"] for a in as_json["items"]] == [gate["approval_request_id"]]
        assert ci.get(f"{APPROVALS}/{gate['approval_request_id']}").json()["review_notes"] == "wrong window"

        decisions = cli(tenant, "decisions", "list", "--project", "payments")
        assert decisions.returncode == 0 and "REQUIRE_APPROVAL" in decisions.stdout
        assert all(len(line) <= 80 for line in decisions.stdout.splitlines())
        explained = cli(tenant, "decisions", "explain", gate["decision_id"])
        assert explained.returncode == 0, explained.stderr
        words = ci.get(f"/api/v1/enforcement/decisions/{gate['decision_id']}/explanation").json()
        flat = " ".join(explained.stdout.split())
        assert " ".join(words["summary"].split()) in flat  # the console's words, verbatim
        assert "The policy requires a reviewer's approval" in flat and "Project budget" in flat
        assert all(len(line) <= 80 for line in explained.stdout.splitlines())
        missing = cli(tenant, "decisions", "show", "00000000-0000-0000-0000-000000000000")
        assert missing.returncode == 1 and "decision_not_found" in missing.stderr


def test_version_and_the_env_fallbacks_are_named_in_help(tenant: Tenant) -> None:
    version = cli(tenant, "--version")
    assert version.returncode == 0 and version.stdout.startswith("valdrix ")
    for command in (("decisions", "list"), ("decisions", "explain"), ("approvals", "list"), ("approvals", "show"),
                    ("approvals", "revoke"), ("preflight",), ("approve",), ("deny",), ("consume",)):
        shown = cli(tenant, *command, "--help")
        text = " ".join(shown.stdout.split())
        assert "VALDRIX_SERVER" in text and "VALDRIX_API_KEY" in text and "--api-key" in text, command
