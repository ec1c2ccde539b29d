"""The Markdown comment and the words for reasons, from a report as `valdrix preflight` builds it."""

from __future__ import annotations

from valdrix.cli.continuation import Exit, Result
from valdrix.cli.report import MARKER, markdown, note, reason_words

SCOPE = {"project": "payments", "environment": "prod", "stage": "pre_apply"}
RESPONSE = {
    "decision": "REQUIRE_APPROVAL", "decision_id": "d-1", "run_id": "gh-1-apply", "stage": "pre_apply", "mode": "soft",
    "policy_version": 3, "approval_request_id": "a-1",
    "reason_codes": ["budget_exceeded", "soft_mode_budget_escalation", "something_new"],
    "computed_context": {"budget_scope": "payments", "budget_limit_usd": "100.0000", "scope_headroom_usd": "20.0000"},
}
PRICING = {"source": "terraform", "monthly_delta_usd": "54.7170", "hourly_delta_usd": "0.074955",
           "resources": [
               {"address": "aws_instance.a|b", "action": "create", "kind": "priced", "monthly_delta_usd": "10.0000",
                "before_monthly_usd": None, "after_monthly_usd": "10.0000", "notes": ["assumed gp2"]},
               {"address": "aws_nat_gateway.n", "action": "create", "kind": "priced", "monthly_delta_usd": "44.7170",
                "before_monthly_usd": None, "after_monthly_usd": "44.7170", "notes": []},
               {"address": "aws_s3_bucket.s", "action": "create", "kind": "usage_based", "monthly_delta_usd": "0",
                "notes": ["usage-based: storage"]},
               {"address": "aws_iam_role.r", "action": "create", "kind": "free", "monthly_delta_usd": "0",
                "notes": []}]}


def test_comment_has_marker_table_reasons_limits_link_and_next_step() -> None:
    text = markdown({"preflight": RESPONSE, "pricing": PRICING}, Result(Exit.APPROVAL, "approval_required", "…"),
                    "https://gate.example/", SCOPE)
    lines = text.splitlines()
    assert lines[0] == MARKER.format(**SCOPE) == "<!-- valdrix-preflight payments/prod/pre_apply -->"
    assert lines[1] == "### ⏳ Valdrix preflight: **REQUIRE_APPROVAL** for `payments` (prod)"
    rows = [line for line in lines if line.startswith("| `")]
    # Costliest first; free resources left out; a pipe in an address cannot break the table.
    assert [r.split("|")[1].strip() for r in rows][:1] == ["`aws_nat_gateway.n`"]
    assert "| `aws_instance.a\\|b` | create | — | 10.0000 | 10.0000 | assumed gp2 |" in rows
    assert len(rows) == 3 and not any("aws_iam_role" in r for r in rows)
    assert "- The budget's headroom and the available credits cannot fund the change. (`budget_exceeded`)" in lines
    assert "- Soft mode turns the budget violation into an approval request. (`soft_mode_budget_escalation`)" \
        in lines
    assert "- Reason `something_new` (no description in this version). (`something_new`)" in lines
    assert "- Budget: payments: limit $100.0000/month, headroom $20.0000" in lines
    assert ("**Approval**: request [`a-1`](https://gate.example/console/approvals/a-1); a reviewer runs "
            "`valdrix approve a-1 --notes '…'`.") in lines
    assert lines[-3].startswith("**Next**: A reviewer approves the request")


def test_comment_for_an_error_without_an_answer() -> None:
    text = markdown({}, Result(Exit.ERROR, "usage_error", "cannot read plan plan.json"), "http://g", SCOPE)
    assert "### ❌ Valdrix preflight: **usage_error**" in text
    assert "Exit 1 (usage_error): cannot read plan plan.json" in text and "**Next**: Fix the error" in text


def test_notes_and_words() -> None:
    assert note({"kind": "unpriced", "notes": ["not in catalogue"]}) == "UNPRICED: not in catalogue"
    assert note({"kind": "usage_based", "notes": []}) == "usage-based, not priced"
    assert reason_words("shadow_mode_unbudgeted_project_override") == \
        "Shadow mode records the unbudgeted-project violation but allows the change."
