"""`valdrix preflight`: price a Terraform change, ask the gate, persist the continuation, optionally wait.

Exit codes (see `continuation.Exit` and docs/ci.md): 0 allowed or approved-and-consumed, 1 usage/transport
error, 2 denied, 3 approval pending/timed out/denied/expired, 4 token refused (hard stop), 5 the change
differs from the one this run already had evaluated (409).
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from valdrix.canonical import sha256_hex
from valdrix.cli.continuation import (
    Continuation,
    Exit,
    Result,
    State,
    StateError,
    explain_api_error,
    load_state,
    now_iso,
    parse_duration,
    save_state,
    wait_for_approval,
)
from valdrix.client import ApiError, GateClient, TransportFailure
from valdrix.money import HOURS_PER_MONTH, ZERO, hourly, monthly, parse_amount
from valdrix.pricing.infracost import read_infracost
from valdrix.pricing.summary import TOP_RESOURCES, change_digest, clip, request_metadata, resource_reference
from valdrix.pricing.terraform import PlanEstimate, PricingError, price_plan

DEFAULT_WAIT = "30m"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

out = Console()
err = Console(stderr=True)


def optional_values(argv: list[str]) -> list[str]:
    """Return argv with a bare `--wait-for-approval` given its default timeout (the option's value is optional)."""
    result = list(argv)
    for i, arg in enumerate(result):
        if arg == "--wait-for-approval" and (i + 1 == len(result) or result[i + 1].startswith("-")):
            result[i] = f"--wait-for-approval={DEFAULT_WAIT}"
    return result


def ci_run_id(env: dict[str, str]) -> str | None:
    """Return a run id stable across retries of one CI job: GitHub run id + job, or GitLab pipeline + job."""
    if env.get("GITHUB_RUN_ID"):
        # Not GITHUB_RUN_ATTEMPT: a re-run attempt must reuse the key and meet the same decision.
        return f"gh-{env['GITHUB_RUN_ID']}-{env.get('GITHUB_JOB') or 'job'}"
    if env.get("CI_PIPELINE_ID"):
        return f"gl-{env['CI_PIPELINE_ID']}-{env.get('CI_JOB_NAME') or 'job'}"
    return None


def ci_run_url(env: dict[str, str]) -> str | None:
    """Return the CI run's web address for reviewers, when the CI system exposes it."""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return env.get("CI_PIPELINE_URL") or None


def idempotency_key(project: str, environment: str, run_id: str, stage: str) -> str:
    """Return the key of one planned change: the same for every retry of the run and stage."""
    key = f"tf:{project}:{environment}:{run_id}:{stage}"
    return key if len(key) <= 128 else "tf:" + sha256_hex([project, environment, run_id, stage])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path, what: str) -> Any:
    """Return the parsed JSON document at `path`; raise PricingError with a readable reason."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except OSError as exc:
        raise PricingError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except (ValueError, RecursionError) as exc:
        raise PricingError(f"{what} {path} is not JSON: {exc}") from exc


def _estimate(plan: Path | None, infracost: Path | None, monthly_delta: str | None,
              hourly_delta: str | None) -> tuple[PlanEstimate | None, str | None, Decimal, Decimal]:
    """Return (estimate, change digest, monthly delta, hourly delta) from exactly one pricing input."""
    given = [x for x in (plan, infracost, monthly_delta) if x is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --plan, --infracost or --monthly-delta")
    if plan is not None:
        document = read_json(plan, "plan")
        estimate = price_plan(document)
        return estimate, change_digest(document), estimate.monthly_delta_usd, estimate.hourly_delta_usd
    if infracost is not None:
        estimate = read_infracost(read_json(infracost, "Infracost output"))
        digest = sha256_hex([[r.address, r.action, str(r.monthly_delta_usd)] for r in estimate.resources])
        return estimate, digest, estimate.monthly_delta_usd, estimate.hourly_delta_usd
    try:
        amount = monthly(parse_amount(monthly_delta))
        rate = hourly(parse_amount(hourly_delta)) if hourly_delta is not None else hourly(amount / HOURS_PER_MONTH)
    except ValueError as exc:
        raise typer.BadParameter(f"--monthly-delta/--hourly-delta: {exc}") from exc
    if amount < 0 or rate < 0:
        raise typer.BadParameter("--monthly-delta/--hourly-delta must not be negative")
    return None, None, amount, rate


def preflight(
    plan: Path | None = typer.Option(None, "--plan", help="`terraform show -json` output to price."),
    infracost: Path | None = typer.Option(None, "--infracost", help="Infracost JSON (breakdown or diff) to use."),
    monthly_delta: str | None = typer.Option(None, "--monthly-delta", help="Monthly cost delta in USD."),
    hourly_delta: str | None = typer.Option(None, "--hourly-delta", help="Hourly delta (default monthly/730)."),
    server: str = typer.Option(..., "--server", envvar="VALDRIX_SERVER", help="Gate URL (env VALDRIX_SERVER)."),
    project: str = typer.Option("default", "--project", help="Project id (the budget scope)."),
    environment: str = typer.Option("nonprod", "--environment", help="Environment, e.g. prod or nonprod."),
    resource_ref: str | None = typer.Option(None, "--resource-ref", help="Resource reference (default: "
                                            "directory name and the changed addresses, costliest first)."),
    run_id: str | None = typer.Option(None, "--run-id", help="Run id (default from GitHub Actions: "
                                      "GITHUB_RUN_ID+GITHUB_JOB; GitLab CI: CI_PIPELINE_ID+CI_JOB_NAME)."),
    stage: str = typer.Option("pre_apply", "--stage", help="Stage of the run this decision is for."),
    state_file: Path | None = typer.Option(None, "--state-file", help="Where the continuation is kept "
                                           "(default .valdrix/preflight-<run>-<stage>.json)."),
    wait: str | None = typer.Option(None, "--wait-for-approval", metavar="[TIMEOUT]",
                                    help=f"Wait for a reviewer, then collect and consume the token "
                                         f"(default {DEFAULT_WAIT}; e.g. 90s, 30m, 2h)."),
    poll: float = typer.Option(5.0, "--poll-interval", min=0.05, help="Seconds between approval checks."),
    retries: int = typer.Option(3, "--retries", min=0, max=10, help="Retries on transport errors/503."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate without reserving budget or saving state."),
) -> None:
    """Ask the gate whether a planned Terraform change may be applied; exit 0 only if it may."""
    api_key = os.environ.get("VALDRIX_API_KEY", "").strip()
    env = dict(os.environ)
    report: dict[str, Any] = {}
    try:
        if not api_key:
            raise typer.BadParameter("set VALDRIX_API_KEY to the pipeline's API key")
        timeout = parse_duration(wait) if wait is not None else 0.0
        run = run_id or ci_run_id(env)
        if not run:
            raise typer.BadParameter("--run-id is required outside GitHub Actions and GitLab CI")
        estimate, digest, amount, rate = _estimate(plan, infracost, monthly_delta, hourly_delta)
    except (typer.BadParameter, ValueError, PricingError) as exc:
        _finish(Result(Exit.ERROR, "usage_error", str(exc)), as_json, report)
        return
    report["pricing"] = estimate.breakdown() if estimate is not None else {
        "source": "manual", "monthly_delta_usd": str(amount), "hourly_delta_usd": str(rate)}
    path = state_file or Path(".valdrix") / f"preflight-{_SAFE.sub('_', run)}-{_SAFE.sub('_', stage)}.json"
    report["state_file"] = str(path)
    metadata = request_metadata(estimate, digest) if estimate is not None else {}
    body: dict[str, Any] = {
        "run_id": run, "stage": stage, "project_id": project, "environment": environment,
        "resource_reference": resource_ref or resource_reference(Path.cwd().name or "terraform", estimate),
        # A cost decrease reserves nothing; the signed delta travels in metadata.
        "estimated_monthly_delta_usd": str(max(ZERO, amount)),
        "estimated_hourly_delta_usd": str(max(hourly(0), rate)),
        "metadata": metadata, "dry_run": dry_run,
    }
    if ci_run_url(env):
        body["run_url"] = ci_run_url(env)
    try:
        previous = load_state(path)
        if previous is not None and (previous.run_id, previous.stage, previous.server.rstrip("/")) != (
                run, stage, server.rstrip("/")):
            raise StateError(f"state file {path} belongs to run {previous.run_id!r} stage {previous.stage!r} on "
                             f"{previous.server}; pass another --state-file")
    except StateError as exc:
        _finish(Result(Exit.ERROR, "state_file_unusable", str(exc)), as_json, report)
        return
    key = previous.idempotency_key if previous else idempotency_key(project, environment, run, stage)
    if previous:
        # Runbook §1.1: a retry reuses the key and states which request it expects to be continuing.
        body["expected_request_fingerprint"] = previous.request_fingerprint
    with GateClient(server, api_key, retries=retries) as client:
        result = _run(client, body, key, previous, path, timeout, poll, dry_run, wait is not None, report)
    _finish(result, as_json, report)


def _run(client: GateClient, body: dict[str, Any], key: str, previous: State | None, path: Path, timeout: float,
         poll: float, dry_run: bool, waiting: bool, report: dict[str, Any]) -> Result:
    try:
        response = client.preflight(body, key)
    except ApiError as exc:
        return _preflight_refused(exc, body, previous, path)
    except TransportFailure as exc:
        return Result(Exit.ERROR, "transport_error", str(exc))
    report["preflight"] = response
    decision = str(response.get("decision"))
    if dry_run:
        return _by_decision(decision, response, dry_run=True)
    if response.get("recorded") is False:
        # The gate answered its mode's fail-safe decision without a record (database unavailable): nothing to
        # persist or wait for; a fail-safe escalation cannot be approved, so the job stops and is re-run.
        result = _by_decision(decision, response, dry_run=False)
        if decision == "REQUIRE_APPROVAL":
            return Result(Exit.APPROVAL, "gate_unrecorded", "the gate could not record a decision "
                          f"({', '.join(response.get('reason_codes') or [])}); re-run this job shortly")
        return result
    try:
        state = State(server=client.server, run_id=body["run_id"], stage=body["stage"],
                      project_id=body["project_id"], environment=body["environment"], idempotency_key=key,
                      decision_id=response["decision_id"], decision=decision,
                      request_fingerprint=response["request_fingerprint"],
                      approval_required=bool(response.get("approval_required")),
                      approval_request_id=response.get("approval_request_id"),
                      continuation=Continuation.model_validate(response["continuation"]), saved_at=now_iso())
    except (KeyError, ValueError) as exc:
        return Result(Exit.ERROR, "unexpected_answer", f"the preflight answer lacks the continuation: {exc}")
    if previous is not None and previous.decision_id == state.decision_id:
        state.approval_token, state.token_expires_at = previous.approval_token, previous.token_expires_at
        state.consumed_at = previous.consumed_at
    save_state(path, state)
    if decision != "REQUIRE_APPROVAL":
        return _by_decision(decision, response, dry_run=False)
    if waiting and state.approval_request_id and not state.consumed_at:
        err.print(f"approval required: request {state.approval_request_id}. A reviewer approves with\n"
                  f"  valdrix approve {state.approval_request_id} --notes '…'")
    result = wait_for_approval(client, state, path, timeout, poll, err)
    if not waiting and result.outcome == "approval_timed_out":
        return Result(Exit.APPROVAL, "approval_pending", f"approval {state.approval_request_id} is pending; "
                      f"approve with `valdrix approve {state.approval_request_id}` and re-run this job (or use "
                      "--wait-for-approval)", **result.details)
    return result


def _by_decision(decision: str, response: dict[str, Any], *, dry_run: bool) -> Result:
    reasons = ", ".join(response.get("reason_codes") or []) or "none"
    prefix = "dry run: " if dry_run else ""
    if decision in ("ALLOW", "ALLOW_WITH_CREDITS"):
        return Result(Exit.OK, "allowed", f"{prefix}{decision}: the change may be applied (reasons: {reasons})")
    if decision == "DENY":
        return Result(Exit.DENIED, "denied", f"{prefix}DENY: do not apply (reasons: {reasons})")
    if decision == "REQUIRE_APPROVAL":
        return Result(Exit.APPROVAL, "approval_required", f"{prefix}REQUIRE_APPROVAL (reasons: {reasons})")
    return Result(Exit.ERROR, "unexpected_answer", f"unknown decision {decision!r}")


def _preflight_refused(exc: ApiError, body: dict[str, Any], previous: State | None, path: Path) -> Result:
    if exc.code == "request_fingerprint_mismatch":
        was = str(exc.body.get("expected_request_fingerprint") or "")[:12]
        now = str(exc.body.get("request_fingerprint") or "")[:12]
        return Result(Exit.CONFLICT, "plan_changed",
                      f"the planned change is not the one this run had evaluated (fingerprint {was}… became "
                      f"{now}…; state file {path}). The earlier decision"
                      f"{' and its approval' if previous and previous.approval_required else ''} cannot be "
                      "reused for a different plan. Re-run the pipeline from the start (a new run) or use a new "
                      "--stage to ask the gate about this plan.", error=exc.body)
    if exc.code == "idempotency_key_reused":
        return Result(Exit.CONFLICT, "plan_changed",
                      f"run {body['run_id']!r} stage {body['stage']!r} already asked the gate about a different "
                      "change (same idempotency key, different request — the plan changed since the first "
                      "attempt). The earlier decision cannot be reused for this plan. Re-run the pipeline from the "
                      "start (a new run) or use a new --stage.", error=exc.body)
    return Result(Exit.ERROR, "preflight_refused", explain_api_error(exc), error=exc.body)


def _finish(result: Result, as_json: bool, report: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({"exit_code": int(result.code), "outcome": result.outcome, "message": result.message,
                          **report, **result.details}, indent=2, default=str))
    else:
        render(report, result)
    raise typer.Exit(int(result.code))


_STYLE = {"ALLOW": "green", "ALLOW_WITH_CREDITS": "green", "REQUIRE_APPROVAL": "yellow", "DENY": "red"}


def render(report: dict[str, Any], result: Result) -> None:
    """Print the decision, its reasons and the cost breakdown as tables, then the outcome line."""
    response = report.get("preflight")
    if response:
        decision = str(response.get("decision"))
        table = Table(title="Valdrix preflight", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("Decision", f"[{_STYLE.get(decision, 'white')}]{decision}[/]")
        table.add_row("Reasons", "\n".join(response.get("reason_codes") or []) or "—")
        table.add_row("Mode", f"{response.get('mode')} (policy v{response.get('policy_version')})")
        table.add_row("Run / stage", f"{response.get('run_id')} / {response.get('stage')}")
        table.add_row("Decision id", str(response.get("decision_id")))
        table.add_row("Fingerprint", str(response.get("request_fingerprint")))
        if response.get("approval_request_id"):
            table.add_row("Approval request", str(response["approval_request_id"]))
        if response.get("reservation_active"):
            table.add_row("Reserved", f"${response.get('reserved_allocation_usd')} budget + "
                                      f"${response.get('reserved_credit_usd')} credits")
        table.add_row("State file", str(report.get("state_file")))
        out.print(table)
    pricing = report.get("pricing")
    if pricing:
        _render_costs(pricing)
    colour = {Exit.OK: "green", Exit.DENIED: "red", Exit.APPROVAL: "yellow"}.get(result.code, "red")
    out.print(f"[{colour}]exit {int(result.code)} ({result.outcome})[/]: {result.message}")


def _render_costs(pricing: dict[str, Any]) -> None:
    resources = [r for r in pricing.get("resources") or [] if r.get("kind") != "free"]
    resources.sort(key=lambda r: (-abs(Decimal(r["monthly_delta_usd"])), r.get("kind") != "unpriced", r["address"]))
    table = Table(title=f"Cost change ({pricing.get('source')}): ${pricing.get('monthly_delta_usd')}/month, "
                        f"${pricing.get('hourly_delta_usd')}/hour", title_justify="left")
    table.add_column("Resource", overflow="fold")
    table.add_column("Action")
    for column in ("Before/mo", "After/mo", "Δ/mo"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("Note", max_width=48)
    for r in resources[:TOP_RESOURCES]:
        delta = Decimal(r["monthly_delta_usd"])
        style = "red" if delta > 0 else "green" if delta < 0 else ""
        note = {"unpriced": "[yellow]UNPRICED[/]: " + clip("; ".join(r["notes"]), 80),
                "usage_based": "usage-based, not priced"}.get(r.get("kind", ""), "")
        table.add_row(r["address"], r["action"], r.get("before_monthly_usd") or "—",
                      r.get("after_monthly_usd") or "—", f"[{style}]{delta}[/]" if style else str(delta), note)
    if len(resources) > TOP_RESOURCES:
        table.add_row(f"… {len(resources) - TOP_RESOURCES} more", "", "", "", "", "")
    counts = pricing.get("counts") or {}
    if counts.get("free"):
        table.caption = f"{counts['free']} resource(s) without a cost not shown"
    if resources:
        out.print(table)
