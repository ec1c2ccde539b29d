"""HCP Terraform run tasks over real HTTP on each backend, against a local server that plays HCP Terraform.

The fake HCP Terraform serves the plan JSON (through a redirect, as HCP Terraform does), checks the run's bearer
token on every call and records each task-result PATCH. Requests are the HCP Terraform docs' sample payload
(tests/fixtures/third_party/tfc-run-task) pointed at it, signed with the tenant's run-task HMAC key; the queue
is worked by the worker's own `RunTaskWorker`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import FIXTURES
from tests.integration.test_gate_flow import set_mode
from tests.live import SigningKeys, Tenant
from valdrix.approvals.tokens import KeyRing
from valdrix.clock import OffsetClock, SystemClock, UuidFactory
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker
from valdrix.integrations.worker import RunTaskWorker

RUN_TASK = "/api/v1/enforcement/integrations/terraform-cloud"
REQUEST = json.loads((FIXTURES / "tfc-run-task" / "hcp-terraform__run_task_request_post_plan.json").read_text())
RESULT_SCHEMA = json.loads((FIXTURES / "tfc-run-task" / "hcp-terraform__runtask-result.schema.json").read_text())
PLAN = (FIXTURES / "terraform-plans" / "infracost__small_terraform_plan_nat_ebs.json").read_bytes()
PLAN_MONTHLY = "+54.7170 USD/month"


@dataclass
class FakeHcp:
    """HCP Terraform's side of a run task: plan JSON download and the task-result callback."""

    url: str = ""
    tokens: set[str] = field(default_factory=set)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    fail_callbacks: int = 0  # answer this many next PATCHes with 503

    def run(self, *, run_id: str | None = None, speculative: bool = False) -> dict[str, Any]:
        """Return a run-task request for a new run, with its own access token and callback."""
        run_id = run_id or f"run-{secrets.token_hex(8)}"
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        task_result = f"taskrs-{secrets.token_hex(8)}"
        return {**REQUEST, "access_token": token, "run_id": run_id, "task_result_id": task_result,
                "is_speculative": speculative,
                "plan_json_api_url": f"{self.url}/api/v2/plans/plan-{run_id}/json-output",
                "task_result_callback_url": f"{self.url}/api/v2/task-results/{task_result}/callback",
                "run_app_url": f"{self.url}/app/hashicorp/my-workspace/runs/{run_id}"}

    def results(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the bodies PATCHed (and accepted) for a request's task result."""
        return [c["body"] for c in self.callbacks
                if c["path"] == req["task_result_callback_url"].removeprefix(self.url) and c["accepted"]]


@pytest.fixture
def hcp() -> Iterator[FakeHcp]:
    fake = FakeHcp()

    class Handler(BaseHTTPRequestHandler):
        def _authorised(self) -> bool:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in fake.tokens:
                fake.refused.append(self.path)
                self._send(401, b'{"errors":[{"status":"401","title":"unauthorized"}]}')
                return False
            return True

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/archivist/"):
                # The redirect target is a signed, short-lived address: it needs no bearer token.
                self._send(200, PLAN)
            elif self.path.endswith("/json-output") and self._authorised():
                self._send(307, b"", {"Location": f"/archivist/{self.path.split('/')[4]}"})

        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not self._authorised():
                return
            accepted = fake.fail_callbacks == 0
            fake.callbacks.append({"path": self.path, "body": json.loads(body), "accepted": accepted,
                                   "content_type": self.headers.get("Content-Type")})
            if not accepted:
                fake.fail_callbacks -= 1
                self._send(503, b'{"errors":[{"status":"503"}]}')
                return
            self._send(200, json.dumps({"data": {"type": "task-results"}}).encode())

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def worker(tenant: Tenant, signing_keys: SigningKeys) -> Iterator[RunTaskWorker]:
    settings = Settings(**{**tenant.settings.model_dump(), "run_task_retry_base_seconds": 0.2})
    engine = make_engine(settings)
    keyring = KeyRing.from_settings(settings)
    assert keyring is not None
    with httpx.Client(timeout=10) as http:
        yield RunTaskWorker(sessions=make_sessionmaker(engine), settings=settings, keyring=keyring,
                            clock=SystemClock(), ids=UuidFactory(), http=http, holder=f"test-{uuid.uuid4().hex[:6]}")
    engine.dispose()


def hmac_key(tenant: Tenant) -> str:
    with tenant.client() as c:
        r = c.post(f"{RUN_TASK}/hmac-key")
        assert r.status_code == 201, r.text
        assert r.json()["run_task_url"].endswith(f"{RUN_TASK}/run-task?tenant={tenant.name}")
        key: str = r.json()["hmac_key"]
        return key


def send(tenant: Tenant, key: str, payload: dict[str, Any], *, signature: str | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    sig = hmac.new(key.encode(), body, hashlib.sha512).hexdigest() if signature is None else signature
    return httpx.post(f"{tenant.url}{RUN_TASK}/run-task", params={"tenant": tenant.name}, content=body, timeout=10,
                      headers={"Content-Type": "application/json", "X-TFC-Task-Signature": sig,
                               "User-Agent": "TFC/1.0 (+https://app.terraform.io; TFC)"})


def runs(tenant: Tenant) -> list[dict[str, Any]]:
    with tenant.client() as c:
        items: list[dict[str, Any]] = c.get(f"{RUN_TASK}/runs").json()["items"]
        return items


def settle(worker: RunTaskWorker, tenant: Tenant, job_id: str, timeout: float = 20) -> dict[str, Any]:
    """Work the queue until the job is done or failed; return the job."""
    deadline = time.monotonic() + timeout
    while True:
        worker.work_due()
        job = next(j for j in runs(tenant) if j["id"] == job_id)
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def decide(tenant: Tenant, key: str, hcp: FakeHcp, worker: RunTaskWorker, **run: Any
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send a new run's request, work it, and return (job, the task result HCP Terraform received)."""
    req = hcp.run(**run)
    r = send(tenant, key, req)
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    job = settle(worker, tenant, r.json()["job_id"])
    assert job["status"] == "done", job
    [result] = hcp.results(req)
    jsonschema.Draft6Validator(RESULT_SCHEMA).validate(result)
    assert result == job["result"]
    return job, result


def budget(tenant: Tenant, limit: str, mode: str = "soft") -> None:
    with tenant.client() as c:
        assert c.put(f"{RUN_TASK}/mappings", json={"mappings": [
            {"organization": "hashicorp", "workspace": "tfr_github_0", "project_id": "payments",
             "environment": "nonprod"}]}).status_code == 200
        assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": limit}]}).status_code == 200
        set_mode(c, mode)


def decisions(tenant: Tenant) -> list[dict[str, Any]]:
    with tenant.client() as c:
        items: list[dict[str, Any]] = c.get("/api/v1/enforcement/decisions").json()["items"]
        return items


def test_verification_request_is_answered_and_nothing_queued(tenant: Tenant, hcp: FakeHcp) -> None:
    key = hmac_key(tenant)
    r = send(tenant, key, {**REQUEST, "access_token": "test-token"})
    assert r.status_code == 200 and r.json()["status"] == "verified", r.text
    assert runs(tenant) == [] and decisions(tenant) == []


def test_wrong_or_missing_signature_is_401_and_nothing_is_decided(tenant: Tenant, hcp: FakeHcp,
                                                                  worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    req = hcp.run()
    wrong = send(tenant, "not-the-key", req)
    assert wrong.status_code == 401 and wrong.json()["code"] == "run_task_signature_invalid"
    assert send(tenant, key, req, signature="").json()["code"] == "run_task_signature_missing"
    tampered = send(tenant, key, {**req, "run_id": "run-other"},
                    signature=hmac.new(key.encode(), json.dumps(req).encode(), hashlib.sha512).hexdigest())
    assert tampered.status_code == 401
    # Another tenant's key, or a tenant that does not exist, is refused the same way.
    other = httpx.post(f"{tenant.url}{RUN_TASK}/run-task", params={"tenant": "no-such-tenant"}, timeout=10,
                       content=json.dumps(req).encode(), headers={"X-TFC-Task-Signature": "0" * 128})
    assert other.status_code == 401 and other.json()["code"] == "run_task_signature_invalid"
    # A rotated key stops verifying at once.
    rotated = hmac_key(tenant)
    assert send(tenant, key, req).status_code == 401
    worker.work_due()
    assert runs(tenant) == [] and decisions(tenant) == [] and hcp.callbacks == []
    accepted = send(tenant, rotated, req)
    assert accepted.status_code == 200
    assert settle(worker, tenant, accepted.json()["job_id"])["status"] == "done"


def test_allowed_plan_passes_with_one_outcome_per_priced_resource(tenant: Tenant, hcp: FakeHcp,
                                                                  worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "1000")
    job, result = decide(tenant, key, hcp, worker)
    attributes = result["data"]["attributes"]
    assert attributes["status"] == "passed"
    assert attributes["message"].startswith(f"Valdrix Gate ALLOW: {PLAN_MONTHLY} for project payments")
    assert attributes["url"] == f"{tenant.settings.public_url}/console/decisions/{job['decision_id']}"
    outcomes = [o["attributes"] for o in result["data"]["relationships"]["outcomes"]["data"]]
    assert outcomes[0]["tags"]["Status"] == [{"label": "Passed", "level": "none"}]
    assert {o["outcome-id"]: o["tags"]["Monthly cost"][0]["label"] for o in outcomes[1:]} == {
        "aws_nat_gateway.nat": "+32.8500 USD/month", "aws_instance.web_app": "+9.0920 USD/month",
        "aws_ebs_volume.storage_option_1": "+8.3750 USD/month", "aws_eip.nat_eip": "+3.6500 USD/month",
        "aws_ebs_volume.storage_option_2": "+0.7500 USD/month"}
    assert hcp.callbacks[0]["content_type"] == "application/vnd.api+json" and hcp.refused == []
    [decision] = decisions(tenant)
    assert (decision["decision_id"], decision["source"], decision["project_id"]) == (
        job["decision_id"], "terraform", "payments")
    # HCP Terraform re-sending the same request (our 200 lost) queues nothing new and decides nothing new.
    req = {**hcp.run(), "run_id": job["run_id"], "task_result_id": job["task_result_id"]}
    again = send(tenant, key, req)
    assert again.json() == {"status": "already_queued", "job_id": job["id"]}
    worker.work_due()
    assert len(decisions(tenant)) == 1 and len(hcp.callbacks) == 1
    assert [j["id"] for j in runs(tenant)] == [job["id"]]


def test_denied_plan_fails_with_the_budget(tenant: Tenant, hcp: FakeHcp, worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "10", mode="hard")
    _, result = decide(tenant, key, hcp, worker)
    attributes = result["data"]["attributes"]
    assert attributes["status"] == "failed", attributes
    assert "DENY" in attributes["message"] and "budget_exceeded" in attributes["message"]
    assert "limit 10.0000 USD/month" in attributes["message"]
    assert result["data"]["relationships"]["outcomes"]["data"][0]["attributes"]["tags"]["Status"] == [
        {"label": "Denied", "level": "error"}]


def test_require_approval_then_approved_rerun_passes_once(tenant: Tenant, hcp: FakeHcp,
                                                          worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "10", mode="soft")
    _, result = decide(tenant, key, hcp, worker)
    attributes = result["data"]["attributes"]
    assert attributes["status"] == "failed" and "REQUIRE_APPROVAL" in attributes["message"]
    [decision] = decisions(tenant)
    approval_id = decision["approval_request_id"]
    assert approval_id and f"valdrix approve {approval_id}" in attributes["message"]
    assert attributes["url"].endswith(f"/console/decisions/{decision['decision_id']}")
    # Before approval, a new run of the same plan asks again (and fails again).
    _, result = decide(tenant, key, hcp, worker)
    assert result["data"]["attributes"]["status"] == "failed"
    with tenant.client() as c:
        r = c.post(f"/api/v1/enforcement/approvals/{approval_id}/approve", json={"notes": "ok for payments"})
        assert r.status_code == 200, r.text
    approved, result = decide(tenant, key, hcp, worker)
    attributes = result["data"]["attributes"]
    assert attributes["status"] == "passed", attributes
    assert f"approval {approval_id}" in attributes["message"]
    assert approved["decision_id"] == decision["decision_id"]
    # The approval was used up by that run: the next run of the same plan needs a new one.
    _, result = decide(tenant, key, hcp, worker)
    assert result["data"]["attributes"]["status"] == "failed"
    assert "REQUIRE_APPROVAL" in result["data"]["attributes"]["message"]
    with tenant.client() as c:
        events = [e["event"] for e in c.get("/api/v1/enforcement/ledger").json()["items"]
                  if e["decision_id"] == decision["decision_id"]]
    assert events.count("approval_redeemed") == 1


def test_speculative_plan_is_a_dry_run_and_never_uses_an_approval(tenant: Tenant, hcp: FakeHcp,
                                                                  worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "1000")
    _, result = decide(tenant, key, hcp, worker, speculative=True)
    assert result["data"]["attributes"]["status"] == "passed"
    [decision] = decisions(tenant)
    assert decision["dry_run"] is True and decision["reservation_active"] is False


def test_failed_callback_is_retried(tenant: Tenant, hcp: FakeHcp, worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "1000")
    hcp.fail_callbacks = 2
    job, result = decide(tenant, key, hcp, worker)
    assert job["attempts"] == 3 and result["data"]["attributes"]["status"] == "passed"
    assert [c["accepted"] for c in hcp.callbacks] == [False, False, True]
    assert len({json.dumps(c["body"], sort_keys=True) for c in hcp.callbacks}) == 1
    assert len(decisions(tenant)) == 1


def test_a_callback_failing_past_the_runs_ten_minutes_gives_up(tenant: Tenant, hcp: FakeHcp,
                                                               worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "1000")
    hcp.fail_callbacks = 1000
    clock = OffsetClock()
    late = dataclasses.replace(worker, clock=clock)
    job_id = send(tenant, key, hcp.run()).json()["job_id"]
    late.work_due()
    [job] = runs(tenant)
    assert (job["status"], job["attempts"], job["last_error"]) == ("callback", 1, "callback: HTTP 503")
    clock.offset = timedelta(minutes=10)
    job = settle(late, tenant, job_id)
    assert job["status"] == "failed" and "ten minutes" in job["last_error"]
    assert len(hcp.callbacks) == 2 and len(decisions(tenant)) == 1


def test_plan_the_token_cannot_read_fails_the_task_without_a_decision(tenant: Tenant, hcp: FakeHcp,
                                                                      worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    req = hcp.run()
    hcp.tokens.discard(req["access_token"])
    hcp.tokens.add("callback-only")
    r = send(tenant, key, req)
    job = settle(worker, tenant, r.json()["job_id"])
    # The callback is refused too (same token): the job fails after its one non-retryable attempt.
    assert job["status"] == "failed" and "HTTP 401" in job["last_error"]
    assert decisions(tenant) == []


def test_admin_api_needs_admin_and_never_returns_the_key(tenant: Tenant) -> None:
    key = hmac_key(tenant)
    member = tenant.key("ci", role="member")
    with tenant.client(member) as c:
        assert c.post(f"{RUN_TASK}/hmac-key").status_code == 403
        assert c.put(f"{RUN_TASK}/mappings", json={"mappings": []}).status_code == 403
    with tenant.client() as c:
        view = c.get(RUN_TASK)
        assert view.status_code == 200 and view.json()["hmac_key_configured"] is True
        assert key not in view.text
        dup = c.put(f"{RUN_TASK}/mappings", json={"mappings": [
            {"organization": "a", "workspace": "*", "project_id": "x"},
            {"organization": "A", "workspace": "*", "project_id": "y"}]})
        assert dup.status_code == 422 and dup.json()["code"] == "duplicate_mapping"


def test_routes_are_documented_in_openapi(tenant: Tenant) -> None:
    doc = httpx.get(f"{tenant.url}/openapi.json", timeout=10).json()
    post = doc["paths"][f"{RUN_TASK}/run-task"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["properties"]["task_result_callback_url"]
    assert {"200", "401", "422"} <= set(post["responses"])
    assert {f"{RUN_TASK}", f"{RUN_TASK}/hmac-key", f"{RUN_TASK}/mappings", f"{RUN_TASK}/runs"} <= set(doc["paths"])
    refs = {r.split("/")[-1] for r in json.dumps(doc).split('"$ref": "')[1:] for r in [r.split('"')[0]]}
    assert refs <= set(doc["components"]["schemas"])


def test_bad_requests_are_clear_4xx(tenant: Tenant, hcp: FakeHcp) -> None:
    key = hmac_key(tenant)
    plain = {**hcp.run(), "task_result_callback_url": "http://example.com/api/v2/task-results/x/callback"}
    r = send(tenant, key, plain)
    assert r.status_code == 422 and "task_result_callback_url" in r.json()["detail"]
    r = send(tenant, key, {"payload_version": 1})
    assert r.status_code == 422 and r.json()["code"] == "invalid_run_task_request"
    body = b"not json"
    r = httpx.post(f"{tenant.url}{RUN_TASK}/run-task", params={"tenant": tenant.name}, content=body, timeout=10,
                   headers={"Content-Type": "application/json",
                            "X-TFC-Task-Signature": hmac.new(key.encode(), body, hashlib.sha512).hexdigest()})
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    assert runs(tenant) == []


def work_concurrently(tenant: Tenant, replicas: int) -> list[int]:
    """Work the queue with `replicas` workers released together, each on its own thread; return their counts."""
    settings = Settings(**{**tenant.settings.model_dump(), "run_task_retry_base_seconds": 0.2})
    engine = make_engine(settings)
    barrier = threading.Barrier(replicas)
    worked: list[int] = []

    keyring = KeyRing.from_settings(settings)
    assert keyring is not None

    def work(name: str) -> None:
        with httpx.Client(timeout=10) as http:
            one = RunTaskWorker(sessions=make_sessionmaker(engine), settings=settings, keyring=keyring,
                                clock=SystemClock(), ids=UuidFactory(), http=http, holder=name)
            barrier.wait()
            worked.append(one.work_due())

    try:
        threads = [threading.Thread(target=work, args=(f"replica-{i}",)) for i in range(replicas)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        engine.dispose()
    return worked


def test_concurrent_workers_work_each_request_once(tenant: Tenant, hcp: FakeHcp) -> None:
    key = hmac_key(tenant)
    budget(tenant, "100000")
    requests = [hcp.run() for _ in range(6)]
    for req in requests:
        assert send(tenant, key, req).json()["status"] == "queued"
    assert sum(work_concurrently(tenant, 3)) == 6
    assert all(len(hcp.results(req)) == 1 for req in requests)
    assert len(hcp.callbacks) == 6 and len(decisions(tenant)) == 6
    assert {j["status"] for j in runs(tenant)} == {"done"}


def test_an_approval_passes_one_of_concurrent_runs_of_the_plan(tenant: Tenant, hcp: FakeHcp,
                                                               worker: RunTaskWorker) -> None:
    key = hmac_key(tenant)
    budget(tenant, "10", mode="soft")
    decide(tenant, key, hcp, worker)
    [decision] = decisions(tenant)
    with tenant.client() as c:
        assert c.post(f"/api/v1/enforcement/approvals/{decision['approval_request_id']}/approve",
                      json={}).status_code == 200
    requests = [hcp.run() for _ in range(4)]
    for req in requests:
        assert send(tenant, key, req).json()["status"] == "queued"
    assert sum(work_concurrently(tenant, 4)) == 4
    statuses = sorted(hcp.results(req)[0]["data"]["attributes"]["status"] for req in requests)
    assert statuses == ["failed", "failed", "failed", "passed"]


@pytest.mark.slow
def test_valdrix_worker_process_works_the_queue(tenant: Tenant, hcp: FakeHcp, signing_keys: SigningKeys,
                                                tmp_path: Any) -> None:
    key = hmac_key(tenant)
    budget(tenant, "1000")
    req = hcp.run()
    assert send(tenant, key, req).json()["status"] == "queued"
    env = {**os.environ, **signing_keys.env(), "VALDRIX_DATABASE_URL": tenant.settings.database_url,
           "VALDRIX_RUN_TASK_POLL_SECONDS": "0.2", "VALDRIX_PUBLIC_URL": "https://gate.example.test"}
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "valdrix", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not hcp.results(req):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(10)
    [result] = hcp.results(req)
    assert result["data"]["attributes"]["status"] == "passed"
    assert result["data"]["attributes"]["url"].startswith("https://gate.example.test/console/decisions/")
