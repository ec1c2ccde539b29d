"""Notifications over real HTTP on each backend: targets, events in the transaction of their change, revocation,
approval history, budget thresholds; and `valdrix worker` delivering to a local receiver, killed mid-delivery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from tests.integration.pipeline import APPROVALS, approve, consume, deny, preflight, set_budget
from tests.integration.receiver import Received, receiver
from tests.integration.test_gate_flow import set_mode
from tests.live import Tenant, post
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.notifications.models import NotificationEvent

TARGETS = "/api/v1/enforcement/notifications/targets"
DELIVERIES = "/api/v1/enforcement/notifications/deliveries"


def _events(tenant: Tenant) -> list[NotificationEvent]:
    engine = make_engine(tenant.settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            rows = list(session.scalars(select(NotificationEvent).where(NotificationEvent.tenant_id == tenant.id)
                                        .order_by(NotificationEvent.created_at)))
            session.expunge_all()
            return rows
    finally:
        engine.dispose()


def _types(tenant: Tenant) -> list[str]:
    return [e.type for e in _events(tenant)]


def _target(c: httpx.Client, url: str, kind: str = "webhook", **filters: Any) -> dict[str, Any]:
    r = c.post(TARGETS, json={"kind": kind, "name": f"{kind}-{uuid.uuid4().hex[:6]}", "url": url, **filters})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_targets_show_their_secret_once_and_refuse_bad_input(tenant: Tenant) -> None:
    member = tenant.key("dev", role="member")
    with tenant.client() as c, tenant.client(member) as m:
        hook = _target(c, "http://127.0.0.1:9/hook", event_types=["approval.requested"], project_ids=["Payments"])
        assert hook["secret"].startswith("whsec_") and hook["project_ids"] == ["payments"]
        slack_url = "https://hooks.slack.com/services/T000/B000/SECRETPART"
        slack = _target(c, slack_url, kind="slack")
        assert slack["secret"] == slack_url and "SECRETPART" not in slack["url"]
        listed = c.get(TARGETS)
        assert listed.status_code == 200
        assert "whsec_" not in listed.text and "SECRETPART" not in listed.text
        assert {t["id"] for t in listed.json()["items"]} == {hook["id"], slack["id"]}
        assert m.get(TARGETS).status_code == 403
        for bad in ({"kind": "email", "name": "x", "url": "http://127.0.0.1/x"},
                    {"kind": "webhook", "name": "x", "url": "ftp://127.0.0.1/x"},
                    {"kind": "webhook", "name": "x", "url": "http://127.0.0.1/x", "event_types": ["nope"]},
                    {"kind": "webhook", "name": "", "url": "http://127.0.0.1/x"},
                    {"kind": "webhook", "name": "x", "url": "http://127.0.0.1/x", "extra": 1}):
            r = c.post(TARGETS, json=bad)
            assert r.status_code == 422 and r.json()["code"], (bad, r.text)
        queued = c.post(f"{TARGETS}/{hook['id']}/test")
        assert queued.status_code == 202 and queued.json()["status"] == "pending"
        assert queued.json()["event_type"] == "notification.test"
        history = c.get(DELIVERIES).json()["items"]
        assert [d["id"] for d in history] == [queued.json()["id"]]
        assert c.delete(f"{TARGETS}/{hook['id']}").status_code == 204
        assert c.post(f"{TARGETS}/{hook['id']}/test").status_code == 404
        assert c.get(DELIVERIES, params={"status": "dead"}).json()["items"][0]["last_error"] == "target deleted"
        assert c.delete(f"{TARGETS}/{uuid.uuid4()}").status_code == 404


def test_every_approval_change_writes_its_event_in_its_transaction(tenant: Tenant) -> None:
    reviewer = tenant.key("alice", role="owner")
    outsider = tenant.key("bob", role="member")
    ci_key = tenant.key("ci", role="member")
    with tenant.client(ci_key) as ci, tenant.client(reviewer) as rv, tenant.client(outsider) as out:
        set_budget(rv)
        gate = preflight(ci)
        events = _events(tenant)
        assert [e.type for e in events] == ["approval.requested"]
        data = events[0].payload["data"]
        assert data["requested_by"] == "ci" and data["project_id"] == "payments" and data["environment"] == "prod"
        assert data["estimated_monthly_delta_usd"] == "100.0000" and data["approval_id"] == gate["approval_request_id"]
        # A refused review changes nothing, so it writes no event.
        assert approve(out, gate["approval_request_id"]).status_code == 403
        assert _types(tenant) == ["approval.requested"]
        token = approve(rv, gate["approval_request_id"], notes="ok").json()["approval_token"]
        assert consume(ci, token, gate).status_code == 200
        assert consume(ci, token, gate).status_code == 409  # a refused replay writes nothing either
        second = preflight(ci, run="r2")
        assert deny(rv, second["approval_request_id"], notes="too big").status_code == 200
        events = _events(tenant)
        assert [e.type for e in events] == ["approval.requested", "approval.approved", "approval.consumed",
                                            "approval.requested", "approval.denied"]
        assert events[1].payload["data"]["actor"] == "alice" and events[1].payload["data"]["review_notes"] == "ok"
        assert events[4].payload["data"]["review_notes"] == "too big"
        # One event per ledger row that records an approval change: no change without its event.
        ledger = [e["event"] for e in rv.get("/api/v1/enforcement/ledger").json()["items"]]
        assert sorted(e for e in ledger if e != "decision_created") == sorted(
            ["approval_approved", "token_consumed", "approval_denied"])


def test_a_denied_decision_raises_decision_denied(tenant: Tenant) -> None:
    with tenant.client() as c:
        set_budget(c, limit="50")
        set_mode(c, "hard")
        r = post(c, "/gate/terraform/preflight", {
            "run_id": "big", "project_id": "payments", "environment": "nonprod",
            "resource_reference": "aws_instance.big", "estimated_monthly_delta_usd": "400"})
        assert r.json()["decision"] == "DENY", r.text
        dry = post(c, "/gate/terraform/preflight", {
            "run_id": "big-dry", "project_id": "payments", "environment": "nonprod", "dry_run": True,
            "resource_reference": "aws_instance.big", "estimated_monthly_delta_usd": "400"})
        assert dry.json()["decision"] == "DENY"
        events = _events(tenant)
        assert [e.type for e in events] == ["decision.denied"]  # a dry run notifies nobody
        assert events[0].payload["data"]["decision_id"] == r.json()["decision_id"]
        assert "budget_exceeded" in events[0].payload["data"]["reason_codes"]


def test_revoke_refuses_the_token_and_releases_the_reservation(tenant: Tenant) -> None:
    reviewer = tenant.key("alice", role="owner")
    outsider = tenant.key("bob", role="member")
    with tenant.client() as ci, tenant.client(reviewer) as rv, tenant.client(outsider) as out:
        set_budget(ci)
        gate = preflight(ci)
        approval_id = gate["approval_request_id"]
        early = rv.post(f"{APPROVALS}/{approval_id}/revoke", json={})
        assert early.status_code == 409 and early.json()["code"] == "approval_not_approved"
        token = approve(rv, approval_id).json()["approval_token"]
        refused = out.post(f"{APPROVALS}/{approval_id}/revoke", json={})
        assert refused.status_code == 403 and refused.json()["code"] == "approval_permission_missing"
        reserved = next(b for b in ci.get("/api/v1/enforcement/budgets").json()["items"])["reserved_usd"]
        assert Decimal(reserved) == 100
        r = rv.post(f"{APPROVALS}/{approval_id}/revoke", json={"notes": "wrong window"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked" and r.json()["revoked_at"] and r.json()["review_notes"] == "wrong window"
        reserved = next(b for b in ci.get("/api/v1/enforcement/budgets").json()["items"])["reserved_usd"]
        assert Decimal(reserved) == 0
        used = consume(ci, token, gate)
        assert used.status_code == 409 and used.json()["code"] == "approval_revoked"
        again = rv.post(f"{APPROVALS}/{approval_id}/revoke", json={})
        assert again.status_code == 409
        assert _types(tenant)[-1] == "approval.revoked"
        # A consumed approval cannot be revoked.
        other = preflight(ci, run="r2")
        token2 = approve(rv, other["approval_request_id"]).json()["approval_token"]
        assert consume(ci, token2, other).status_code == 200
        late = rv.post(f"{APPROVALS}/{other['approval_request_id']}/revoke", json={})
        assert late.status_code == 409 and late.json()["code"] == "token_already_consumed"
        ledger = [e["event"] for e in rv.get("/api/v1/enforcement/ledger", params={"decision_id": gate["decision_id"]})
                  .json()["items"]]
        assert "approval_revoked" in ledger


def test_approval_history_filters(tenant: Tenant) -> None:
    reviewer = tenant.key("alice", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci, limit="100000")
        consumed = preflight(ci, run="a")
        consume(ci, approve(rv, consumed["approval_request_id"]).json()["approval_token"], consumed)
        approved = preflight(ci, run="b")
        approve(rv, approved["approval_request_id"])
        denied = preflight(ci, run="c")
        deny(rv, denied["approval_request_id"])
        pending = preflight(ci, run="d", environment="nonprod", amount="99999")

        def ids(**params: str) -> list[str]:
            r = ci.get(APPROVALS, params=params)
            assert r.status_code == 200, r.text
            return [a["approval_id"] for a in r.json()["items"]]

        assert ids() == [pending["approval_request_id"], denied["approval_request_id"],
                         approved["approval_request_id"], consumed["approval_request_id"]]
        assert ids(status="consumed") == [consumed["approval_request_id"]]
        assert ids(status="approved") == [approved["approval_request_id"]]
        assert ids(status="denied") == [denied["approval_request_id"]]
        assert ids(status="pending") == [pending["approval_request_id"]]
        assert ids(environment="nonprod") == [pending["approval_request_id"]]
        assert ids(project_id="other") == []
        first = ci.get(APPROVALS, params={"limit": "3"}).json()
        rest = ci.get(APPROVALS, params={"limit": "3", "cursor": first["next_cursor"]}).json()
        assert len(first["items"]) == 3 and [a["approval_id"] for a in rest["items"]] == [
            consumed["approval_request_id"]] and rest["next_cursor"] is None
        assert ci.get(APPROVALS, params={"status": "bogus"}).status_code == 422


def test_budget_thresholds_are_announced_once_per_scope_and_month(tenant: Tenant) -> None:
    with tenant.client() as c:
        set_budget(c, limit="1000")
        for run, amount in (("a", "500"), ("b", "350"), ("c", "100"), ("d", "100")):
            r = post(c, "/gate/terraform/preflight", {
                "run_id": run, "project_id": "payments", "environment": "nonprod",
                "resource_reference": f"aws_instance.{run}", "estimated_monthly_delta_usd": amount})
            assert r.status_code == 200, r.text
        crossed = [e.payload["data"] for e in _events(tenant) if e.type == "budget.threshold_crossed"]
        # 500 → 850 crosses 80 %; 850 → 950 nothing; 950 → 1050 (an over-budget change escalated in soft mode
        # still holds its reservation) crosses 100 %.
        assert [d["threshold_percent"] for d in crossed] == [80, 100]
        assert crossed[0]["scope_key"] == "payments" and crossed[0]["used_usd"] == "850.0000"
        released = [r for r in c.get(APPROVALS).json()["items"]]
        for approval in released:
            deny(c, approval["approval_id"])
        r = post(c, "/gate/terraform/preflight", {
            "run_id": "e", "project_id": "payments", "environment": "nonprod",
            "resource_reference": "aws_instance.e", "estimated_monthly_delta_usd": "150"})
        assert r.status_code == 200
        assert len([e for e in _events(tenant) if e.type == "budget.threshold_crossed"]) == 2  # not again this month


@contextmanager
def worker(database_url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `valdrix worker` with fast notification timings; yield the process; stop it after."""
    settings = {"VALDRIX_DATABASE_URL": database_url, "VALDRIX_WORKER_TICK_SECONDS": "3600",
                "VALDRIX_NOTIFICATION_POLL_SECONDS": "0.1", "VALDRIX_NOTIFICATION_BACKOFF_SECONDS": "0.2",
                "VALDRIX_NOTIFICATION_BACKOFF_CAP_SECONDS": "0.5", "VALDRIX_NOTIFICATION_MAX_ATTEMPTS": "3",
                "VALDRIX_NOTIFICATION_LEASE_SECONDS": "2", "VALDRIX_NOTIFICATION_TIMEOUT_SECONDS": "1.5",
                "VALDRIX_PUBLIC_URL": "https://valdrix.example.test", **env}
    path = f"{tempfile.gettempdir()}/valdrix-worker-{uuid.uuid4().hex[:8]}.log"
    log = open(path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "valdrix", "worker"], env={**os.environ, **settings,
                                                                             "VALDRIX_LOG_LEVEL": "debug"},
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _ours(received: list[Received], tenant: Tenant) -> list[Received]:
    ids = {str(e.id) for e in _events(tenant)}
    return [r for r in received if r.headers.get("webhook-id") in ids or r.path == "/slack"]


def _delivered(c: httpx.Client, target_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        items = c.get(DELIVERIES, params={"target_id": target_id}).json()["items"]
        if items and items[0]["status"] == status:
            out: dict[str, Any] = items[0]
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery not {status}: {items}")
        time.sleep(0.1)


@pytest.mark.slow
def test_worker_delivers_signed_webhooks_and_slack_retries_and_gives_up(tenant: Tenant) -> None:
    with receiver() as box, tenant.client() as c, worker(tenant.settings.database_url) as proc:
        hook = _target(c, box.url + "/hook", event_types=["approval.requested"])
        slack = _target(c, box.url + "/slack", kind="slack", environments=["prod"])
        failing = _target(c, box.url + "/fail", event_types=["approval.requested"])
        set_budget(c)
        gate = preflight(c)
        got = box.wait_for("/hook")[0]
        event = _events(tenant)[0]
        assert got.headers["webhook-id"] == str(event.id)
        # Verified with the receiver's side of the Standard Webhooks library and the secret shown once.
        verified = Webhook(hook["secret"]).verify(got.body, got.headers)
        assert verified["type"] == "approval.requested"
        assert verified["data"]["approval_id"] == gate["approval_request_id"]
        message = box.wait_for("/slack")[0].json()
        text = str(message["blocks"])
        assert "payments" in text and "prod" in text and "$100.0000/month" in text and "owner" in text
        button = message["blocks"][-1]["elements"][0]
        assert button["url"] == f"https://valdrix.example.test/console/approvals/{gate['approval_request_id']}"
        dead = _delivered(c, failing["id"], "dead")
        assert dead["attempts"] == 3 and dead["last_error"] == "HTTP 500" and dead["last_status_code"] == 500
        assert len(box.on("/fail")) == 3
        assert _delivered(c, hook["id"], "delivered")["attempts"] == 1
        tested = c.post(f"{TARGETS}/{hook['id']}/test").json()
        assert _delivered(c, hook["id"], "delivered")["id"] == tested["id"]
        assert Webhook(hook["secret"]).verify(box.on("/hook")[-1].body,
                                              box.on("/hook")[-1].headers)["type"] == "notification.test"
    # Secrets never reach the logs, even at debug level: the Slack URL is a credential.
    with open(proc.log_path) as log:  # type: ignore[attr-defined]
        logged = log.read()
    assert "notification" in logged and slack["secret"] not in logged and hook["secret"] not in logged


@pytest.mark.slow
def test_a_worker_killed_mid_delivery_is_followed_by_a_redelivery_with_the_same_id(tenant: Tenant) -> None:
    with receiver() as box, tenant.client() as c:
        hang = _target(c, box.url + "/hang", event_types=["approval.requested"])
        set_budget(c)
        with worker(tenant.settings.database_url, VALDRIX_NOTIFICATION_TIMEOUT_SECONDS="10") as first:
            preflight(c)
            arrived = box.wait_for("/hang")[0]
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        box.release.set()
        assert c.get(DELIVERIES, params={"target_id": hang["id"]}).json()["items"][0]["status"] == "pending"
        with worker(tenant.settings.database_url):
            again = box.wait_for("/hang", count=2)[1]
            assert _delivered(c, hang["id"], "delivered")["attempts"] == 1
        assert again.headers["webhook-id"] == arrived.headers["webhook-id"]
        assert again.body == arrived.body and again.headers["webhook-signature"]


@pytest.mark.slow
def test_two_workers_never_send_one_delivery_at_once(tenant: Tenant) -> None:
    with receiver() as box, tenant.client() as c:
        _target(c, box.url + "/slow", event_types=["approval.requested"])
        set_budget(c, limit="1000000")
        for i in range(24):
            preflight(c, run=f"run-{i}")
        with worker(tenant.settings.database_url), worker(tenant.settings.database_url):
            box.wait_for("/slow", count=24, timeout=60)
            time.sleep(1)
        ours = _ours(box.on("/slow"), tenant)
        assert len(ours) == 24 and len({r.headers["webhook-id"] for r in ours}) == 24
        assert box.overlaps == 0
