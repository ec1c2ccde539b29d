"""Every shipped pipeline example, run: its shell commands are extracted and executed against a real gate.

GitHub Actions steps, GitLab CI jobs, the Atlantis workflow and the generic shell script run as their CI system
would run them (bash -e, the job's variables, the job's working directory), with the client installed from the
built wheel. Stand-ins replace only what the CI platform or the cloud provides: `terraform` (no provider can
be downloaded here) answers with a real plan JSON fixture and records `apply`; `pip install "valdrix==…"`
checks the pin (the wheel under test is already installed); the GitHub and GitLab comment APIs are a local fake
server that `curl` really talks to. Whatever a platform's expression language says (`if:`, `rules:`) is
evaluated from a small table, so an example using an expression the test does not know fails loudly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import FIXTURES
from tests.live import LiveServer
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PLAN = FIXTURES / "terraform-plans" / "infracost__small_terraform_plan_nat_ebs.json"  # $54.7170/month
GH_TOKEN, GL_TOKEN = "gh-test-token", "gl-test-token"
# pytest runs this module on one interpreter's client install: the wheel test covers the others.
VERSION = "3.11"

TERRAFORM = """#!/bin/sh
# Stand-in for terraform: a real plan JSON for `show -json`, and a record of what was applied.
case "$1" in
  init) echo "Terraform has been successfully initialized!" ;;
  plan) for a in "$@"; do case "$a" in -out=*) echo "stand-in plan" > "${a#-out=}" ;; esac; done ;;
  show) cat "$STANDIN_PLAN_JSON" ;;
  apply) echo "$*" >> "$STANDIN_LOG" ;;
  *) echo "stand-in terraform: unexpected $*" >&2; exit 2 ;;
esac
"""
PIP = """#!/bin/sh
# Stand-in for pip: the wheel under test is installed already; the example must pin a version.
echo "pip $*" >> "$STANDIN_LOG"
case "$*" in
  "install valdrix=="[0-9]*) exit 0 ;;
  *) echo "stand-in pip: expected 'pip install valdrix==<version>', got: $*" >&2; exit 2 ;;
esac
"""


@dataclass
class FakePlatform:
    """GitHub's issue comments and GitLab's MR notes, in memory, with their token checks."""

    url: str = ""
    threads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                platform.requests.append(f"{method} {path}")
                github = re.fullmatch(r"/github/repos/[^/]+/[^/]+/issues/(?:(\d+)/comments|comments/(\d+))", path)
                gitlab = re.fullmatch(r"/gitlab/projects/\d+/merge_requests/(\d+)/notes(?:/(\d+))?", path)
                match, token_ok = (github, self.headers.get("Authorization") == f"Bearer {GH_TOKEN}") if github \
                    else (gitlab, self.headers.get("PRIVATE-TOKEN") == GL_TOKEN)
                if match is None:
                    return self._answer(404, {"message": "Not Found"})
                if not token_ok:
                    return self._answer(401, {"message": "Bad credentials"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                thread_id, item_id = match.group(1), match.group(2)
                if item_id is not None:
                    for items in platform.threads.values():
                        for item in items:
                            if str(item["id"]) == item_id and method in ("PATCH", "PUT"):
                                item["body"] = body["body"]
                                return self._answer(200, item)
                    return self._answer(404, {"message": "Not Found"})
                items = platform.threads.setdefault(("gh" if github else "gl") + thread_id, [])
                if method == "GET":
                    return self._answer(200, items)
                if method == "POST":
                    item = {"id": 1000 + sum(len(v) for v in platform.threads.values()), "body": body["body"]}
                    items.append(item)
                    return self._answer(201, item)
                return self._answer(405, {"message": "Method Not Allowed"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_PUT(self) -> None:
                self._route("PUT")

        return Handler


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    fake = FakePlatform()
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), fake.handler())
    fake.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()


@dataclass
class Workspace:
    """A checkout with the stand-ins and the client first on PATH; the environment every CI job starts from."""

    root: Path
    env: dict[str, str]
    log: Path

    def applied(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("apply")] \
            if self.log.exists() else []


@pytest.fixture
def workspace(tmp_path: Path, client_install: Callable[[str], Path], client_server: LiveServer) -> Workspace:
    stand_ins = tmp_path / "stand-ins"
    stand_ins.mkdir()
    for name, text in (("terraform", TERRAFORM), ("pip", PIP)):
        (stand_ins / name).write_text(text)
        (stand_ins / name).chmod(0o755)
    root = tmp_path / "checkout"
    (root / "infra" / "payments").mkdir(parents=True)
    log = tmp_path / "stand-ins.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "CI_", "VALDRIX_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{stand_ins}:{client_install(VERSION)}:{env.get('PATH', '')}", STANDIN_PLAN_JSON=str(PLAN),
               STANDIN_LOG=str(log), VALDRIX_SERVER=client_server.url)
    return Workspace(root, env, log)


def budgeted_tenant(server: LiveServer) -> tuple[str, str]:
    """Create a tenant with a `payments` budget; return a CI member key and a prod reviewer key."""
    tenant = server.tenant()
    with tenant.client() as c:
        assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": "1000"}]}).status_code == 200
    return tenant.key("ci", role="member"), tenant.key("alice", role="admin", permissions=["approve:prod"])


class Reviewer(threading.Thread):
    """Approves the first approval request a pipeline's state file names, as a reviewer would while it waits."""

    def __init__(self, url: str, key: str, state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.state_dir = url, key, state_dir
        self.approved: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            # Dry runs save no state: a state file with an approval request is a pipeline waiting for one.
            for path in self.state_dir.glob("*/.valdrix/preflight-*.json"):
                approval = json.loads(path.read_text()).get("approval_request_id")
                if approval and approval not in self.approved:
                    with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}) as c:
                        r = c.post(f"/api/v1/enforcement/approvals/{approval}/approve", json={"notes": "ok"})
                    if r.status_code == 200:
                        self.approved.append(approval)


def run_script(script: str, cwd: Path, env: dict[str, str], shell: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*shell, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# ---- GitHub Actions -------------------------------------------------------------------------------------------

GITHUB_CONDITIONS = {"github.event_name == 'pull_request'": lambda event: event == "pull_request",
                     "github.event_name == 'push'": lambda event: event == "push",
                     "always()": lambda event: True}


def github_expressions(text: str, context: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in context:
            raise AssertionError(f"the test has no value for the GitHub expression {name!r}")
        return context[name]
    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def run_github(workflow: dict[str, Any], event: str, ws: Workspace, context: dict[str, str],
               extra_env: dict[str, str]) -> dict[str, list[subprocess.CompletedProcess[str]]]:
    """Run the `run:` steps of every job the event selects; stop a job at its first failing step (bar always())."""
    results: dict[str, list[subprocess.CompletedProcess[str]]] = {}
    base = {k: github_expressions(str(v), context) for k, v in (workflow.get("env") or {}).items()}
    for name, job in workflow["jobs"].items():
        if not GITHUB_CONDITIONS[job.get("if", "always()")](event):
            continue
        cwd = ws.root / ((job.get("defaults") or {}).get("run") or {}).get("working-directory", ".")
        job_env = {**ws.env, **base, **extra_env, "GITHUB_JOB": name,
                   **{k: github_expressions(str(v), context) for k, v in (job.get("env") or {}).items()}}
        results[name] = []
        failed = False
        for step in job["steps"]:
            if "run" not in step:
                continue  # `uses:` actions are the platform's (checkout, setup-*, cache)
            condition = step.get("if")
            if condition is not None and condition not in GITHUB_CONDITIONS:
                raise AssertionError(f"the test cannot evaluate the step condition {condition!r}")
            # A failed step skips the rest of the job, bar steps that run always().
            selected = condition is None or GITHUB_CONDITIONS[condition](event)
            if (failed and condition != "always()") or not selected:
                continue
            env = {**job_env, **{k: github_expressions(str(v), context) for k, v in (step.get("env") or {}).items()}}
            result = run_script(github_expressions(step["run"], context), cwd, env,
                                ("bash", "--noprofile", "--norc", "-eo", "pipefail"))
            results[name].append(result)
            failed = failed or result.returncode != 0
    return results


def test_github_actions_example(client_server: LiveServer, workspace: Workspace, platform: FakePlatform) -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "valdrix-preflight.yml").read_text())
    ci_key, reviewer_key = budgeted_tenant(client_server)
    context = {"vars.VALDRIX_SERVER": client_server.url, "secrets.VALDRIX_API_KEY": ci_key, "github.token": GH_TOKEN,
               "github.event.pull_request.number": "17", "github.run_id": "4242", "github.job": "apply",
               "github.run_attempt": "1"}
    summary = workspace.root.parent / "step-summary.md"
    github_env = {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": platform.url + "/github",
                  "GITHUB_REPOSITORY": "acme/infra", "GITHUB_SERVER_URL": "https://github.com",
                  "GITHUB_STEP_SUMMARY": str(summary)}

    # A pull request, pushed twice: one dry-run comment, edited in place; the check passes (approval later).
    for push in (1, 2):
        results = run_github(workflow, "pull_request", workspace, context,
                             {**github_env, "GITHUB_RUN_ID": f"{4000 + push}"})
        assert list(results) == ["cost"]
        assert all(r.returncode == 0 for r in results["cost"]), [r.stdout + r.stderr for r in results["cost"]]
    [comment] = platform.threads["gh17"]
    body = comment["body"]
    assert body.startswith("<!-- valdrix-preflight payments/prod/pre_apply -->")
    assert "**REQUIRE_APPROVAL**" in body and "aws_nat_gateway" in body and "54.7170" in body
    assert "The policy requires a reviewer's approval" in body and "**Next**" in body
    assert workspace.applied() == []
    assert "valdrix-preflight payments/prod/pre_apply" in summary.read_text()

    # The push to main: the real decision, a reviewer approves while the job waits, then terraform applies.
    reviewer = Reviewer(client_server.url, reviewer_key, workspace.root / "infra")
    reviewer.start()
    try:
        results = run_github(workflow, "push", workspace, context, {**github_env, "GITHUB_RUN_ID": "4242"})
    finally:
        reviewer.stop.set()
    assert list(results) == ["apply"]
    outputs = [r.stdout + r.stderr for r in results["apply"]]
    assert all(r.returncode == 0 for r in results["apply"]), outputs
    assert len(reviewer.approved) == 1 and "exit 0 (consumed)" in "".join(outputs)
    assert workspace.applied() == ["apply -input=false plan.tfplan"]


# ---- GitLab CI ------------------------------------------------------------------------------------------------

GITLAB_RESERVED = {"stages", "variables", "default", "workflow", "include", "image", "services", "cache"}


def gitlab_rule(expression: str, variables: dict[str, str]) -> bool:
    match = re.fullmatch(r'\$(\w+) == (?:"([^"]*)"|\$(\w+))', expression.strip())
    if match is None:
        raise AssertionError(f"the test cannot evaluate the GitLab rule {expression!r}")
    left = variables.get(match.group(1), "")
    right = match.group(2) if match.group(2) is not None else variables.get(match.group(3) or "", "")
    return left == right


def gitlab_jobs(pipeline: dict[str, Any], variables: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Return the jobs a pipeline with `variables` runs, templates (`extends`) merged, in stage order."""
    jobs = []
    for name, job in pipeline.items():
        if name.startswith(".") or name in GITLAB_RESERVED:
            continue
        merged: dict[str, Any] = {}
        for parent in [job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends") or []:
            merged.update(pipeline[parent])
        merged.update(job)
        rules = merged.get("rules")
        if rules and not any(gitlab_rule(rule["if"], variables) for rule in rules):
            continue
        jobs.append((name, merged))
    order = pipeline["stages"]
    return sorted(jobs, key=lambda item: order.index(item[1]["stage"]))


def run_gitlab(pipeline: dict[str, Any], variables: dict[str, str],
               ws: Workspace) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run each selected job's before_script + script in one bash -e shell; a failed job fails the pipeline."""
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    env = {**ws.env, **{k: str(v) for k, v in pipeline.get("variables", {}).items()}, **variables}
    for name, job in gitlab_jobs(pipeline, variables):
        if any(r.returncode != 0 for r in results.values()):
            break
        lines = [*(job.get("before_script") or []), *job["script"]]
        results[name] = run_script("\n".join(lines), ws.root, {**env, "CI_JOB_NAME": name},
                                   ("bash", "--noprofile", "--norc", "-eo", "pipefail"))
    return results


def test_gitlab_ci_example(client_server: LiveServer, workspace: Workspace, platform: FakePlatform) -> None:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab-ci" / ".gitlab-ci.yml").read_text())
    ci_key, reviewer_key = budgeted_tenant(client_server)
    base = {"VALDRIX_API_KEY": ci_key, "VALDRIX_GITLAB_TOKEN": GL_TOKEN, "CI_API_V4_URL": platform.url + "/gitlab",
            "CI_PROJECT_ID": "7", "CI_DEFAULT_BRANCH": "main", "GITLAB_CI": "true"}
    merge_request = {**base, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "5"}
    for pipeline_id in ("801", "802"):
        results = run_gitlab(pipeline, {**merge_request, "CI_PIPELINE_ID": pipeline_id}, workspace)
        assert list(results) == ["plan", "cost-comment"]
        assert all(r.returncode == 0 for r in results.values()), [r.stdout + r.stderr for r in results.values()]
    [note] = platform.threads["gl5"]
    assert note["body"].startswith("<!-- valdrix-preflight payments/prod/pre_apply -->")
    assert "**REQUIRE_APPROVAL**" in note["body"] and "54.7170" in note["body"]
    assert workspace.applied() == []

    reviewer = Reviewer(client_server.url, reviewer_key, workspace.root / "infra")
    reviewer.start()
    try:
        results = run_gitlab(pipeline, {**base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main",
                                        "CI_PIPELINE_ID": "900"}, workspace)
    finally:
        reviewer.stop.set()
    assert list(results) == ["plan", "preflight", "apply"]
    assert all(r.returncode == 0 for r in results.values()), [r.stdout + r.stderr for r in results.values()]
    assert "exit 0 (consumed)" in results["preflight"].stdout
    assert workspace.applied() == ["apply -input=false plan.tfplan"]


# ---- Atlantis -------------------------------------------------------------------------------------------------

ATLANTIS_BUILT_INS = {"init": "terraform init -input=false", "plan": 'terraform plan -input=false -out="$PLANFILE"',
                      "apply": 'terraform apply "$PLANFILE"'}


def run_atlantis(steps: list[Any], ws: Workspace, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run a workflow stage: built-in steps as Atlantis runs them, `run:` steps in `sh -c` in the project dir."""
    results = []
    for step in steps:
        script = ATLANTIS_BUILT_INS[step] if isinstance(step, str) else step["run"]
        results.append(run_script(script, ws.root / "infra" / "payments", env, ("sh",)))
        if results[-1].returncode != 0:
            break
    return results


def test_atlantis_example(client_server: LiveServer, workspace: Workspace) -> None:
    config = yaml.safe_load((EXAMPLES / "atlantis" / "repos.yaml").read_text())
    workflow = config["workflows"][config["repos"][0]["workflow"]]
    ci_key, reviewer_key = budgeted_tenant(client_server)
    project_dir = workspace.root / "infra" / "payments"
    env = {**workspace.env, "VALDRIX_API_KEY": ci_key, "PLANFILE": str(project_dir / "prod.tfplan"),
           "WORKSPACE": "prod", "PULL_NUM": "31", "HEAD_COMMIT": "abc123", "PROJECT_NAME": "payments",
           "BASE_REPO_NAME": "infra", "DIR": str(project_dir)}
    plan = run_atlantis(workflow["plan"]["steps"], workspace, env)
    assert all(r.returncode == 0 for r in plan), [r.stdout + r.stderr for r in plan]
    # Atlantis posts the output of the run steps with the plan: the Markdown comment.
    assert plan[-1].stdout.startswith("<!-- valdrix-preflight payments/prod/plan-prod -->")
    assert "**REQUIRE_APPROVAL**" in plan[-1].stdout and workspace.applied() == []

    reviewer = Reviewer(client_server.url, reviewer_key, workspace.root / "infra")
    reviewer.start()
    try:
        apply = run_atlantis(workflow["apply"]["steps"], workspace, env)
    finally:
        reviewer.stop.set()
    assert all(r.returncode == 0 for r in apply), [r.stdout + r.stderr for r in apply]
    assert "exit 0 (consumed)" in apply[0].stdout and len(reviewer.approved) == 1
    assert workspace.applied() == [f"apply {project_dir / 'prod.tfplan'}"]


# ---- Generic shell --------------------------------------------------------------------------------------------

def test_shell_example(client_server: LiveServer, workspace: Workspace) -> None:
    ci_key, _ = budgeted_tenant(client_server)
    script = EXAMPLES / "shell" / "valdrix-preflight.sh"
    env = {**workspace.env, "VALDRIX_API_KEY": ci_key, "RUN_ID": "build-77", "PROJECT": "payments",
           "ENVIRONMENT": "nonprod"}
    started = time.monotonic()
    result = subprocess.run(["sh", str(script)], cwd=workspace.root / "infra" / "payments", env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exit 0 (allowed)" in result.stdout and time.monotonic() - started < 60
    assert workspace.applied() == ["apply -input=false plan.tfplan"]
    # Without the run id it refuses to start rather than guessing one.
    refused = subprocess.run(["sh", str(script)], cwd=workspace.root / "infra" / "payments",
                             env={k: v for k, v in env.items() if k != "RUN_ID"}, capture_output=True, text=True)
    assert refused.returncode != 0 and "set RUN_ID" in refused.stderr
    assert workspace.applied() == ["apply -input=false plan.tfplan"]
