"""`valdrix policy simulate|render`: what a candidate policy would have decided, and the policy's portable rules.

`simulate` talks to a running gate (`--server` / VALDRIX_SERVER) with an admin key in VALDRIX_API_KEY. It prints
a summary readable in 80 columns (or the API answer with `--json`); exits 0 when the simulation ran, 1 otherwise.
`render` prints Kubernetes manifests of the rules that need no database (read from a file, or with the server
installed, from the database).
"""

from __future__ import annotations

import enum
import json
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from valdrix.cli.continuation import explain_api_error
from valdrix.client import ApiError, GateClient, TransportFailure

if TYPE_CHECKING:
    from valdrix.policies.schemas import PolicyDocument

app = typer.Typer(no_args_is_help=True,
                  help="Policies: simulate a candidate against recorded decisions, or render the portable rules.")
out = Console()
err = Console(stderr=True)

SERVER = typer.Option(..., "--server", envvar="VALDRIX_SERVER", help="Gate URL (env VALDRIX_SERVER).")
MAX_WINDOW_DAYS = 90
_WINDOW = re.compile(r"^\s*(\d+)\s*d\s*$", re.IGNORECASE)


def window_days(raw: str) -> int:
    """Return the days of a window written `30d`; raise typer.BadParameter otherwise."""
    match = _WINDOW.match(raw)
    days = int(match.group(1)) if match else 0
    if not 1 <= days <= MAX_WINDOW_DAYS:
        raise typer.BadParameter(f"expected a number of days such as 30d, from 1d to {MAX_WINDOW_DAYS}d")
    return days


def read_candidate(path: Path) -> dict[str, Any]:
    """Return the policy document in `path`: a bare document, or a `GET /policies` answer (its `document`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read a JSON policy from {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("document"), dict):
        data = data["document"]  # a policy document itself has no `document` field
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} does not hold a policy document (a JSON object)")
    return data


@app.command("simulate")
def simulate(
    file: Path = typer.Option(..., "--file", help="Candidate policy document (JSON), or a GET /policies answer."),
    window: str = typer.Option("30d", "--window", help="Days of recorded decisions to replay, e.g. 7d (max 90d)."),
    source: str | None = typer.Option(None, "--source", help="Only decisions of this source."),
    project: str | None = typer.Option(None, "--project", help="Only decisions of this project."),
    environment: str | None = typer.Option(None, "--environment", help="Only decisions of this environment."),
    limit: int = typer.Option(20, "--limit", min=0, max=500, help="Changed decisions listed."),
    server: str = SERVER,
    as_json: bool = typer.Option(False, "--json", help="Print the API answer as JSON."),
    retries: int = typer.Option(3, "--retries", min=0, max=10, help="Retries when the server is unavailable."),
) -> None:
    """Replay recorded decisions under a candidate policy and show what would change; nothing is saved."""
    body: dict[str, Any] = {"policy": read_candidate(file), "window_days": window_days(window), "limit": limit}
    body.update({k: v for k, v in (("source", source), ("project_id", project), ("environment", environment))
                 if v is not None})
    key = os.environ.get("VALDRIX_API_KEY", "").strip()
    if not key:
        err.print("[red]error[/red]: set VALDRIX_API_KEY to an admin API key")
        raise typer.Exit(1)
    with GateClient(server, key, retries=retries, timeout=120) as client:
        try:
            report = client.simulate_policy(body)
        except ApiError as exc:
            err.print(f"[red]error[/red] {exc.code}: {explain_api_error(exc)}")
            raise typer.Exit(1) from exc
        except TransportFailure as exc:
            err.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report, out)


def _usd(value: str) -> str:
    amount = Decimal(value)
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def _signed(value: str) -> str:
    amount = Decimal(value)
    return ("+" if amount > 0 else "") + _usd(value)


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in table.columns[1:]:
        column.justify = "right"
    return table


def render(report: dict[str, Any], console: Console) -> None:
    """Print the simulation report as a few narrow tables."""
    current = report["current_policy"]
    win = report["window"]
    console.print(f"Candidate policy {report['candidate_policy_sha256'][:12]} against version {current['version']} "
                  f"({current['sha256'][:12]})")
    console.print(f"Window {win['start'][:16]} to {win['end'][:16]} UTC ({win['days']} days)"
                  + "".join(f", {k} {v}" for k, v in report["filters"].items() if v))
    not_replayable = report["not_replayable"]
    console.print(f"{report['decisions_evaluated']:,} decisions: {report['replayed']:,} replayed, "
                  f"[bold]{report['changed']:,} changed[/bold], {not_replayable['total']:,} not replayable")
    reserved = report["reserved_usd"]
    console.print(f"Reserved: {_usd(reserved['current'])} → {_usd(reserved['candidate'])} under the candidate "
                  f"({_signed(reserved['change'])})")
    moves = _table("current → candidate", "decisions", title="Outcomes")
    for move in report["transitions"]:
        style = "bold" if move["current"] != move["candidate"] else None
        moves.add_row(f"{move['current']} → {move['candidate']}", f"{move['count']:,}", style=style)
    console.print(moves)
    if not_replayable["total"]:
        missing = _table("not replayable because", "decisions")
        for reason, count in not_replayable["reasons"].items():
            missing.add_row(reason, f"{count:,}")
        console.print(missing)
    for kind in ("projects", "environments"):
        rows = report["most_affected"][kind]
        if rows:
            affected = _table(f"most affected {kind}", "changed", "reserved change")
            for row in rows:
                affected.add_row(row["key"], f"{row['changed']:,}", _signed(row["reserved_change_usd"]))
            console.print(affected)
    if report["changes"]:
        shown = len(report["changes"])
        changes = _table("decision", "$/month", "current → candidate",
                         title=f"Changed decisions ({shown} of {report['changed']:,}, oldest first)")
        changes.columns[2].justify = "left"
        for item in report["changes"]:
            changes.add_row(f"{item['created_at'][:16]}\n{item['source']}\n{item['project_id']}/{item['environment']}",
                            _usd(item["estimated_monthly_delta_usd"]), _change(item["current"], item["candidate"]))
        console.print(changes)
        if report["next_cursor"]:
            console.print(f"… {report['changed'] - shown:,} more: use --json, or --limit up to 500")


def _change(current: dict[str, Any], candidate: dict[str, Any]) -> str:
    """Return the outcome change: decision and reservation, then the candidate's reasons (+ if new) and those it
    drops (-)."""
    def side(outcome: dict[str, Any]) -> str:
        route = f" ({outcome['approval_rule_id']})" if outcome["approval_rule_id"] else ""
        return f"{outcome['decision']}{route} {_usd(outcome['reserved_usd'])}"

    lines = [f"{side(current)} →", f"  {side(candidate)}"]
    lines += [f"{'  ' if r in current['reason_codes'] else '+ '}{r}" for r in candidate["reason_codes"]]
    lines += [f"- {r}" for r in current["reason_codes"] if r not in candidate["reason_codes"]]
    return "\n".join(lines)


class Format(enum.StrEnum):
    validating_admission_policy = "validating-admission-policy"


class Action(enum.StrEnum):
    deny = "Deny"
    warn = "Warn"
    audit = "Audit"


def _from_file(path: Path) -> PolicyDocument:
    import yaml
    from pydantic import ValidationError

    from valdrix.policies.schemas import PolicyDocument

    try:
        return PolicyDocument.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[red]error[/red] cannot read {path}: {exc}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        err.print(f"[red]error[/red] {path} is not a valid policy document:\n{exc}")
        raise typer.Exit(2) from None


@app.command("render")
def render_manifests(
    output_format: Format = typer.Option(..., "--format", help="What to render the policy into."),
    tenant: str | None = typer.Option(None, help="Render this tenant's active policy (read from the database)."),
    file: Path | None = typer.Option(None, help="Render this policy document (JSON or YAML) instead."),
    name: str = typer.Option("valdrix-gate", help="Name of the ValidatingAdmissionPolicy and its binding."),
    action: list[Action] = typer.Option([Action.deny], help="validationActions of the binding (repeatable)."),
    exclude_namespace: list[str] = typer.Option(
        [], help="Namespaces the policy skips besides kube-system, kube-public and kube-node-lease (repeatable)."),
) -> None:
    """Print Kubernetes manifests enforcing the policy's database-free rules inside the API server.

    validating-admission-policy: a ValidatingAdmissionPolicy and binding (Kubernetes >= 1.30) denying, in
    hard-mode environments, objects whose declared valdrix.io/estimated-monthly-delta-usd exceeds
    hard_deny_above_monthly_usd, and (kubernetes.require_project_id) objects without a valdrix.io/project-id.
    Namespace environments come from VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS. Install with the chart:
    --set validatingAdmissionPolicy.enabled=true --set-file validatingAdmissionPolicy.manifests=<this output>.
    """
    import yaml

    from valdrix.portability import engine as portability

    if (tenant is None) == (file is None):
        err.print("[red]error[/red] give exactly one of --tenant or --file")
        raise typer.Exit(2)
    version: int | None = None
    if file is not None:
        document = _from_file(file)
        digest = document.sha256()
    else:
        assert tenant is not None
        # Reading the database needs the server's libraries (pip install 'valdrix[server]').
        from valdrix.auth import service as auth
        from valdrix.cli.session import db_session
        from valdrix.policies import service as policies

        with db_session() as session:
            active = policies.current(session, auth.get_tenant(session, tenant).id)
        document, version, digest = active.document, active.version, active.sha256
    hard = portability.hard_environment_classes(document)
    if not hard:
        err.print("[yellow]note[/yellow] no environment runs k8s_admission in hard mode: the policy admits "
                      "everything (it enforces hard-mode rules only)")
    manifests = portability.validating_admission_policy(
        document, version=version, sha256=digest, name=name,
        namespace_environments=_namespace_environments(),
        excluded_namespaces=exclude_namespace, actions=[a.value for a in action])
    # JSON-compatible YAML, one document per manifest.
    print(yaml.safe_dump_all(json.loads(json.dumps(manifests)), sort_keys=False, width=100000), end="")


def _namespace_environments() -> dict[str, str]:
    """Return VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS (JSON: namespace → environment), as the server reads it."""
    raw = os.environ.get("VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS", "").strip()
    try:
        value = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise typer.BadParameter(f"VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS is not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise typer.BadParameter("VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS must map namespaces to environments")
    return value
