"""The admission webhook over real HTTP: decisions, modes, idempotency, fast path without the database, fail-safe."""

from __future__ import annotations

import copy
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import event

from tests.integration.test_gate_flow import set_mode
from tests.live import Tenant, _wait_ready, make_tenant
from tests.pg import free_port
from tests.unit.admission.test_translate import envelope, load, request_for
from valdrix.app import create_app
from valdrix.config import Settings
from valdrix.migrate import upgrade

PATH = "/api/v1/enforcement/gate/k8s/admission/review"
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}


def call(client: httpx.Client, obj: dict[str, Any], **kw: Any) -> httpx.Response:
    kw.setdefault("uid", str(uuid.uuid4()))
    return client.post(PATH, json=envelope(request_for(obj, **kw)))


def budget(client: httpx.Client, scope: str, limit: str) -> None:
    r = client.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": scope, "monthly_limit_usd": limit}]})
    assert r.status_code == 200, r.text


def test_hard_mode_over_budget_deployment_is_denied_with_reasons(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "100")
        set_mode(c, "hard")
        r = call(c, load("deployment-gpu-trainer.json"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
        res = body["response"]
        assert res["allowed"] is False
        assert res["status"]["code"] == 403
        assert "DENY" in res["status"]["message"] and "budget_exceeded" in res["status"]["message"]
        audit = res["auditAnnotations"]
        assert audit["decision"] == "DENY" and audit["monthly-delta-usd"] == "1670.5846"
        assert set(audit) >= {"decision-id", "policy-version", "request-fingerprint", "approval-request-id"}
        stored = c.get(f"/api/v1/enforcement/decisions/{audit['decision-id']}").json()
        assert stored["source"] == "k8s_admission" and stored["action"] == "admission.create"
        assert stored["request_payload"]["metadata"]["cost_breakdown"]["after"]["containers"]


def test_shadow_mode_allows_with_warnings_and_uid_is_idempotent(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "100")
        set_mode(c, "shadow")
        first = call(c, load("deployment-gpu-trainer.json"), uid="retry-me").json()["response"]
        assert first["allowed"] is True and "status" not in first
        assert 1 <= len(first["warnings"]) <= 5 and all(len(w) <= 120 for w in first["warnings"])
        assert any("would be blocked" in w for w in first["warnings"]), first["warnings"]
        again = call(c, load("deployment-gpu-trainer.json"), uid="retry-me").json()["response"]
        assert again["uid"] == "retry-me"
        assert again["auditAnnotations"]["decision-id"] == first["auditAnnotations"]["decision-id"]
        assert len(c.get("/api/v1/enforcement/decisions").json()["items"]) == 1


def test_scale_up_update_priced_as_delta_and_near_budget_warning(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "28")
        set_mode(c, "soft")
        old = load("deployment-web-requests-limits.json")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = 5
        res = call(c, new, operation="UPDATE", old=old).json()["response"]
        assert res["allowed"] is True
        assert res["auditAnnotations"]["monthly-delta-usd"] == "13.0845"
        # 28 - 13.0845 = 14.9155 left, not near; a second +13.0845 leaves 1.8310 < 2.8 (10 % of 28)
        res = call(c, new, operation="UPDATE", old=old).json()["response"]
        assert any("nearly used" in w for w in res.get("warnings", [])), res


def test_soft_mode_require_approval_tells_how_to_get_approval(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "10")
        set_mode(c, "soft")
        res = call(c, load("deployment-gpu-trainer.json")).json()["response"]
        assert res["allowed"] is False and res["status"]["code"] == 403
        assert "REQUIRE_APPROVAL" in res["status"]["message"] and "approve" in res["status"]["message"]


def test_dry_run_never_reserves(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "1000")
        res = call(c, load("deployment-web-requests-limits.json"), dryRun=True).json()["response"]
        assert res["allowed"] is True
        stored = c.get(f"/api/v1/enforcement/decisions/{res['auditAnnotations']['decision-id']}").json()
        assert stored["dry_run"] is True and stored["reservation_active"] is False


def test_fast_path_malformed_and_auth(tenant: Tenant) -> None:
    with tenant.client() as c:
        res = call(c, CONFIG_MAP).json()["response"]
        assert res["allowed"] is True and res["auditAnnotations"]["fast-path"] == "no_cost_impact"
        old = load("deployment-web-requests-limits.json")
        assert call(c, old, operation="DELETE", old=old).json()["response"]["allowed"] is True
        bad = c.post(PATH, content=b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
                     headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["code"] == "malformed_admission_review"
        obj = load("deployment-web-requests-limits.json")
        obj["metadata"]["annotations"] = {"valdrix.io/estimated-monthly-delta-usd": "12,50"}
        r = call(c, obj)
        assert r.status_code == 200
        assert r.json()["response"]["allowed"] is False
        assert "estimated-monthly-delta-usd" in r.json()["response"]["status"]["message"]
        assert c.get("/api/v1/enforcement/decisions").json()["items"] == []
        metrics = c.get("/metrics").text
        assert 'valdrix_ops_enforcement_gate_decisions_total{decision="ALLOW",path="fast",source="k8s_admission"}' \
            in metrics
    # A readable review always gets an AdmissionReview: an unknown caller's mode is unknown, so hard (deny).
    with httpx.Client(base_url=tenant.url) as anonymous:
        r = call(anonymous, CONFIG_MAP, uid="anon-1")
        assert r.status_code == 200 and r.json()["response"]["uid"] == "anon-1"
        assert r.json()["response"]["allowed"] is False and r.json()["response"]["status"]["code"] == 401
        assert "missing_credentials" in r.json()["response"]["status"]["message"]
    with tenant.client("vxk_not-a-key") as wrong:
        res = call(wrong, load("deployment-gpu-trainer.json")).json()["response"]
        assert res["allowed"] is False and res["status"]["code"] == 401
        assert res["auditAnnotations"]["refused"] == "invalid_credentials"


def _review_answer(c: httpx.Client, obj: dict[str, Any], uid: str) -> dict[str, Any]:
    r = call(c, obj, uid=uid)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["kind"] == "AdmissionReview" and r.json()["response"]["uid"] == uid
    res: dict[str, Any] = r.json()["response"]
    return res


def test_a_malformed_review_with_a_readable_uid_is_answered_as_an_admission_review(tenant: Tenant) -> None:
    with tenant.client() as c:
        review = envelope(request_for(CONFIG_MAP, uid="bad-op"))
        review["request"]["operation"] = "PATCH"
        r = c.post(PATH, json=review)
        assert r.status_code == 200 and r.json()["response"]["uid"] == "bad-op", r.text
        res = r.json()["response"]
        assert res["allowed"] is False and res["status"]["code"] == 400
        assert res["auditAnnotations"]["refused"] == "malformed_admission_review"
        unreadable = c.post(PATH, json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                        "request": {"uid": 7}})
        assert (unreadable.status_code, unreadable.json()["code"]) == (400, "malformed_admission_review")


def test_a_uid_reused_for_another_object_is_answered_as_an_admission_review_per_mode(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "100000")
        for mode, allowed in (("hard", False), ("soft", False), ("shadow", True)):
            set_mode(c, mode)
            uid = f"reused-{mode}"
            assert _review_answer(c, load("deployment-gpu-trainer.json"), uid)["allowed"] is True
            res = _review_answer(c, load("deployment-web-requests-limits.json"), uid)
            assert res["allowed"] is allowed, res
            assert res["status"]["code"] == 409 and "idempotency" in res["status"]["message"]
            assert res["auditAnnotations"]["refused"] == "idempotency_key_reused"


@contextmanager
def app_server(settings: Settings) -> Iterator[tuple[str, Any]]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.engine.dispose()


def test_config_map_never_touches_the_database_and_database_down_fail_safe(scratch_dir: Path) -> None:
    db = scratch_dir / f"down-{uuid.uuid4().hex}.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    settings = Settings(database_url=url)  # type: ignore[call-arg]
    with app_server(settings) as (base, app):
        tenant = make_tenant(settings, base)
        statements: list[str] = []
        event.listen(app.state.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        with tenant.client() as c:
            set_mode(c, "shadow")
            budget(c, "default", "10")
            # A priced decision verifies the key and learns the tenant's mode (shadow).
            assert call(c, load("deployment-gpu-trainer.json")).json()["response"]["allowed"] is True
            statements.clear()
            for _ in range(3):
                assert call(c, CONFIG_MAP).json()["response"]["allowed"] is True
            assert statements == [], statements
            # The database disappears: the fast path still answers, a priced change gets the last-seen mode's
            # fail-safe answer (shadow: allowed with a warning), recorded nowhere.
            os.rename(db, db.with_suffix(".gone"))
            db.with_suffix(".gone").rename(scratch_dir / "unrelated.db")
            db.write_bytes(b"")  # an empty file: every query fails
            app.state.engine.dispose()  # pooled connections would still hold the old file open
            assert call(c, CONFIG_MAP).json()["response"]["allowed"] is True
            r = call(c, load("deployment-gpu-trainer.json"))
            assert r.status_code == 200, r.text
            res = r.json()["response"]
            assert res["allowed"] is True and "fail-open" in res["warnings"][0]
            assert res["auditAnnotations"]["fail-safe"] == "gate_evaluation_error"


def test_database_down_never_seen_caller_is_denied(scratch_dir: Path) -> None:
    # A PostgreSQL URL nobody listens on: the key cannot be verified, the safest answer is a denial (HTTP 200).
    settings = Settings(database_url=f"postgresql+psycopg://valdrix@127.0.0.1:{free_port()}/none")  # type: ignore[call-arg]
    labels = {"source": "k8s_admission", "failure_type": "evaluation_error"}
    before = REGISTRY.get_sample_value("valdrix_ops_enforcement_gate_failures_total", labels) or 0
    with app_server(settings) as (base, _app), httpx.Client(base_url=base,
                                                           headers={"Authorization": "Bearer vxk_x"}) as c:
        res = c.post(PATH, json=envelope(request_for(load("deployment-gpu-trainer.json")))).json()["response"]
        assert res["allowed"] is False and res["status"]["code"] == 403
        assert "hard_mode_fail_closed" in res["status"]["message"]
        assert call(c, CONFIG_MAP).json()["response"]["allowed"] is True
    # The unrecorded fail-safe is counted where the alerts look (ValdrixGateEvaluationErrors).
    assert REGISTRY.get_sample_value("valdrix_ops_enforcement_gate_failures_total", labels) == before + 1


def test_bad_price_book_refuses_to_start(scratch_dir: Path) -> None:
    bad = scratch_dir / "prices.yaml"
    bad.write_text(json.dumps({"version": 1, "defaults": {"cpu_per_vcpu_hour": "-1"}}))
    import pytest

    from valdrix.pricing.kubernetes import PricingError
    with pytest.raises(PricingError):
        create_app(Settings(database_url="sqlite://", k8s_price_book_file=bad))  # type: ignore[call-arg]


def test_scale_subresource_priced_from_the_workloads_last_decision(tenant: Tenant) -> None:
    with tenant.client() as c:
        budget(c, "default", "1000")
        assert call(c, load("deployment-web-requests-limits.json")).json()["response"]["allowed"] is True
        old = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": 3}}
        new = {**old, "spec": {"replicas": 6}}
        req = request_for(new, operation="UPDATE", old=old, uid=str(uuid.uuid4()), subResource="scale")
        req["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
        res = c.post(PATH, json=envelope(req)).json()["response"]
        # one replica: 0.008962 /h x 730 = 6.5423 /month; 3 more replicas = 19.6269
        assert res["auditAnnotations"]["monthly-delta-usd"] == "19.6269", res


def test_lock_timeout_gives_the_hard_mode_fail_safe(tenant: Tenant) -> None:
    import pytest
    from sqlalchemy import create_engine, text

    if not tenant.settings.database_url.startswith("postgresql"):
        pytest.skip("row-lock timeouts are a PostgreSQL behaviour")
    with tenant.client() as c:
        budget(c, "default", "100000")
        set_mode(c, "hard")
        engine = create_engine(tenant.settings.database_url)
        with engine.connect() as holder:
            holder.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t FOR UPDATE"), {"t": tenant.id})
            r = call(c, load("deployment-web-requests-limits.json"))
            holder.rollback()
        engine.dispose()
        res = r.json()["response"]
        assert r.status_code == 200 and res["allowed"] is False
        assert "gate_lock_timeout" in res["status"]["message"] or "gate_timeout" in res["status"]["message"]


def test_approved_request_is_admitted_once_on_reapply(tenant: Tenant) -> None:
    webhook = tenant.key("k8s-webhook", role="member")
    obj = load("deployment-gpu-trainer.json")
    obj["metadata"]["annotations"] = {"valdrix.io/environment": "prod"}
    with tenant.client() as owner, tenant.client(key=webhook) as api_server:
        budget(owner, "default", "100000")
        set_mode(owner, "soft")
        first = call(api_server, obj).json()["response"]
        assert first["allowed"] is False and "REQUIRE_APPROVAL" in first["status"]["message"]
        approval_id = first["auditAnnotations"]["approval-request-id"]
        assert f"valdrix approve {approval_id}" in first["status"]["message"]
        # Still pending: re-applying asks again.
        assert call(api_server, obj).json()["response"]["allowed"] is False
        r = owner.post(f"/api/v1/enforcement/approvals/{approval_id}/approve", json={"notes": "ok"})
        assert r.status_code == 200, r.text
        admitted = call(api_server, obj).json()["response"]
        assert admitted["allowed"] is True, admitted
        assert admitted["auditAnnotations"]["approval-request-id"] == approval_id
        assert any(approval_id in w for w in admitted["warnings"])
        # The approval admits one re-apply only.
        assert call(api_server, obj).json()["response"]["allowed"] is False
        events = [e["event"] for e in owner.get("/api/v1/enforcement/ledger").json()["items"]]
        assert events.count("approval_redeemed") == 1


def test_container_without_resources_priced_from_the_tenants_policy_defaults(tenant: Tenant) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "third_party"
    no_resources = yaml.safe_load((fixtures / "k8s-objects" / "examples__tf-serving-deployment-no-resources.yaml")
                                  .read_text())
    with tenant.client() as c:
        budget(c, "default", "1000")
        first = call(c, no_resources).json()["response"]
        assert first["allowed"] is True, first
        assert first["auditAnnotations"]["monthly-delta-usd"] == "2.6942"  # 100m / 128Mi policy defaults
        stored = c.get(f"/api/v1/enforcement/decisions/{first['auditAnnotations']['decision-id']}").json()
        assert "container_resources_defaulted" in stored["reason_codes"]
        doc = c.get("/api/v1/enforcement/policies").json()["document"]
        doc["kubernetes"]["default_container_resources"] = {"cpu": "1", "memory": "1Gi"}
        assert c.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        again = call(c, no_resources).json()["response"]
        assert again["auditAnnotations"]["monthly-delta-usd"] == "26.1690"
        # Zero replicas without resources: nothing to decide once the defaults are known.
        zero = json.loads((fixtures / "admission-reviews" / "kubewarden__deployment_create_without_resources"
                           ".request.json").read_text())
        zero["uid"] = str(uuid.uuid4())
        res = c.post(PATH, json=envelope(zero)).json()["response"]
        assert res["allowed"] is True and res["auditAnnotations"]["fast-path"] == "non_positive_delta"
