"""The core gate over real HTTP on each backend: budgets, preflight, replay, conflicts, modes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.live import Tenant, post


def preflight(amount: str, run: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"run_id": run, "stage": "pre_apply", "project_id": "payments", "environment": "nonprod",
            "resource_reference": "module.db.aws_db_instance.main", "estimated_monthly_delta_usd": amount, **extra}


def set_mode(client: Any, mode: str) -> None:
    doc = client.get("/api/v1/enforcement/policies").json()["document"]
    for source in doc["mode_matrix"].values():
        source.update(default=mode, prod=mode, nonprod=mode)
    assert client.put("/api/v1/enforcement/policies", json=doc).status_code == 200


def test_quickstart_flow(tenant: Tenant) -> None:
    with tenant.client() as c:
        r = c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": "payments",
                                                                   "monthly_limit_usd": "1000"}]})
        assert r.status_code == 200, r.text
        first = post(c, "/gate/terraform/preflight", preflight("100"))
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["decision"] == "ALLOW"
        assert body["reservation_active"] is True
        assert body["continuation"]["binding"]["expected_request_fingerprint"] == body["request_fingerprint"]
        again = post(c, "/gate/terraform/preflight", preflight("100"))
        assert again.status_code == 200 and again.json()["decision_id"] == body["decision_id"]
        changed = post(c, "/gate/terraform/preflight", preflight("101"))
        assert changed.status_code == 409 and changed.json()["code"] == "idempotency_key_reused"
        ledger = c.get("/api/v1/enforcement/ledger").json()["items"]
        assert [e["decision_id"] for e in ledger] == [body["decision_id"]]
        budgets = c.get("/api/v1/enforcement/budgets").json()["items"]
        assert Decimal(budgets[0]["reserved_usd"]) == Decimal(100)
        set_mode(c, "hard")
        deny = post(c, "/gate/terraform/preflight", preflight("950", run="r2"))
        assert deny.json()["decision"] == "DENY", deny.text
        assert deny.json()["reason_codes"] == ["budget_exceeded"]
        assert deny.json()["reservation_active"] is False


def test_expected_fingerprint_mismatch_writes_nothing(tenant: Tenant) -> None:
    with tenant.client() as c:
        r = post(c, "/gate/terraform/preflight", preflight("10", expected_request_fingerprint="a" * 64))
        assert r.status_code == 409 and r.json()["code"] == "request_fingerprint_mismatch"
        assert c.get("/api/v1/enforcement/decisions").json()["items"] == []
