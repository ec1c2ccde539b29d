"""`valdrix preflight`: price a Terraform change, ask the gate, persist the continuation, optionally wait.

Exit codes: `continuation.Exit`, listed in `valdrix preflight --help` and docs/ci.md.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from valdrix.cli import DEFAULT_WAIT

if TYPE_CHECKING:
    from collections.abc import Callable
    from decimal import Decimal

    from valdrix.canonical import Scheme
    from valdrix.cli.continuation import Result, State
    from valdrix.client import ApiError, GateClient
    from valdrix.pricing.terraform import PlanEstimate

    # The change digest of one pricing input, by the canonical-JSON scheme it is hashed with.
    Digest = Callable[[Scheme], str]

# The heavy modules (pydantic models, httpx, the price catalogue, rich, even hashlib and decimal) are imported
# where they are used, so `valdrix preflight --help` answers without loading them.

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")



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
    from valdrix.canonical import sha256_hex

    key = f"tf:{project}:{environment}:{run_id}:{stage}"
    return key if len(key) <= 128 else "tf:" + sha256_hex([project, environment, run_id, stage])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: Path, what: str) -> Any:
    """Return the parsed JSON document at `path`; raise PricingError with a readable reason."""
    from valdrix.pricing.terraform import PricingError

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except OSError as exc:
        raise PricingError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except (ValueError, RecursionError) as exc:
        raise PricingError(f"{what} {path} is not JSON: {exc}") from exc


def current_scheme() -> Scheme:
    """Return the canonical-JSON scheme a new run hashes its change digest with (a retry keeps its run's)."""
    from valdrix.canonical import SCHEME

    return SCHEME


def fx_rates(raw: list[str]) -> dict[str, Decimal]:
    """Return {currency: USD per unit} from `CUR=RATE` arguments; raise ValueError on a malformed one."""
    from valdrix.money import parse_amount

    rates: dict[str, Decimal] = {}
    for item in raw:
        currency, _, rate = item.partition("=")
        if not re.fullmatch(r"[A-Za-z]{3}", currency.strip()):
            raise ValueError(f"--fx-rate {item!r}: expected CUR=RATE, e.g. EUR=1.08 (USD per EUR)")
        value = parse_amount(rate.strip())
        if value <= 0:
            raise ValueError(f"--fx-rate {item!r}: the rate must be positive")
        rates[currency.strip().upper()] = value
    return rates


def _estimate(plan: Path | None, infracost: Path | None, monthly_delta: str | None, hourly_delta: str | None,
              rates: dict[str, Decimal]) -> tuple[PlanEstimate | None, Digest | None, Decimal, Decimal]:
    """Return (estimate, change digest by scheme, monthly delta, hourly delta) from exactly one pricing input."""
    from valdrix.money import HOURS_PER_MONTH, hourly, monthly, parse_money

    given = [x for x in (plan, infracost, monthly_delta) if x is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --plan, --infracost or --monthly-delta")
    if plan is not None:
        from valdrix.pricing.summary import change_digest
        from valdrix.pricing.terraform import price_plan

        document = read_json(plan, "plan")
        estimate = price_plan(document)
        return (estimate, lambda scheme: change_digest(document, scheme), estimate.monthly_delta_usd,
                estimate.hourly_delta_usd)
    if infracost is not None:
        from valdrix.canonical import sha256_hex
        from valdrix.pricing.infracost import read_infracost

        estimate = read_infracost(read_json(infracost, "Infracost output"), rates)
        changes = [[r.address, r.action, str(r.monthly_delta_usd)] for r in estimate.resources]
        return (estimate, lambda scheme: sha256_hex(changes, scheme), estimate.monthly_delta_usd,
                estimate.hourly_delta_usd)
    assert monthly_delta is not None  # exactly one input was given, and it was neither file
    try:
        amount = monthly(parse_money(monthly_delta))
        rate = hourly(parse_money(hourly_delta)) if hourly_delta is not None else hourly(amount / HOURS_PER_MONTH)
    except ValueError as exc:
        raise typer.BadParameter(f"--monthly-delta/--hourly-delta: {exc}") from exc
    if amount < 0 or rate < 0:
        raise typer.BadParameter("--monthly-delta/--hourly-delta must not be negative")
    return None, None, amount, rate


FORMATS = ("table", "json", "markdown")


def preflight(
    plan: Path | None = typer.Option(None, "--plan", help="`terraform show -json` output to price."),
    infracost: Path | None = typer.Option(None, "--infracost", help="Infracost JSON (breakdown or diff) to use."),
    monthly_delta: str | None = typer.Option(None, "--monthly-delta", help="Monthly cost delta in USD."),
    hourly_delta: str | None = typer.Option(None, "--hourly-delta", help="Hourly delta (default monthly/730)."),
    fx_rate: list[str] = typer.Option([], "--fx-rate", metavar="CUR=RATE",
                                      help="USD per unit of a currency Infracost priced in, e.g. EUR=1.08 "
                                           "(repeatable); other currencies are refused."),
    server: str = typer.Option(..., "--server", envvar="VALDRIX_SERVER", help="Gate URL (env VALDRIX_SERVER)."),
    key: str | None = typer.Option(None, "--api-key", envvar="VALDRIX_API_KEY", show_default=False,
                                   help="The pipeline's API key (env VALDRIX_API_KEY)."),
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
    output: str = typer.Option("table", "--format", metavar="table|json|markdown",
                               help="table (terminal), json (one document) or markdown (a PR/MR comment). In "
                                    "GitHub Actions the Markdown also goes to $GITHUB_STEP_SUMMARY."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate without reserving budget or saving state."),
) -> None:
    """Ask the gate whether a planned Terraform change may be applied; exit 0 only if it may.

    Exit codes: 0 allowed, or approved and the token consumed: apply.

    1 usage, input, authentication or transport error: fix and re-run.

    2 denied: do not apply.

    3 approval pending (no --wait-for-approval), still pending at the timeout, denied or expired: re-run later.

    4 the approval token was refused (replayed, expired, other binding): hard stop, never apply.

    5 the plan differs from the one this run already had evaluated: start a new run.
    """
    from valdrix.cli.continuation import Exit, Result, StateError, load_state, parse_duration
    from valdrix.money import ZERO, hourly
    from valdrix.pricing.terraform import PricingError

    api_key = (key or "").strip()
    env = dict(os.environ)
    report: dict[str, Any] = {}
    fmt = "json" if as_json else output
    scope = {"project": project, "environment": environment, "stage": stage}
    try:
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        if not api_key:
            raise typer.BadParameter("give --api-key or set VALDRIX_API_KEY to the pipeline's API key")
        timeout = parse_duration(wait) if wait is not None else 0.0
        run = run_id or ci_run_id(env)
        if not run:
            raise typer.BadParameter("--run-id is required outside GitHub Actions and GitLab CI")
        estimate, digest, amount, rate = _estimate(plan, infracost, monthly_delta, hourly_delta, fx_rates(fx_rate))
    except (typer.BadParameter, ValueError, PricingError) as exc:
        _finish(Result(Exit.ERROR, "usage_error", str(exc)), fmt if fmt in FORMATS else "table", report, server,
                scope)
        return
    report["pricing"] = estimate.breakdown() if estimate is not None else {
        "source": "manual", "monthly_delta_usd": str(amount), "hourly_delta_usd": str(rate)}
    path = state_file or Path(".valdrix") / f"preflight-{_SAFE.sub('_', run)}-{_SAFE.sub('_', stage)}.json"
    report["state_file"] = str(path)
    from valdrix.pricing.summary import request_metadata, resource_reference

    try:
        previous = load_state(path)
        if previous is not None and (previous.run_id, previous.stage, previous.server.rstrip("/")) != (
                run, stage, server.rstrip("/")):
            raise StateError(f"state file {path} belongs to run {previous.run_id!r} stage {previous.stage!r} on "
                             f"{previous.server}; pass another --state-file")
    except StateError as exc:
        _finish(Result(Exit.ERROR, "state_file_unusable", str(exc)), fmt, report, server, scope)
        return
    # A retry hashes its change digest as its first run did, so an unchanged plan sends the same request.
    scheme = previous.canonicalization if previous else current_scheme()
    metadata = request_metadata(estimate, digest(scheme) if digest else None) if estimate is not None else {}
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
    key = previous.idempotency_key if previous else idempotency_key(project, environment, run, stage)
    if previous:
        # Runbook §1.1: a retry reuses the key and states which request it expects to be continuing.
        body["expected_request_fingerprint"] = previous.request_fingerprint
    from valdrix.client import GateClient

    with GateClient(server, api_key, retries=retries) as client:
        result = _run(client, body, key, previous, path, timeout, poll, dry_run, wait is not None, report)
    _finish(result, fmt, report, server, scope)


def _run(client: GateClient, body: dict[str, Any], key: str, previous: State | None, path: Path, timeout: float,
         poll: float, dry_run: bool, waiting: bool, report: dict[str, Any]) -> Result:
    from rich.console import Console

    from valdrix.cli.continuation import (
        Continuation,
        Exit,
        Result,
        State,
        now_iso,
        save_state,
        wait_for_approval,
    )
    from valdrix.client import ApiError, TransportFailure

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
                      canonicalization=previous.canonicalization if previous else current_scheme(),
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
    err = Console(stderr=True)
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
    from valdrix.cli.continuation import Exit, Result
    from valdrix.cli.report import limits

    reasons = ", ".join(response.get("reason_codes") or []) or "none"
    prefix = "dry run: " if dry_run else ""
    if decision in ("ALLOW", "ALLOW_WITH_CREDITS"):
        return Result(Exit.OK, "allowed", f"{prefix}{decision}: the change may be applied (reasons: {reasons})")
    if decision == "DENY":
        measured = "; ".join(f"{label} {text}" for label, text in limits(response))
        return Result(Exit.DENIED, "denied", f"{prefix}DENY: do not apply (reasons: {reasons})"
                      + (f"; {measured}" if measured else ""))
    if decision == "REQUIRE_APPROVAL":
        return Result(Exit.APPROVAL, "approval_required", f"{prefix}REQUIRE_APPROVAL (reasons: {reasons})")
    return Result(Exit.ERROR, "unexpected_answer", f"unknown decision {decision!r}")


def _preflight_refused(exc: ApiError, body: dict[str, Any], previous: State | None, path: Path) -> Result:
    from valdrix.cli.continuation import Exit, Result, explain_api_error

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


def _finish(result: Result, fmt: str, report: dict[str, Any], server: str, scope: dict[str, str]) -> None:
    from valdrix.cli import report as reports

    if fmt == "json":
        print(json.dumps({"exit_code": int(result.code), "outcome": result.outcome, "message": result.message,
                          **report, **result.details}, indent=2, default=str))
    elif fmt == "markdown":
        print(reports.markdown(report, result, server, scope), end="")
    else:
        reports.render(report, result, server)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        # GitHub Actions shows this file on the run's page; every step appends its own part.
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(reports.markdown(report, result, server, scope) + "\n")
    raise typer.Exit(int(result.code))
