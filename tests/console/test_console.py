"""The console in a real browser (headless Chromium from the machine's packages, driven by Playwright): sign in,
see the request a real `valdrix preflight --wait-for-approval` waits on, approve it and watch the pipeline go on;
deny; revoke; refusals explained; CSRF; session expiry and sign-out. Screenshots of each page go to
build/screenshots/ (the README links the committed copies in docs/screenshots/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import FIXTURES
from tests.integration.pipeline import APPROVALS, approve, consume, preflight, set_budget
from tests.live import LiveServer, Tenant, thread_server
from valdrix.app import create_app

pytestmark = pytest.mark.slow

# Test artifacts (not tracked); the README links the copies in docs/screenshots/, refreshed from here.
SHOTS = Path(os.environ.get("VALDRIX_SCREENSHOTS_DIR") or Path(__file__).resolve().parents[2] / "build" / "screenshots")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def live(sqlite_url: str, signing_keys: Any) -> Iterator[LiveServer]:
    from tests.conftest import settings_for
    with thread_server(settings_for(sqlite_url, **signing_keys.settings(), console_session_seconds=600),
                       "sqlite") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


@pytest.fixture
def tenant(live: LiveServer) -> Iterator[Tenant]:
    live.clock.offset = timedelta(0)
    yield live.tenant()
    live.clock.offset = timedelta(0)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    yield ctx
    ctx.close()


@pytest.fixture(scope="module", autouse=True)
def shots_dir() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)


def sign_in(page: Page, tenant: Tenant, key: str, shot: str | None = None) -> None:
    page.goto(tenant.url + "/console/login")
    page.fill("#api_key", key)
    if shot:
        page.screenshot(path=str(SHOTS / shot), full_page=True)
    page.click("button[type=submit]")
    expect(page).to_have_url(tenant.url + "/console/approvals")


PLAN = FIXTURES / "terraform-plans" / "terracost__aws_modules_ec2_elb_ebs_rds_plan.json"


def pipeline(tenant: Tenant, key: str, tmp: Path, run: str, *change: str) -> subprocess.Popen[str]:
    """Start `valdrix preflight --wait-for-approval` as a pipeline would; `change` prices it (default: a plan)."""
    env = {**os.environ, "VALDRIX_SERVER": tenant.url, "VALDRIX_API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-m", "valdrix", "preflight", *(change or ("--plan", str(PLAN))), "--project", "payments",
         "--environment", "prod", "--run-id", run, "--state-file", str(tmp / f"{run}.json"),
         "--wait-for-approval=120s", "--poll-interval", "0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def waiting(c: httpx.Client, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = c.get(APPROVALS, params={"status": "pending"}).json()["items"]
        if items:
            found: dict[str, Any] = items[0]
            return found
        time.sleep(0.2)
    raise AssertionError("the pipeline's request never appeared")


def test_approver_sees_the_waiting_pipeline_approves_it_and_the_pipeline_continues(
        tenant: Tenant, context: BrowserContext, tmp_path: Path) -> None:
    ci_key = tenant.key("ci-pipeline", role="member")
    alice = tenant.key("alice", role="admin", permissions=["approve:prod"])
    with tenant.client() as owner:
        set_budget(owner, limit="1000")
    proc = pipeline(tenant, ci_key, tmp_path, "run-approve")
    try:
        with tenant.client() as owner:
            pending = waiting(owner)
        amount = f"${float(pending['decision']['estimated_monthly_delta_usd']):,.2f}"
        page = context.new_page()
        sign_in(page, tenant, alice, shot="login.png")
        row = page.locator("tbody tr").first
        expect(row).to_contain_text("payments")
        expect(row).to_contain_text("prod")
        expect(row).to_contain_text(amount)
        expect(row).to_contain_text("ci-pipeline")
        page.screenshot(path=str(SHOTS / "approvals-queue.png"), full_page=True)
        row.get_by_role("link", name="Review").click()
        expect(page).to_have_url(f"{tenant.url}/console/approvals/{pending['approval_id']}")
        expect(page.locator("body")).to_contain_text("requires a reviewer's approval")
        expect(page.locator("body")).to_contain_text("default-prod")
        resources = page.locator("section", has_text="Cost by resource").locator("tbody tr")
        expect(resources.first).to_contain_text("aws_db_instance")  # the costliest first
        assert resources.count() >= 3
        page.screenshot(path=str(SHOTS / "approval-detail.png"), full_page=True)
        page.fill("#notes-approve", "capacity for the holiday peak")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status")).to_contain_text("Approved")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out  # the pipeline picked up its token and consumed it
        expect_state(page, tenant, pending["approval_id"], "consumed")
        page.screenshot(path=str(SHOTS / "approval-consumed.png"), full_page=True)
        page.get_by_role("link", name="History", exact=True).click()
        expect(page.locator("tbody tr").first).to_contain_text("consumed")
        expect(page.locator("tbody tr").first).to_contain_text("alice")
        page.screenshot(path=str(SHOTS / "approvals-history.png"), full_page=True)
        page.goto(f"{tenant.url}/console/decisions/{pending['decision_id']}")
        body = page.locator("body")
        expect(body).to_contain_text("held for a reviewer's approval")
        expect(body).to_contain_text("token_consumed")
        expect(body).to_contain_text("Project budget")
        page.screenshot(path=str(SHOTS / "decision-detail.png"), full_page=True)
        page.get_by_role("link", name="Decisions", exact=True).click()
        page.select_option("select[name=decision]", "REQUIRE_APPROVAL")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("tbody tr")).to_have_count(1)
        page.screenshot(path=str(SHOTS / "decisions-search.png"), full_page=True)
        page.get_by_role("link", name="Budgets", exact=True).click()
        expect(page.locator("body")).to_contain_text("$1,000.00")
        expect(page.locator("body")).to_contain_text(f"{amount} (")
        page.screenshot(path=str(SHOTS / "budgets.png"), full_page=True)
        phone = context.browser.new_context(viewport={"width": 390, "height": 844})  # type: ignore[union-attr]
        small = phone.new_page()
        sign_in(small, tenant, alice)
        small.goto(f"{tenant.url}/console/approvals/{pending['approval_id']}")
        assert small.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing spills sideways
        small.screenshot(path=str(SHOTS / "approval-phone.png"), full_page=True)
        phone.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def expect_state(page: Page, tenant: Tenant, approval_id: str, state: str) -> None:
    page.goto(f"{tenant.url}/console/approvals/{approval_id}")
    expect(page.locator(".lead .state")).to_have_text(state)


def test_deny_stops_the_pipeline(tenant: Tenant, context: BrowserContext, tmp_path: Path) -> None:
    ci_key = tenant.key("ci-pipeline", role="member")
    with tenant.client() as owner:
        set_budget(owner, limit="1000")
    proc = pipeline(tenant, ci_key, tmp_path, "run-deny", "--monthly-delta", "812.50")
    try:
        with tenant.client() as owner:
            pending = waiting(owner)
        page = context.new_page()
        sign_in(page, tenant, tenant.owner_key)
        page.goto(f"{tenant.url}/console/approvals/{pending['approval_id']}")
        page.fill("#notes-deny", "use a smaller instance")
        page.get_by_role("button", name="Deny").click()
        expect(page.get_by_role("status")).to_contain_text("Denied")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 3, out  # exit 3: denied by a reviewer
        with tenant.client() as owner:
            budget = owner.get("/api/v1/enforcement/budgets").json()["items"][0]
            assert budget["reserved_usd"] == "0.0000"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_revoke_refuses_the_token(tenant: Tenant, context: BrowserContext) -> None:
    reviewer = tenant.key("alice", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci)
        gate = preflight(ci)
        token = approve(rv, gate["approval_request_id"]).json()["approval_token"]
        page = context.new_page()
        sign_in(page, tenant, reviewer)
        page.goto(f"{tenant.url}/console/approvals/{gate['approval_request_id']}")
        page.screenshot(path=str(SHOTS / "approval-approved.png"), full_page=True)
        page.fill("#notes-revoke", "change window moved")
        page.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status")).to_contain_text("Revoked")
        expect(page.locator(".lead .state")).to_have_text("revoked")
        refused = consume(ci, token, gate)
        assert refused.status_code == 409 and refused.json()["code"] == "approval_revoked"


def test_refusals_are_explained_on_the_page(tenant: Tenant, context: BrowserContext) -> None:
    member = tenant.key("dev", role="member")
    admin = tenant.key("nonprod-admin", role="admin")  # admins hold approve:nonprod only
    with tenant.client() as owner:
        set_budget(owner)
        gate = preflight(owner)  # the owner asks: separation of duties keeps the owner from approving it
    page = context.new_page()
    sign_in(page, tenant, member)
    expect(page.locator(".empty")).to_contain_text("Nothing is waiting for you")
    page.goto(f"{tenant.url}/console/approvals/{gate['approval_request_id']}")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("alert")).to_contain_text("lets only owner, admin review it")
    admin_page = context.browser.new_context().new_page()  # type: ignore[union-attr]
    sign_in(admin_page, tenant, admin)
    admin_page.goto(f"{tenant.url}/console/approvals/{gate['approval_request_id']}")
    admin_page.get_by_role("button", name="Approve").click()
    expect(admin_page.get_by_role("alert")).to_contain_text("needs the 'approve:prod' permission")
    admin_page.screenshot(path=str(SHOTS / "approval-refused.png"), full_page=True)
    owner_page = context.browser.new_context().new_page()  # type: ignore[union-attr]
    sign_in(owner_page, tenant, tenant.owner_key)
    owner_page.goto(f"{tenant.url}/console/approvals/{gate['approval_request_id']}")
    owner_page.get_by_role("button", name="Approve").click()
    expect(owner_page.get_by_role("alert")).to_contain_text("Separation of duties")
    with tenant.client() as owner:
        assert owner.get(f"{APPROVALS}/{gate['approval_request_id']}").json()["status"] == "pending"


def test_a_form_without_its_csrf_token_is_refused(tenant: Tenant, context: BrowserContext) -> None:
    with tenant.client() as owner:
        set_budget(owner, limit="10")
        gate = preflight(owner, environment="nonprod")
    page = context.new_page()
    sign_in(page, tenant, tenant.owner_key)
    url = f"{tenant.url}/console/approvals/{gate['approval_request_id']}/approve"
    for form in ({"notes": "x"}, {"notes": "x", "csrf": "forged"}):
        # The browser's own cookies go along: only the token is missing or wrong.
        refused = page.request.post(url, form=form, max_redirects=0)
        assert refused.status == 403 and "security token" in refused.text()
    with tenant.client() as owner:
        assert owner.get(f"{APPROVALS}/{gate['approval_request_id']}").json()["status"] == "pending"
    no_login_csrf = page.request.post(tenant.url + "/console/login", form={"api_key": tenant.owner_key})
    assert no_login_csrf.status == 403


def test_sessions_expire_and_sign_out_revokes_them(tenant: Tenant, live: LiveServer,
                                                   context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, tenant, tenant.owner_key)
    cookie = next(c for c in context.cookies() if c["name"] == "valdrix_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    live.clock.offset = timedelta(seconds=601)
    page.goto(tenant.url + "/console/budgets")
    expect(page).to_have_url(tenant.url + "/console/login?next=%2Fconsole%2Fbudgets")
    sign_in(page, tenant, tenant.owner_key)  # a fresh session, from the server's (later) now
    kept = next(c for c in context.cookies() if c["name"] == "valdrix_console")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(tenant.url + "/console/login")
    context.add_cookies([kept])  # the old cookie, replayed after sign-out, opens nothing
    page.goto(tenant.url + "/console/approvals")
    expect(page).to_have_url(tenant.url + "/console/login?next=%2Fconsole%2Fapprovals")
    wrong = page.request.post(tenant.url + "/console/login", form={"api_key": "vxk_nope"})
    assert wrong.status == 403  # no login form token either


def test_pages_carry_a_strict_policy_and_tls_cookies_are_secure(tenant: Tenant, live: LiveServer) -> None:
    r = httpx.get(tenant.url + "/console/login")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in r.text
    with TestClient(create_app(live.settings), base_url="https://gate.example.test") as tls:
        form = tls.get("/console/login")
        token = form.cookies["valdrix_console_login"]
        assert "secure" in form.headers["set-cookie"].lower()
        signed = tls.post("/console/login", data={"api_key": tenant.owner_key, "csrf": token},
                          follow_redirects=False)
        assert signed.status_code == 303
        header = signed.headers["set-cookie"].lower()
        assert "valdrix_console=" in header and "secure" in header and "httponly" in header
        assert "samesite=strict" in header


def test_the_api_explorer_is_served_from_vendored_assets(tenant: Tenant, browser: Browser) -> None:
    page = browser.new_context().new_page()
    remote: list[str] = []
    page.on("request", lambda req: remote.append(req.url) if not req.url.startswith(tenant.url) else None)
    page.goto(tenant.url + "/docs")
    expect(page.locator(".swagger-ui")).to_be_visible()
    expect(page.get_by_text("POST/api/v1/enforcement/gate/terraform/preflight").first).to_be_visible()
    # The bearer scheme the document declares gives a working Authorize button: the key entered there is sent.
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".modal-ux input").first.fill(tenant.owner_key)
    page.locator(".modal-ux button.authorize").first.click()
    page.locator(".modal-ux button.btn-done").first.click()
    page.get_by_text("GET/api/v1/enforcement/budgets").first.click()
    page.get_by_role("button", name="Try it out").first.click()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/enforcement/budgets")) as answered:
        page.get_by_role("button", name="Execute").first.click()
    assert answered.value.status == 200
    assert remote == []


def test_what_would_this_policy_change_do(tenant: Tenant, context: BrowserContext) -> None:
    with tenant.client() as owner:
        set_budget(owner, limit="100")
        for run, amount in (("small", "40"), ("big", "400")):  # soft mode: the big one is escalated
            assert owner.post("/api/v1/enforcement/gate/terraform/preflight", json={
                "run_id": run, "project_id": "payments", "environment": "nonprod",
                "resource_reference": f"aws_instance.{run}", "estimated_monthly_delta_usd": amount}).status_code == 200
        document = owner.get("/api/v1/enforcement/policies").json()["document"]
        versions = len(owner.get("/api/v1/enforcement/policies/versions").json()["items"])
    for column in document["mode_matrix"].values():
        column.update(default="hard", prod="hard", nonprod="hard")
    page = context.new_page()
    sign_in(page, tenant, tenant.owner_key)
    page.get_by_role("link", name="Policy", exact=True).click()
    page.fill("#document", json.dumps(document, indent=2))
    page.get_by_role("button", name="What would this change do?").click()
    report = page.locator("#report")
    expect(report.locator("h2").first).to_have_text("1 of 2 decisions would change")
    expect(report).to_contain_text("REQUIRE_APPROVAL")
    expect(report.locator("tbody").last).to_contain_text("DENY")
    page.screenshot(path=str(SHOTS / "policy-simulation.png"), full_page=True)
    with tenant.client() as owner:  # nothing was saved
        assert len(owner.get("/api/v1/enforcement/policies/versions").json()["items"]) == versions
    page.fill("#document", "{not json")
    page.get_by_role("button", name="What would this change do?").click()
    expect(page.get_by_role("alert")).to_contain_text("not a valid policy")
    member = context.browser.new_context().new_page()  # type: ignore[union-attr]
    sign_in(member, tenant, tenant.key("dev", role="member"))
    member.goto(tenant.url + "/console/policy")
    member.get_by_role("button", name="What would this change do?").click()
    expect(member.get_by_role("alert")).to_contain_text("needs the admin role")
