"""Actual spend over real HTTP on each backend: POST /costs, FOCUS import, and decisions on the forecast basis."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_gate_flow import preflight, set_mode
from tests.live import LiveServer, Tenant, post

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "focus" / "focus_1_0_sample.csv"
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)


def at(server: LiveServer, when: datetime) -> None:
    server.clock.offset = when - datetime.now(UTC)


def import_focus(tenant: Tenant, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VALDRIX_DATABASE_URL": tenant.settings.database_url}
    return subprocess.run([sys.executable, "-m", "valdrix", "costs", "import", str(path), "--tenant", tenant.name,
                           *extra], env=env, capture_output=True, text=True, timeout=60)


def set_basis(c: httpx.Client, basis: str) -> None:
    doc = c.get("/api/v1/enforcement/policies").json()["document"]
    doc["budget_basis"] = basis
    assert c.put("/api/v1/enforcement/policies", json=doc).status_code == 200


def summary(c: httpx.Client, scope: str) -> dict[str, Any]:
    return dict(c.get("/api/v1/enforcement/costs/summary", params={"scope_key": scope}).json())


def test_post_costs_validates_and_replaces_by_scope_day_source(server: LiveServer, tenant: Tenant) -> None:
    at(server, NOW)
    with tenant.client() as c:
        eur = post(c, "/costs", {"records": [{"scope_key": "payments", "date": "2026-02-19", "amount_usd": "5",
                                              "currency": "EUR"}]})
        assert eur.status_code == 422 and eur.json()["code"] == "unsupported_currency"
        dup = post(c, "/costs", {"records": [{"scope_key": "payments", "date": "2026-02-19", "amount_usd": "5"}] * 2})
        assert dup.status_code == 422 and dup.json()["code"] == "duplicate_cost_record"
        days = [{"scope_key": "Payments", "date": f"2026-02-{d:02d}", "amount_usd": "100"} for d in range(1, 20)]
        first = post(c, "/costs", {"records": days})
        assert first.status_code == 200, first.text
        assert (first.json()["rows"], first.json()["replaced"]) == (19, 0)
        assert summary(c, "payments")["mtd_spend_usd"] == "1900.0000"
        again = post(c, "/costs", {"records": [{"scope_key": "payments", "date": "2026-02-19", "amount_usd": "300"}]})
        assert again.json()["replaced"] == 1
        s = summary(c, "payments")
        assert (s["mtd_spend_usd"], s["anomaly_kind"], s["data_status"]) == ("2100.0000", "spike", "fresh")
        assert post(c, "/costs", {"records": []}).status_code == 422
        member = tenant.key("m")
    with tenant.client(member) as m:
        assert post(m, "/costs", {"records": days}).status_code == 403


def test_focus_import_then_forecast_basis_changes_decisions(server: LiveServer, tenant: Tenant,
                                                            tmp_path: Path) -> None:
    at(server, NOW)
    bad = tmp_path / "bad.csv"
    lines = SAMPLE.read_text().splitlines(keepends=True)
    bad.write_text("".join([*lines[:5], lines[5].replace(",USD,", ",GBP,"), *lines[6:]]))
    failed = import_focus(tenant, bad)
    assert failed.returncode == 1 and "bad.csv:6:" in failed.stderr and "nothing was imported" in failed.stderr
    with tenant.client() as c:
        assert summary(c, "payments")["data_status"] == "none"
        ok = import_focus(tenant, SAMPLE)
        assert ok.returncode == 0, ok.stderr
        again = import_focus(tenant, SAMPLE)  # same period again: replaced, not added
        assert again.returncode == 0 and "replaced 39" in again.stderr, again.stderr
        s = summary(c, "payments")
        assert (s["mtd_spend_usd"], s["burn_rate_daily_usd"], s["forecast_eom_usd"], s["data_through"]) == (
            "758.0000", "40.0000", "1118.0000", "2026-02-19")
        assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": "1200"}]}).status_code == 200
        allow = post(c, "/gate/terraform/preflight", preflight("200", run="reservations-basis"))
        assert allow.json()["decision"] == "ALLOW", allow.text
        assert allow.json()["computed_context"]["context_version"] == "valdrix.computed_context.v2"
        assert allow.json()["computed_context"]["spend"] is None  # cost context off and basis reservations
        set_basis(c, "forecast")
        soft = post(c, "/gate/terraform/preflight", preflight("200", run="forecast-basis"))
        body = soft.json()
        assert body["decision"] == "REQUIRE_APPROVAL", soft.text
        assert body["reason_codes"][:2] == ["budget_exceeded", "soft_mode_budget_escalation"]
        ctx = body["computed_context"]
        # 1200 - max(758, 1118) - 200 (the earlier reservation, created after the newest cost date).
        assert (ctx["scope_committed_usd"], ctx["scope_headroom_usd"]) == ("1318.0000", "0.0000")
        assert ctx["spend"]["unreflected_reserved_usd"] == "200.0000"
        set_mode(c, "hard")
        deny = post(c, "/gate/terraform/preflight", preflight("50", run="forecast-hard"))
        assert deny.json()["decision"] == "DENY" and deny.json()["reason_codes"] == ["budget_exceeded"]


def test_forecast_basis_without_fresh_data_follows_the_mode(server: LiveServer, tenant: Tenant) -> None:
    at(server, NOW)
    with tenant.client() as c:
        assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": "1000"}]}).status_code == 200
        set_basis(c, "forecast")
        r = post(c, "/gate/terraform/preflight", preflight("10", run="none"))
        assert r.json()["decision"] == "REQUIRE_APPROVAL"
        assert r.json()["reason_codes"][:2] == ["computed_context_unavailable", "soft_mode_cost_context_escalation"]
        assert r.json()["computed_context"]["spend"]["data_status"] == "none"
        post(c, "/costs", {"records": [{"scope_key": "payments", "date": "2026-02-10", "amount_usd": "1"}]})
        set_mode(c, "hard")
        stale = post(c, "/gate/terraform/preflight", preflight("10", run="stale"))
        assert stale.json()["decision"] == "DENY"
        assert stale.json()["computed_context"]["spend"]["data_status"] == "stale"
        set_mode(c, "shadow")
        shadow = post(c, "/gate/terraform/preflight", preflight("10", run="shadow"))
        assert shadow.json()["decision"] == "ALLOW"
        assert "shadow_mode_cost_context_override" in shadow.json()["reason_codes"]
