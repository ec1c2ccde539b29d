"""Reservations over real HTTP on each backend: listing, reconciling (idempotent), overdue release, exceptions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.integration.test_gate_flow import preflight
from tests.live import LiveServer, Tenant, post

R = "/api/v1/enforcement/reservations"
D = Decimal


def setup_budget(c: httpx.Client, limit: str = "1000", credit: str | None = None) -> None:
    r = c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": limit}]})
    assert r.status_code == 200, r.text
    if credit:
        r = post(c, "/credits", {"pool": "reserved", "scope_key": "payments", "amount_usd": credit})
        assert r.status_code == 201, r.text


def gate(c: httpx.Client, amount: str, run: str) -> dict[str, Any]:
    r = post(c, "/gate/terraform/preflight", preflight(amount, run=run))
    assert r.status_code == 200, r.text
    return dict(r.json())


def reserved(c: httpx.Client) -> Decimal:
    return D(c.get("/api/v1/enforcement/budgets").json()["items"][0]["reserved_usd"])


def test_reconcile_settles_once_and_replays_by_key(tenant: Tenant) -> None:
    with tenant.client() as c:
        setup_budget(c, "10", credit="100")
        body = gate(c, "30", "r1")
        assert (body["decision"], body["reserved_allocation_usd"], body["reserved_credit_usd"]) == (
            "ALLOW_WITH_CREDITS", "10.0000", "20.0000")
        active = c.get(R + "/active").json()["items"]
        assert [a["decision_id"] for a in active] == [body["decision_id"]]
        assert active[0]["reserved_total_usd"] == "30.0000" and active[0]["age_seconds"] >= 0
        path = f"{R}/{body['decision_id']}/reconcile"
        first = c.post(path, json={"actual_monthly_delta_usd": "15", "notes": "rightsized"},
                       headers={"Idempotency-Key": "rec-1"})
        assert first.status_code == 200, first.text
        out = first.json()
        assert (out["status"], out["drift_usd"], out["credit_consumed_usd"], out["credit_released_usd"]) == (
            "savings", "-15.0000", "5.0000", "15.0000")
        assert out["replayed"] is False
        assert c.get("/api/v1/enforcement/credits").json()["items"][0]["remaining_usd"] == "95.0000"
        assert reserved(c) == 0
        again = c.post(path, json={"actual_monthly_delta_usd": "15", "notes": "rightsized"},
                       headers={"Idempotency-Key": "rec-1"})
        assert again.status_code == 200 and {**again.json(), "replayed": False} == out
        assert again.json()["replayed"] is True
        other = c.post(path, json={"actual_monthly_delta_usd": "16", "notes": "rightsized"},
                       headers={"Idempotency-Key": "rec-1"})
        assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
        no_key = c.post(path, json={"actual_monthly_delta_usd": "15"})
        assert no_key.status_code == 409 and no_key.json()["code"] == "reservation_not_active"
        assert c.post(path, json={"actual_monthly_delta_usd": "-1"}).status_code == 422
        assert c.post(path, json={"actual_monthly_delta_usd": "1"},
                      headers={"Idempotency-Key": "abc"}).status_code == 422
        assert c.post(f"{R}/00000000-0000-0000-0000-000000000001/reconcile",
                      json={"actual_monthly_delta_usd": "1"}).status_code == 404
        assert c.get(R + "/active").json()["items"] == []
        events = [e["event"] for e in c.get("/api/v1/enforcement/ledger").json()["items"]]
        assert events == ["decision_created", "reservation_reconciled"]
        exceptions = c.get(R + "/reconciliation-exceptions").json()["items"]
        assert [(e["decision_id"], e["status"]) for e in exceptions] == [(body["decision_id"], "savings")]


def test_tolerance_matches_small_drift_and_flags_overage(tenant: Tenant) -> None:
    with tenant.client() as c:
        setup_budget(c)
        small = gate(c, "100", "a")
        big = gate(c, "75", "b")
        r = c.post(f"{R}/{small['decision_id']}/reconcile", json={"actual_monthly_delta_usd": "100.9"})
        assert r.json()["status"] == "matched" and r.json()["drift_usd"] == "0.9000"  # within 1 %
        r = c.post(f"{R}/{big['decision_id']}/reconcile", json={"actual_monthly_delta_usd": "80"})
        assert (r.json()["status"], r.json()["drift_usd"]) == ("overage", "5.0000")
        statuses = [e["status"] for e in c.get(R + "/reconciliation-exceptions").json()["items"]]
        assert statuses == ["overage"]


def test_overdue_reservations_are_released_in_full(server: LiveServer, tenant: Tenant) -> None:
    with tenant.client() as c:
        setup_budget(c, "50", credit="40")
        old = [gate(c, "30", f"old{i}") for i in range(2)]  # 30 budget + (20 budget + 10 credit)
        server.clock.offset = timedelta(hours=23)
        young = gate(c, "5", "young")
        assert young["reservation_active"]
        server.clock.offset = timedelta(hours=25)
        r = post(c, "/reservations/reconcile-overdue", {})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["older_than_seconds"] == 86400 and out["released_count"] == 2
        assert out["decision_ids"] == [d["decision_id"] for d in old] and out["total_released_usd"] == "60.0000"
        # The young one is funded by credit (the budget was used up): only its 5 stay held.
        assert reserved(c) == 0
        assert c.get("/api/v1/enforcement/credits").json()["items"][0]["remaining_usd"] == "35.0000"
        assert post(c, "/reservations/reconcile-overdue", {}).json()["released_count"] == 0
        assert [a["decision_id"] for a in c.get(R + "/active").json()["items"]] == [young["decision_id"]]
        assert post(c, "/reservations/reconcile-overdue", {"older_than_seconds": 30}).status_code == 422
        events = [e["event"] for e in c.get("/api/v1/enforcement/ledger").json()["items"]]
        assert events.count("reservation_auto_released") == 2
        exceptions = c.get(R + "/reconciliation-exceptions?limit=1").json()
        assert exceptions["items"][0]["status"] == "auto_released" and exceptions["next_cursor"]
        rest = c.get(R + "/reconciliation-exceptions", params={"cursor": exceptions["next_cursor"]}).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None
        late = c.post(f"{R}/{old[0]['decision_id']}/reconcile", json={"actual_monthly_delta_usd": "30"})
        assert late.status_code == 409 and late.json()["code"] == "reservation_not_active"


def test_reservations_need_admin(tenant: Tenant) -> None:
    with tenant.client(tenant.key("dev")) as c:
        assert c.get(R + "/active").status_code == 403
        assert post(c, "/reservations/reconcile-overdue", {}).status_code == 403
