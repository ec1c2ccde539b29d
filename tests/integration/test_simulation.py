"""Policy what-if over real HTTP on each backend: replaying history recorded through the real gate."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from tests.live import Tenant, post
from valdrix.audit.models import AuditEvent
from valdrix.cli import app as cli_app
from valdrix.db import make_engine, make_sessionmaker
from valdrix.decisions.models import Decision
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import PolicyDocument
from valdrix.simulation import engine, service
from valdrix.simulation.schemas import SimulationRequest

API = "/api/v1/enforcement"
SIMULATE = f"{API}/policies/simulate"


def _gate(c: httpx.Client, run: str, amount: str, *, project: str = "payments", environment: str = "nonprod",
          **extra: Any) -> dict[str, Any]:
    body = {"run_id": run, "stage": "pre_apply", "project_id": project, "environment": environment,
            "resource_reference": f"module.{run}.aws_instance.main", "estimated_monthly_delta_usd": amount, **extra}
    r = post(c, "/gate/terraform/preflight", body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def base_policy(*, plan_ceiling: str | None = "100000") -> dict[str, Any]:
    """Terraform: shadow outside prod, soft in prod; cloud events soft; a generous plan ceiling (so the gate
    reads the tenant's reserved total for every decision)."""
    doc = PolicyDocument().canonical()
    doc["mode_matrix"]["terraform"].update(default="shadow", nonprod="shadow", prod="soft")
    doc["entitlements"]["plan_monthly_ceiling_usd"] = plan_ceiling
    return doc


def record_history(tenant: Tenant, c: httpx.Client) -> dict[str, dict[str, Any]]:
    """Record a realistic history through the real API: budgets, credits, shadow overrides, approvals (one
    approved, one denied), credit-funded and unpriced requests, a cloud event and a dry run."""
    assert c.put(f"{API}/policies", json=base_policy()).json()["changed"] is True
    assert c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"},
                                                     {"scope_key": "search", "monthly_limit_usd": "150"}]}
                 ).status_code == 200
    for pool, scope, amount in (("reserved", "payments", "300"), ("emergency", "search", "100")):
        assert c.post(f"{API}/credits", json={"pool": pool, "scope_key": scope, "amount_usd": amount}
                      ).status_code == 201
    d: dict[str, dict[str, Any]] = {}
    d["shadow_ok"] = _gate(c, "h1", "100")
    d["prod_small"] = _gate(c, "h2", "20", environment="prod")
    d["prod_approve"] = _gate(c, "h3", "400", environment="prod")
    d["prod_credits"] = _gate(c, "h4", "700", environment="prod")
    d["shadow_over_budget"] = _gate(c, "h5", "500", project="search")
    d["shadow_hard_deny"] = _gate(c, "h6", "6000", project="search")
    d["unpriced"] = _gate(c, "h7", "10", environment="prod", metadata={"pricing": {"unpriced_count": 2}})
    d["shadow_search"] = _gate(c, "h8", "120", project="search")
    _gate(c, "h9", "50", dry_run=True)
    event = post(c, "/gate/cloud-event", {
        "cloud_event": {"specversion": "1.0", "id": "e1", "source": "//ci/search", "type": "provision"},
        "project_id": "search", "estimated_monthly_delta_usd": "190", "metadata": {"criticality": "high"}})
    assert event.status_code == 200, event.text
    d["cloud_event"] = event.json()
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client(reviewer) as r:
        assert r.post(f"{API}/approvals/{d['prod_approve']['approval_request_id']}/approve",
                      json={}).status_code == 200
        assert r.post(f"{API}/approvals/{d['prod_credits']['approval_request_id']}/deny",
                      json={}).status_code == 200
    return d


def simulate(c: httpx.Client, policy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = c.post(SIMULATE, json={"policy": policy, **extra})
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def transitions(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(t["current"], t["candidate"]): t["count"] for t in report["transitions"]}


def changed_ids(report: dict[str, Any]) -> set[str]:
    return {item["decision_id"] for item in report["changes"]}


def test_replay_under_the_current_policy_reproduces_every_stored_decision(tenant: Tenant) -> None:
    with tenant.client() as c:
        history = record_history(tenant, c)
        kinds = Counter(d["decision"] for d in history.values())
        assert set(kinds) == {"ALLOW", "ALLOW_WITH_CREDITS", "REQUIRE_APPROVAL"}, kinds
        assert any(Decimal(d["reserved_credit_usd"]) > 0 for d in history.values())
        current = c.get(f"{API}/policies").json()["document"]
        report = simulate(c, current)
    assert report["decisions_evaluated"] == report["replayed"] == len(history)  # the dry run is not replayed
    assert report["changed"] == 0 and report["changes"] == [] and report["not_replayable"]["total"] == 0
    assert all(t["current"] == t["candidate"] for t in report["transitions"])
    assert report["reserved_usd"]["change"] == "0.0000"
    # Beyond the outcome: the full evaluation (computed context and waterfall) comes back exactly.
    db = make_engine(tenant.settings)
    try:
        with make_sessionmaker(db)() as session:
            policy = PolicyDocument.model_validate(current)
            window = SimulationRequest(policy=policy)
            stored = list(service.stream(session, tenant.id, window, *_bounds(report)))
            assert len(stored) == len(history)
            for decision in stored:
                replayed = engine.replay(decision, policy)
                assert replayed.outcome == decision.outcome
                assert replayed.evaluation.computed_context == decision.computed_context
                assert replayed.outcome.route is not None or decision.decision != "REQUIRE_APPROVAL"
    finally:
        db.dispose()


def _bounds(report: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(report["window"]["start"]), datetime.fromisoformat(report["window"]["end"])


def test_mode_flip_shadow_to_hard_turns_overridden_allows_into_denials(tenant: Tenant) -> None:
    with tenant.client() as c:
        d = record_history(tenant, c)
        candidate = base_policy()
        candidate["mode_matrix"]["terraform"].update(default="hard", nonprod="hard")
        report = simulate(c, candidate)
    moved = transitions(report)
    # Over budget and over the hard-deny threshold, both only warned about in shadow, are denied in hard mode.
    assert moved[("ALLOW", "DENY")] == 2
    assert {d["shadow_over_budget"]["decision_id"], d["shadow_hard_deny"]["decision_id"]} <= changed_ids(report)
    by_id = {item["decision_id"]: item for item in report["changes"]}
    denied = by_id[d["shadow_hard_deny"]["decision_id"]]
    assert denied["current"]["reason_codes"] == ["hard_deny_threshold_exceeded", "shadow_mode_override"]
    assert (denied["candidate"]["decision"], denied["candidate"]["reason_codes"]) == (
        "DENY", ["hard_deny_threshold_exceeded"])
    # Allowed in shadow without a reservation, those within budget now hold their allocation.
    for name, amount in (("shadow_ok", "100.0000"), ("shadow_search", "120.0000")):
        within = by_id[d[name]["decision_id"]]
        assert (within["current"]["reserved_usd"], within["candidate"]["reserved_usd"]) == ("0.0000", amount)
    assert moved[("ALLOW", "ALLOW")] == 3 and report["changed"] == 4
    assert Decimal(report["reserved_usd"]["change"]) == Decimal("220")  # 100 + 120 newly held
    assert report["most_affected"]["projects"][0] == {"key": "search", "changed": 3, "reserved_change_usd": "120.0000"}
    assert report["most_affected"]["environments"] == [{"key": "nonprod", "changed": 4,
                                                        "reserved_change_usd": "220.0000"}]
    assert report["not_replayable"]["total"] == 0


def test_lower_hard_deny_threshold_escalates_what_it_now_exceeds(tenant: Tenant) -> None:
    with tenant.client() as c:
        d = record_history(tenant, c)
        candidate = base_policy()
        candidate["entitlements"]["hard_deny_above_monthly_usd"] = "300"
        report = simulate(c, candidate)
    by_id = {item["decision_id"]: item for item in report["changes"]}
    credits = by_id[d["prod_credits"]["decision_id"]]
    assert credits["candidate"]["reason_codes"] == ["hard_deny_threshold_exceeded", "soft_mode_escalation"]
    assert (credits["current"]["reserved_usd"], credits["candidate"]["reserved_usd"]) == ("700.0000", "0.0000")
    assert by_id[d["prod_approve"]["decision_id"]]["candidate"]["decision"] == "REQUIRE_APPROVAL"
    # In shadow the threshold only adds a warning: still allowed, with other reasons.
    assert by_id[d["shadow_over_budget"]["decision_id"]]["candidate"]["decision"] == "ALLOW"
    assert d["shadow_ok"]["decision_id"] not in by_id
    assert Decimal(report["reserved_usd"]["change"]) == Decimal("-1100")


def test_routing_rule_reroutes_approvals_without_changing_decisions(tenant: Tenant) -> None:
    with tenant.client() as c:
        d = record_history(tenant, c)
        candidate = base_policy()
        candidate["approval"]["routing_rules"] = [{
            "rule_id": "big-prod", "environments": ["production"], "min_monthly_delta_usd": "300",
            "required_permission": "approve:prod", "allowed_reviewer_roles": ["owner"]}]
        report = simulate(c, candidate)
    assert report["changed"] == 2 and transitions(report)[("REQUIRE_APPROVAL", "REQUIRE_APPROVAL")] == 3
    assert changed_ids(report) == {d["prod_approve"]["decision_id"], d["prod_credits"]["decision_id"]}
    for item in report["changes"]:
        assert item["current"]["approval_rule_id"] == "default-prod"
        assert item["candidate"]["approval_rule_id"] == "big-prod"
        assert item["current"]["decision"] == item["candidate"]["decision"] == "REQUIRE_APPROVAL"


def test_new_credit_rule_enterprise_ceiling_caps_credit_funding(tenant: Tenant) -> None:
    """The enterprise ceiling is the policy's rule on credit: the waterfall draws credit only up to what the
    tenant may hold in all (the ceiling less what it holds already)."""
    with tenant.client() as c:
        d = record_history(tenant, c)
        candidate = base_policy()
        candidate["entitlements"]["enterprise_monthly_ceiling_usd"] = "1000"
        report = simulate(c, candidate)
    by_id = {item["decision_id"]: item for item in report["changes"]}
    credits = by_id[d["prod_credits"]["decision_id"]]
    assert "credit_waterfall_used" in credits["current"]["reason_codes"]
    assert credits["current"]["reserved_credit_usd"] == "120.0000"
    # 420 was held when it came: 580 fits under the ceiling, all of it budget. Soft mode escalates and holds it.
    assert credits["candidate"]["reason_codes"][:2] == ["enterprise_ceiling_exceeded",
                                                        "soft_mode_enterprise_ceiling_escalation"]
    assert (credits["candidate"]["reserved_allocation_usd"], credits["candidate"]["reserved_credit_usd"]) == (
        "580.0000", "0.0000")
    funded = by_id[d["cloud_event"]["decision_id"]]
    assert (funded["current"]["decision"], funded["candidate"]["decision"]) == ("ALLOW_WITH_CREDITS",
                                                                                "REQUIRE_APPROVAL")
    assert transitions(report)[("ALLOW_WITH_CREDITS", "REQUIRE_APPROVAL")] == 1
    for name in ("shadow_ok", "prod_small", "prod_approve", "shadow_hard_deny"):
        assert d[name]["decision_id"] not in by_id, name
    assert Decimal(report["reserved_usd"]["change"]) == Decimal("-120") - Decimal("190") - Decimal("10")


def test_state_the_gate_did_not_read_is_not_replayable_with_its_reason(tenant: Tenant) -> None:
    with tenant.client() as c:
        assert c.put(f"{API}/policies", json=base_policy(plan_ceiling=None)).status_code == 200
        assert c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "100"}]}
                     ).status_code == 200
        _gate(c, "n1", "10")
        _gate(c, "n2", "20", project="unbudgeted")
        _gate(c, "n3", "250")  # over the budget with no grant: credits were read (none)
        ceiling = base_policy(plan_ceiling="5000")
        report = simulate(c, ceiling)
        assert report["not_replayable"] == {"total": 3, "reasons": {"tenant_reserved_total_not_recorded": 3}}
        assert report["replayed"] == 0 and report["transitions"] == []
        forecast = base_policy(plan_ceiling=None) | {"budget_basis": "forecast"}
        report = simulate(c, forecast)
        assert report["not_replayable"] == {"total": 2, "reasons": {"spend_not_recorded": 2}}
        assert report["replayed"] == 1  # without a budget no spend is read on either basis
        hard = copy.deepcopy(base_policy(plan_ceiling=None))
        hard["mode_matrix"]["terraform"]["nonprod"] = "hard"
        report = simulate(c, hard)
        assert report["not_replayable"]["total"] == 0 and transitions(report)[("ALLOW", "DENY")] == 1


def test_pages_filters_dry_run_put_audit_and_refusals(tenant: Tenant) -> None:
    member = tenant.key("dev", role="member")
    with tenant.client() as c, tenant.client(member) as m:
        d = record_history(tenant, c)
        candidate = base_policy()
        candidate["mode_matrix"]["terraform"].update(default="hard", nonprod="hard")
        whole = simulate(c, candidate)
        first = simulate(c, candidate, limit=2)
        assert [i["decision_id"] for i in first["changes"]] == [i["decision_id"] for i in whole["changes"][:2]]
        rest = simulate(c, candidate, limit=50, cursor=first["next_cursor"])
        assert first["changes"] + rest["changes"] == whole["changes"] and rest["next_cursor"] is None
        assert rest["window"] == first["window"] and rest["changed"] == whole["changed"]
        search = simulate(c, candidate, project_id="Search", environment="dev")
        assert search["filters"] == {"source": None, "project_id": "search", "environment": "nonprod"}
        assert {i["project_id"] for i in search["changes"]} == {"search"}
        assert search["decisions_evaluated"] == 4
        assert simulate(c, candidate, source="cloud_event")["decisions_evaluated"] == 1

        versions = len(c.get(f"{API}/policies/versions").json()["items"])
        dry = c.put(f"{API}/policies", params={"dry_run": "true"}, json=candidate)
        assert dry.status_code == 200, dry.text
        assert dry.json()["window"]["days"] == 7 and dry.json()["changed"] == whole["changed"]
        assert len(c.get(f"{API}/policies/versions").json()["items"]) == versions

        assert m.post(SIMULATE, json={"policy": candidate}).json()["code"] == "insufficient_role"
        assert m.put(f"{API}/policies", params={"dry_run": "true"}, json=candidate).status_code == 403
        assert c.post(SIMULATE, json={"policy": candidate}, headers={"Authorization": "Bearer nope"}
                      ).status_code == 401
        bad = copy.deepcopy(candidate)
        bad["entitlements"]["hard_deny_above_monthly_usd"] = "0"
        for body in ({"policy": bad}, {"policy": candidate, "window_days": 91}, {"policy": candidate, "bogus": 1},
                     {"policy": candidate, "until": "2026-01-01T00:00:00"}):
            r = c.post(SIMULATE, json=body)
            assert r.status_code == 422, (body, r.text)
        r = c.post(SIMULATE, json={"policy": candidate, "cursor": "not-a-cursor"})
        assert (r.status_code, r.json()["code"]) == (422, "invalid_cursor")
        assert d["shadow_ok"]["decision_id"] in changed_ids(whole)
    db = make_engine(tenant.settings)
    try:
        with make_sessionmaker(db)() as session:
            events = list(session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant.id)
                                          .order_by(AuditEvent.recorded_at)))
            assert len(events) == 6  # five simulations and the dry-run PUT; the refused ones left nothing
            assert {e.event for e in events} == {"policy_simulated"}
            assert events[0].details["policy_sha256"] == whole["candidate_policy_sha256"]
            assert str(events[0].id) == whole["audit_event_id"] and events[0].actor is not None
            assert events[-1].details["via"] == "put_dry_run"
            assert session.scalar(select(func.count()).select_from(PolicyVersion)
                                  .where(PolicyVersion.tenant_id == tenant.id)) == versions
    finally:
        db.dispose()


def test_cli_prints_a_summary_in_80_columns_and_the_answer_as_json(tenant: Tenant, tmp_path: Path) -> None:
    with tenant.client() as c:
        record_history(tenant, c)
        current = c.get(f"{API}/policies").json()
    candidate = copy.deepcopy(current["document"])
    candidate["mode_matrix"]["terraform"].update(default="hard", nonprod="hard")
    (tmp_path / "candidate.json").write_text(json.dumps(candidate))
    (tmp_path / "current.json").write_text(json.dumps(current))  # a GET /policies answer is accepted as is
    runner = CliRunner()
    env = {"VALDRIX_API_KEY": tenant.owner_key, "COLUMNS": "80"}
    shown = runner.invoke(cli_app, ["policy", "simulate", "--file", str(tmp_path / "candidate.json"), "--window",
                                    "30d", "--server", tenant.url], env=env)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(len(line) for line in lines) <= 80, shown.output
    assert "9 decisions: 9 replayed, 4 changed, 0 not replayable" in shown.output
    assert any("ALLOW → DENY" in line and line.rstrip().endswith("2") for line in lines), shown.output
    assert "most affected projects" in shown.output and "Changed decisions (4 of 4" in shown.output
    as_json = runner.invoke(cli_app, ["policy", "simulate", "--file", str(tmp_path / "current.json"), "--window",
                                      "7d", "--json", "--server", tenant.url], env=env)
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert (report["window"]["days"], report["changed"], report["replayed"]) == (7, 0, 9)
    bad = runner.invoke(cli_app, ["policy", "simulate", "--file", str(tmp_path / "candidate.json"), "--window",
                                  "2w", "--server", tenant.url], env=env)
    assert bad.exit_code == 2 and "30d" in bad.output
    member = runner.invoke(cli_app, ["policy", "simulate", "--file", str(tmp_path / "candidate.json"), "--server",
                                     tenant.url], env={**env, "VALDRIX_API_KEY": tenant.key("dev")})
    assert member.exit_code == 1 and "insufficient_role" in member.output


def test_openapi_documents_the_report_and_the_dry_run(tenant: Tenant) -> None:
    with tenant.client() as c:
        spec = c.get("/openapi.json").json()
    simulate_op = spec["paths"][SIMULATE]["post"]
    assert simulate_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SimulationReport"}
    assert {"401", "403", "422"} <= set(simulate_op["responses"])
    put = spec["paths"][f"{API}/policies"]["put"]
    assert [p["name"] for p in put["parameters"]] == ["dry_run"]
    assert "SimulationReport" in str(put["responses"]["200"]) and "not_replayable" in str(
        spec["components"]["schemas"]["SimulationReport"])


def _copy_decisions(tenant: Tenant, total: int) -> None:
    """Copy the tenant's decisions other than dry runs (new ids and keys, the last day) until it has `total`."""
    db = make_engine(tenant.settings)
    try:
        with db.begin() as conn:
            originals = [dict(row._mapping) for row in conn.execute(
                select(Decision.__table__).where(Decision.tenant_id == tenant.id, Decision.dry_run.is_(False)))]
            now = datetime.now(UTC)
            copies = [{**originals[i % len(originals)], "id": uuid.uuid4(), "idempotency_key": f"copy-{i}",
                       "created_at": now - timedelta(hours=20) + timedelta(seconds=i)}
                      for i in range(total - len(originals))]
            conn.execute(insert(Decision.__table__), copies)
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_running_simulation_does_not_hold_up_the_gate(tenant: Tenant) -> None:
    """The replay reads a snapshot: gate decisions made meanwhile neither wait for it nor fail safe."""
    with tenant.client() as c:
        record_history(tenant, c)
    _copy_decisions(tenant, 20_000)
    answer: dict[str, httpx.Response] = {}

    def replay() -> None:
        with tenant.client() as c:
            answer["report"] = c.post(SIMULATE, json={"policy": base_policy()}, timeout=300)

    thread = threading.Thread(target=replay)
    thread.start()
    time.sleep(0.3)
    during: list[tuple[dict[str, Any], float]] = []
    with tenant.client() as c:
        while thread.is_alive() and len(during) < 5:
            started = time.monotonic()
            during.append((_gate(c, f"during-{len(during)}", "5"), time.monotonic() - started))
    thread.join()
    assert answer["report"].status_code == 200 and answer["report"].json()["decisions_evaluated"] == 20_000
    assert during, "the simulation ended before any gate decision was made"
    for decision, seconds in during:
        assert not any(r.startswith("gate_") for r in decision["reason_codes"]), decision["reason_codes"]
        assert seconds < tenant.settings.gate_timeout_seconds, seconds
