"""Approval lifecycle over real HTTP on each backend: the runbook continuation, review authority, expiry."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.integration.pipeline import APPROVALS, approve, consume, deny, preflight, set_budget
from tests.live import LiveServer, Tenant, post
from valdrix.approvals import service as approvals
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.jobs import runner as worker


def _budget(c: httpx.Client, scope: str = "payments") -> dict[str, Any]:
    return next(b for b in c.get("/api/v1/enforcement/budgets").json()["items"] if b["scope_key"] == scope)


def _ledger_events(c: httpx.Client, decision_id: str) -> list[str]:
    return [e["event"] for e in c.get("/api/v1/enforcement/ledger").json()["items"] if e["decision_id"] == decision_id]


def test_runbook_continuation_end_to_end(tenant: Tenant) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci)
        gate = preflight(ci)
        assert gate["reservation_active"] is True
        approval_id = gate["approval_request_id"]
        polled = ci.get(f"{APPROVALS}/{approval_id}").json()
        assert polled["status"] == "pending" and polled["routing"]["rule_id"] == "default-prod"
        assert polled["decision"]["request_fingerprint"] == gate["request_fingerprint"]
        r = approve(rv, approval_id, notes="  looks fine  ")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "approved" and body["review_notes"] == "looks fine" and body["token_expires_at"]
        token = body["approval_token"]
        ok = consume(ci, token, gate)
        assert ok.status_code == 200, ok.text
        bound = ok.json()
        assert bound["status"] == "consumed" and bound["decision_id"] == gate["decision_id"]
        assert bound["max_monthly_delta_usd"] == "100.0000" and bound["max_hourly_delta_usd"] == "0.140000"
        assert bound["request_fingerprint"] == gate["request_fingerprint"] and bound["consumed_at"]
        again = consume(ci, token, gate)
        assert again.status_code == 409 and again.json()["code"] == "token_replayed"
        assert _ledger_events(ci, gate["decision_id"]) == ["decision_created", "approval_approved", "token_consumed"]
        # Approval keeps the reservation: the change is about to be provisioned.
        assert Decimal(_budget(ci)["reserved_usd"]) == Decimal(100)


def test_pipeline_picks_up_the_one_token_once(tenant: Tenant) -> None:
    ci_key = tenant.key("ci-pipeline", role="member")
    with tenant.client(ci_key) as ci, tenant.client() as owner:
        gate = preflight(ci)
        approval_id = gate["approval_request_id"]
        early = ci.post(f"{APPROVALS}/{approval_id}/token")
        assert early.status_code == 409 and early.json()["code"] == "approval_not_approved"
        issued = approve(owner, approval_id).json()["approval_token"]
        stranger = owner.post(f"{APPROVALS}/{approval_id}/token")
        assert stranger.status_code == 403 and stranger.json()["code"] == "token_pickup_forbidden"
        picked = ci.post(f"{APPROVALS}/{approval_id}/token")
        assert picked.status_code == 200, picked.text
        assert picked.json()["approval_token"] == issued  # one token per approval, never a second one
        second = ci.post(f"{APPROVALS}/{approval_id}/token")
        assert second.status_code == 409 and second.json()["code"] == "token_already_picked_up"
        assert consume(ci, picked.json()["approval_token"], gate).status_code == 200
        assert "token_picked_up" in _ledger_events(owner, gate["decision_id"])


def test_second_review_and_unknown_approval(tenant: Tenant) -> None:
    with tenant.client() as c:
        set_budget(c, limit="10")
        gate = preflight(c, environment="nonprod")  # over budget in soft mode: escalated to approval
        approval_id = gate["approval_request_id"]
        assert approve(c, approval_id).status_code == 200  # nonprod: self-approval allowed
        twice = approve(c, approval_id)
        assert twice.status_code == 409 and twice.json()["code"] == "approval_already_reviewed"
        late_deny = deny(c, approval_id)
        # RFC 9457: `status` is the HTTP status; the approval's state travels as `approval_status`.
        assert late_deny.status_code == 409
        assert late_deny.json()["status"] == 409 and late_deny.json()["approval_status"] == "approved"
        missing = c.get(f"{APPROVALS}/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["code"] == "approval_not_found"
        # Approval ids are UUIDs in the route itself: anything else names no resource (and /approvals/consume
        # is never read as an approval id, so its 405 lists only POST).
        assert c.get(f"{APPROVALS}/not-a-uuid").status_code == 404


def test_separation_of_duties_in_prod(tenant: Tenant) -> None:
    admin = tenant.key("admin", role="admin")
    member = tenant.key("member-prod", role="member", permissions=["approve:prod"])
    other_owner = tenant.key("owner-2", role="owner")
    with tenant.client() as owner:
        gate = preflight(owner)
        approval_id = gate["approval_request_id"]
        own = approve(owner, approval_id)
        assert own.status_code == 403 and own.json()["code"] == "requester_reviewer_separation"
        with tenant.client(admin) as c:
            r = approve(c, approval_id)
            assert r.status_code == 403 and r.json()["code"] == "approval_permission_missing"
            assert r.json()["required_permission"] == "approve:prod"
        with tenant.client(member) as c:
            r = approve(c, approval_id)
            assert r.status_code == 403 and r.json()["code"] == "reviewer_role_not_allowed"
        with tenant.client(other_owner) as c:
            assert approve(c, approval_id, notes="second pair of eyes").status_code == 200


def test_routing_rules_choose_reviewers(tenant: Tenant) -> None:
    member = tenant.key("sre", role="member", permissions=["approve:prod"])
    admin = tenant.key("admin", role="admin")
    with tenant.client() as owner:
        doc = owner.get("/api/v1/enforcement/policies").json()["document"]
        doc["approval"]["routing_rules"] = [
            {"rule_id": "disabled", "enabled": False, "required_permission": "approve:nonprod",
             "allowed_reviewer_roles": ["admin"]},
            {"rule_id": "big-prod", "environments": ["prod"], "min_monthly_delta_usd": "1000",
             "required_permission": "approve:prod", "allowed_reviewer_roles": ["owner"]},
            {"rule_id": "tf-prod-small", "environments": ["production"], "action_prefixes": ["terraform."],
             "max_monthly_delta_usd": "999.9999", "required_permission": "approve:prod",
             "allowed_reviewer_roles": ["member", "owner"], "require_requester_reviewer_separation": True},
        ]
        assert owner.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        small = preflight(owner, run="small", amount="100")
        big = preflight(owner, run="big", amount="1500")
        small_routing = owner.get(f"{APPROVALS}/{small['approval_request_id']}").json()["routing"]
        assert small_routing["rule_id"] == "tf-prod-small" and small_routing["matched"] == "policy_rule"
        assert owner.get(f"{APPROVALS}/{big['approval_request_id']}").json()["routing"]["rule_id"] == "big-prod"
        with tenant.client(member) as c:
            queue = c.get(f"{APPROVALS}/queue").json()["items"]
            assert [i["approval_id"] for i in queue] == [small["approval_request_id"]]
            forbidden = approve(c, big["approval_request_id"])
            assert forbidden.status_code == 403 and forbidden.json()["code"] == "reviewer_role_not_allowed"
            assert approve(c, small["approval_request_id"]).status_code == 200
        with tenant.client(admin) as c:
            assert c.get(f"{APPROVALS}/queue").json()["items"] == []
        # The trace was frozen at creation: a policy change does not re-route the pending approval.
        doc["approval"]["routing_rules"] = []
        assert owner.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        routing = owner.get(f"{APPROVALS}/{big['approval_request_id']}").json()["routing"]
        assert routing["rule_id"] == "big-prod"


def test_queue_is_oldest_first_and_paginated(tenant: Tenant) -> None:
    other = tenant.key("owner-2", role="owner")
    with tenant.client() as c, tenant.client(other) as o:
        ids = [preflight(c, run=f"q{i}")["approval_request_id"] for i in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            page = o.get(f"{APPROVALS}/queue", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [i["approval_id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids
        assert approve(o, ids[0]).status_code == 200
        assert [i["approval_id"] for i in o.get(f"{APPROVALS}/queue").json()["items"]] == ids[1:]
        assert o.get(f"{APPROVALS}/queue", params={"cursor": "!!"}).status_code == 422


def test_expiry_on_access_releases_the_reservation(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        set_budget(c)
        gate = preflight(c)
        approval_id = gate["approval_request_id"]
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(100)
        server.clock.offset = timedelta(seconds=899)
        assert c.get(f"{APPROVALS}/{approval_id}").json()["status"] == "pending"
        server.clock.offset = timedelta(seconds=901)
        r = approve(c, approval_id)
        assert r.status_code == 409 and r.json()["code"] == "approval_expired"
        # The refused review still committed the expiry and the release.
        body = c.get(f"{APPROVALS}/{approval_id}").json()
        assert body["status"] == "expired" and body["expired_at"] and body["decision"]["reservation_active"] is False
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(0)
        assert _ledger_events(c, gate["decision_id"]) == ["decision_created", "approval_expired"]
        assert c.get(f"{APPROVALS}/queue").json()["items"] == []


def test_deny_releases_allocation_and_refunds_credit(tenant: Tenant) -> None:
    other = tenant.key("owner-2", role="owner")
    with tenant.client() as c, tenant.client(other) as o:
        set_budget(c, limit="50")
        grant = c.post("/api/v1/enforcement/credits", json={"pool": "reserved", "scope_key": "payments",
                                                             "amount_usd": "100"})
        assert grant.status_code == 201, grant.text
        gate = preflight(c, amount="120")
        assert gate["reserved_allocation_usd"] == "50.0000" and gate["reserved_credit_usd"] == "70.0000"
        credits = c.get("/api/v1/enforcement/credits").json()["items"]
        assert credits[0]["remaining_usd"] == "30.0000"
        r = deny(o, gate["approval_request_id"], notes="too expensive")
        assert r.status_code == 200 and r.json()["status"] == "denied" and r.json()["review_notes"] == "too expensive"
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(0)
        assert c.get("/api/v1/enforcement/credits").json()["items"][0]["remaining_usd"] == "100.0000"
        ledger = [e for e in c.get("/api/v1/enforcement/ledger").json()["items"]
                  if e["decision_id"] == gate["decision_id"]]
        assert ledger[-1]["event"] == "approval_denied" and ledger[-1]["reservation_active"] is False
        picked = c.post(f"{APPROVALS}/{gate['approval_request_id']}/token")
        assert picked.status_code == 409
        assert picked.json()["status"] == 409 and picked.json()["approval_status"] == "denied"


def test_create_or_get(tenant: Tenant) -> None:
    with tenant.client() as c:
        gate = preflight(c)
        same = c.post(f"{APPROVALS}/requests", json={"decision_id": gate["decision_id"]})
        assert same.status_code == 200 and same.json()["approval_id"] == gate["approval_request_id"]
        allow = post(c, "/gate/terraform/preflight", {"run_id": "a", "project_id": "payments", "environment": "nonprod",
                                                      "resource_reference": "x", "estimated_monthly_delta_usd": "1"})
        refused = c.post(f"{APPROVALS}/requests", json={"decision_id": allow.json()["decision_id"]})
        assert refused.status_code == 409 and refused.json()["code"] == "decision_not_approvable"
        dry = post(c, "/gate/terraform/preflight", {"run_id": "d", "project_id": "payments", "environment": "prod",
                                                    "resource_reference": "y", "estimated_monthly_delta_usd": "100",
                                                    "dry_run": True}).json()
        assert dry["decision"] == "REQUIRE_APPROVAL" and dry["approval_request_id"] is None
        refused = c.post(f"{APPROVALS}/requests", json={"decision_id": dry["decision_id"]})
        assert refused.status_code == 409 and refused.json()["code"] == "decision_is_dry_run"
        unknown = c.post(f"{APPROVALS}/requests", json={"decision_id": str(uuid.uuid4())})
        assert unknown.status_code == 404


def test_shadow_mode_opens_no_approval(tenant: Tenant) -> None:
    with tenant.client() as c:
        doc = c.get("/api/v1/enforcement/policies").json()["document"]
        doc["mode_matrix"]["terraform"]["prod"] = "shadow"
        assert c.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        shadow = post(c, "/gate/terraform/preflight", {"run_id": "s", "project_id": "payments",
                                                       "environment": "prod", "resource_reference": "z",
                                                       "estimated_monthly_delta_usd": "100"}).json()
        assert shadow["decision"] == "ALLOW" and shadow["approval_request_id"] is None


def test_backlog_metric_and_jwks(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        gate = preflight(c)
        text = httpx.get(server.url + "/metrics").text
        sample = 'valdrix_ops_enforcement_approval_queue_backlog{required_permission="approve:prod"}'
        line = next(ln for ln in text.splitlines() if ln.startswith(sample))
        assert float(line.split()[-1]) >= 1
        jwks = httpx.get(server.url + "/.well-known/jwks.json").json()
        assert {k["kid"] for k in jwks["keys"]} == {"test-active", "test-retired"}
        assert all(set(k) == {"kty", "crv", "x", "kid", "alg", "use"} for k in jwks["keys"])
        other = tenant.key("owner-2", role="owner")
        with tenant.client(other) as o:
            token = approve(o, gate["approval_request_id"]).json()["approval_token"]
        assert consume(c, token, gate).status_code == 200
        assert 'valdrix_ops_enforcement_approval_token_events_total{event="consumed"}' in httpx.get(
            server.url + "/metrics").text


def test_expire_due_sweep(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        set_budget(c)
        gates = [preflight(c, run=f"sweep{i}") for i in range(3)]
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(300)
        engine = make_engine(server.settings)
        try:
            later = server.clock.now() + timedelta(seconds=901)
            with transaction(make_sessionmaker(engine)) as session:
                assert approvals.expire_due(session, later, limit=2, tenant_id=tenant.id) == 2
            with transaction(make_sessionmaker(engine)) as session:
                assert approvals.expire_due(session, later, limit=10, tenant_id=tenant.id) == 1
                assert approvals.expire_due(session, later, limit=10, tenant_id=tenant.id) == 0
        finally:
            engine.dispose()
        assert {c.get(f"{APPROVALS}/{g['approval_request_id']}").json()["status"] for g in gates} == {"expired"}
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(0)


def test_an_approved_token_that_lapses_unconsumed_is_expired_by_the_sweep(tenant: Tenant, server: LiveServer) -> None:
    """Issue 18 defect 9: the reservation is released when the token's exp passes, not 24 h later."""
    reviewer = tenant.key("reviewer-lapse", role="owner")
    with tenant.client() as c, tenant.client(reviewer) as rv:
        set_budget(c)
        server.clock.offset = timedelta(seconds=-1000)  # requested and approved in the past: exp is now behind us
        gate = preflight(c, run="lapse")
        server.clock.offset = timedelta(seconds=-990)
        approved = approve(rv, gate["approval_request_id"])
        assert approved.status_code == 200, approved.text
        token = approved.json()["approval_token"]
        server.clock.offset = timedelta(0)
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(100)
        settings = server.settings
        engine = make_engine(settings)
        try:
            job = next(j for j in worker.jobs(settings) if j.name == worker.EXPIRE_APPROVALS)
            assert worker.run_job(make_sessionmaker(engine), settings, job, "test-sweep",
                                  respect_schedule=False) == "success"
        finally:
            engine.dispose()
        body = c.get(f"{APPROVALS}/{gate['approval_request_id']}").json()
        assert body["status"] == "expired" and body["decision"]["reservation_active"] is False
        assert Decimal(_budget(c)["reserved_usd"]) == Decimal(0)
        assert _ledger_events(c, gate["decision_id"])[-1] == "approval_expired"
        r = consume(c, token, gate)
        assert (r.status_code, r.json()["code"]) == (409, "token_expired")


def test_how_long_a_pending_approval_holds_its_reservation_is_a_policy_setting(tenant: Tenant) -> None:
    with tenant.client() as c:
        set_budget(c)
        doc = c.get("/api/v1/enforcement/policies").json()["document"]
        assert doc["approval"]["pending_ttl_seconds"] is None  # default: execution.default_ttl_seconds
        for bad in (59, 604801, True, "120"):
            doc["approval"]["pending_ttl_seconds"] = bad
            r = c.put("/api/v1/enforcement/policies", json=doc)
            assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), (bad, r.text)
        doc["approval"]["pending_ttl_seconds"] = 120
        assert c.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        gate = preflight(c, run="short-hold")
        body = c.get(f"{APPROVALS}/{gate['approval_request_id']}").json()
        held = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
        assert held == timedelta(seconds=120)
