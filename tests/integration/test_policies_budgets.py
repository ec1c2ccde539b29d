"""Policy versions, budgets, credits, the CloudEvents gate and the ledger's immutability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.integration.test_gate_flow import preflight, set_mode
from tests.live import LiveServer, Tenant, post
from valdrix.db import make_engine

API = "/api/v1/enforcement"


def test_policy_versions(tenant: Tenant) -> None:
    with tenant.client() as c:
        v1 = c.get(f"{API}/policies").json()
        assert v1["version"] == 1 and len(v1["sha256"]) == 64
        same = c.put(f"{API}/policies", json=v1["document"]).json()
        assert (same["version"], same["changed"]) == (1, False)
        doc = v1["document"]
        doc["entitlements"]["hard_deny_above_monthly_usd"] = "4000"
        v2 = c.put(f"{API}/policies", json=doc).json()
        assert (v2["version"], v2["changed"]) == (2, True) and v2["sha256"] != v1["sha256"]
        assert [v["version"] for v in c.get(f"{API}/policies/versions").json()["items"]] == [2, 1]
        assert c.get(f"{API}/policies/versions/1").json()["sha256"] == v1["sha256"]
        assert c.get(f"{API}/policies/versions/9").status_code == 404
        decision = post(c, "/gate/terraform/preflight", preflight("10")).json()
        assert (decision["policy_version"], decision["policy_sha256"]) == (2, v2["sha256"])


@pytest.mark.parametrize(("path", "value", "field"), [
    (("execution", "default_ttl_seconds"), 30, "execution.default_ttl_seconds"),
    (("mode_matrix", "terraform", "prod"), "loud", "mode_matrix.terraform.prod"),
    (("entitlements", "auto_approve_below_monthly_usd"), "9000", "entitlements"),
    (("entitlements", "bogus"), 1, "entitlements.bogus"),
    (("approval", "routing_rules"), [{"rule_id": "r", "required_permission": "approve:all"}],
     "approval.routing_rules.0.required_permission"),
])
def test_invalid_policy_names_the_field(tenant: Tenant, path: tuple[str, ...], value: object, field: str) -> None:
    with tenant.client() as c:
        doc = c.get(f"{API}/policies").json()["document"]
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        r = c.put(f"{API}/policies", json=doc)
        assert r.status_code == 422 and field in r.json()["detail"], r.text
        assert len(c.get(f"{API}/policies/versions").json()["items"]) == 1


def test_project_budget_governs_before_default(tenant: Tenant) -> None:
    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [
            {"scope_key": "default", "monthly_limit_usd": "1000"},
            {"scope_key": "payments", "monthly_limit_usd": "100"},
            {"scope_key": "search", "monthly_limit_usd": "100", "active": False}]}).raise_for_status()
        own = c.post(f"{API}/gate/terraform/preflight", json={**preflight("60"), "project_id": "payments"}).json()
        # An inactive project budget does not govern: the default one does.
        fallback = c.post(f"{API}/gate/terraform/preflight",
                          json={**preflight("70", "r2"), "project_id": "search"}).json()
        reserved = {b["scope_key"]: b["reserved_usd"] for b in c.get(f"{API}/budgets").json()["items"]}
    assert own["computed_context"]["budget_scope"] == "payments"
    assert fallback["computed_context"]["budget_scope"] == "default"
    assert reserved == {"default": "70.0000", "payments": "60.0000", "search": "0.0000"}


def test_credits_fund_overflow_and_are_debited(tenant: Tenant) -> None:
    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "10"}]})
        grant = c.post(f"{API}/credits", json={"amount_usd": "100", "scope_key": "default"})
        assert grant.status_code == 201
        r = post(c, "/gate/terraform/preflight", preflight("30")).json()
        assert r["decision"] == "ALLOW_WITH_CREDITS"
        assert (r["reserved_allocation_usd"], r["reserved_credit_usd"]) == ("10.0000", "20.0000")
        assert c.get(f"{API}/credits").json()["items"][0]["remaining_usd"] == "80.0000"
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        bad = c.post(f"{API}/credits", json={"amount_usd": "5", "expires_at": past})
        assert (bad.status_code, bad.json()["code"]) == (422, "credit_expiry_in_past")
        assert c.post(f"{API}/credits", json={"amount_usd": "0"}).status_code == 422


def test_cloud_event_gate(tenant: Tenant) -> None:
    event = {"specversion": "1.0", "id": "e-1", "source": "//cloudtrail/acct", "type": "aws.ec2.run",
             "subject": "i-123", "data": {"n": 1}, "traceparent": "00-abc"}
    with tenant.client() as c:
        set_mode(c, "hard")
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "finance", "monthly_limit_usd": "5"}]})
        body = {"cloud_event": event, "project_id": "finance", "environment": "prod",
                "estimated_monthly_delta_usd": "80"}
        r = post(c, "/gate/cloud-event", body)
        assert r.json()["decision"] == "DENY" and "budget_exceeded" in r.json()["reason_codes"]
        stored = c.get(f"{API}/decisions/{r.json()['decision_id']}").json()
        assert stored["request_payload"]["metadata"]["cloud_event_extensions"] == {"traceparent": "00-abc"}
        assert post(c, "/gate/cloud-event", body).json()["decision_id"] == r.json()["decision_id"]
        bad = post(c, "/gate/cloud-event", {**body, "cloud_event": {**event, "specversion": "0.3"}})
        assert bad.status_code == 422


def test_dry_run_is_never_replayed_as_real(tenant: Tenant) -> None:
    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "100"}]})
        dry = post(c, "/gate/terraform/preflight", preflight("30", dry_run=True)).json()
        assert dry["reason_codes"] == ["dry_run"] and dry["reservation_active"] is False
        real = post(c, "/gate/terraform/preflight", preflight("30")).json()
        assert real["decision_id"] != dry["decision_id"] and real["reservation_active"] is True
        assert Decimal(c.get(f"{API}/budgets").json()["items"][0]["reserved_usd"]) == 30


def test_ledger_refuses_update_and_delete(server: LiveServer, tenant: Tenant) -> None:
    with tenant.client() as c:
        post(c, "/gate/terraform/preflight", preflight("10"))
    engine = make_engine(server.settings)
    try:
        for statement in ("UPDATE decision_ledger SET decision = 'ALLOW'", "DELETE FROM decision_ledger"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
