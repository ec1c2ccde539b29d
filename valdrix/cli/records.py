"""The recorded decisions and approvals from a terminal: `valdrix decisions list|show|explain` and
`valdrix approvals list|show|revoke`, the console's views as tables.

Client commands: they talk to a running gate (`--server` / VALDRIX_SERVER, `--api-key` / VALDRIX_API_KEY) and
print tables that stay legible at 80 columns, or the API's JSON with `--json`.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from valdrix.client import ApiError, GateClient, TransportFailure

out = Console()
err = Console(stderr=True)

SERVER = typer.Option(..., "--server", envvar="VALDRIX_SERVER", help="Gate URL (env VALDRIX_SERVER).")
API_KEY = typer.Option(..., "--api-key", envvar="VALDRIX_API_KEY", help="API key (env VALDRIX_API_KEY).",
                       show_default=False)
JSON = typer.Option(False, "--json", help="Print the API answer as JSON.")
LIMIT = typer.Option(20, "--limit", min=1, max=200, help="How many rows.")
PROJECT = typer.Option(None, "--project", help="Only this project.")
ENVIRONMENT = typer.Option(None, "--environment", help="Only this environment.")

decisions = typer.Typer(no_args_is_help=True, add_completion=False, help="Search and explain decisions.")
approvals = typer.Typer(no_args_is_help=True, add_completion=False, help="The approval queue and its history.")


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error[/red]: {message}")
    raise typer.Exit(1)


def _get(server: str, api_key: str, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    with GateClient(server, api_key) as client:
        try:
            return client.read(path, params)
        except ApiError as exc:
            _fail(f"{exc.code}: {exc.detail}")
        except TransportFailure as exc:
            _fail(str(exc))


def _usd(value: Any) -> str:
    try:
        return f"${Decimal(str(value)):,.2f}"
    except (InvalidOperation, ValueError):
        return str(value)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in ("$/month", "Waiting") else "left",
                         overflow="fold")
    return table


def _print(doc: dict[str, Any], as_json: bool, render: Any) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc)


@decisions.command("list")
def list_decisions(server: str = SERVER, api_key: str = API_KEY, project: str | None = PROJECT,
                   environment: str | None = ENVIRONMENT,
                   source: str | None = typer.Option(None, "--source", help="terraform, k8s_admission, cloud_event."),
                   outcome: str | None = typer.Option(None, "--decision", help="ALLOW, ALLOW_WITH_CREDITS, "
                                                      "REQUIRE_APPROVAL or DENY."),
                   since: str | None = typer.Option(None, "--since", help="From this time (ISO 8601)."),
                   until: str | None = typer.Option(None, "--until", help="Before this time (ISO 8601)."),
                   limit: int = LIMIT, as_json: bool = JSON) -> None:
    """List decisions, newest first."""
    doc = _get(server, api_key, "/decisions", {
        "project_id": project or "", "environment": environment or "", "source": source or "",
        "decision": outcome or "", "since": since or "", "until": until or "", "limit": str(limit)})

    def render(body: dict[str, Any]) -> None:
        table = _table("When (UTC)", "Decision", "$/month", "Project", "Env", "Id")
        for d in body["items"]:
            table.add_row(d["created_at"][:16].replace("T", " "), d["decision"],
                          _usd(d["estimated_monthly_delta_usd"]), d["project_id"], d["environment"],
                          d["decision_id"][:8])
        out.print(table if body["items"] else "no decisions match")

    _print(doc, as_json, render)


@decisions.command("show")
def show_decision(decision_id: str = typer.Argument(..., help="Decision id."), server: str = SERVER,
                  api_key: str = API_KEY, as_json: bool = JSON) -> None:
    """Show one decision as stored."""
    doc = _get(server, api_key, f"/decisions/{decision_id}")

    def render(d: dict[str, Any]) -> None:
        for label, value in (("Decision", d["decision"]), ("Id", d["decision_id"]),
                             ("Source", d.get("source")), ("Project", d.get("project_id")),
                             ("Environment", d.get("environment")), ("Resource", d.get("resource_reference")),
                             ("Amount", f"{_usd(d.get('estimated_monthly_delta_usd'))}/month"),
                             ("Reasons", ", ".join(d.get("reason_codes") or []) or "none"),
                             ("Policy", f"v{d.get('policy_version')} {str(d.get('policy_sha256'))[:16]}…"),
                             ("Approval", d.get("approval_request_id") or "none"), ("When", d.get("created_at"))):
            out.print(f"[bold]{label:12}[/bold] {value}")

    _print(doc, as_json, render)


@decisions.command("explain")
def explain_decision(decision_id: str = typer.Argument(..., help="Decision id."), server: str = SERVER,
                     api_key: str = API_KEY, as_json: bool = JSON) -> None:
    """Explain a decision in words: each reason, each waterfall stage, the figures used (as the console does)."""
    doc = _get(server, api_key, f"/decisions/{decision_id}/explanation")

    def render(x: dict[str, Any]) -> None:
        out.print(x["summary"], "\n")
        for title, rows in (("Reasons", x["reasons"]), ("Entitlement waterfall", x["waterfall"]),
                            ("Figures used", x["figures"])):
            if not rows:
                continue
            out.print(f"[bold]{title}[/bold]")
            table = _table("", "")
            table.show_header = False
            for row in rows:
                table.add_row(row["label"], row["text"])
            out.print(table, "")
        out.print(f"[bold]Policy[/bold] {x['policy_sha256']}")

    _print(doc, as_json, render)


@approvals.command("list")
def list_approvals(server: str = SERVER, api_key: str = API_KEY,
                   status: str | None = typer.Option(None, "--status", help="pending, approved, consumed, denied, "
                                                     "expired or revoked."),
                   project: str | None = PROJECT, environment: str | None = ENVIRONMENT, limit: int = LIMIT,
                   as_json: bool = JSON) -> None:
    """List approvals, newest first (`--status pending` for what waits)."""
    doc = _get(server, api_key, "/approvals", {"status": status or "", "project_id": project or "",
                                               "environment": environment or "", "limit": str(limit)})

    def render(body: dict[str, Any]) -> None:
        table = _table("Requested (UTC)", "Status", "$/month", "Project", "Env", "Id")
        for a in body["items"]:
            state = "consumed" if a.get("token_consumed_at") else a["status"]
            table.add_row(a["created_at"][:16].replace("T", " "), state,
                          _usd(a["decision"]["estimated_monthly_delta_usd"]), a["decision"]["project_id"],
                          a["decision"]["environment"], a["approval_id"][:8])
        out.print(table if body["items"] else "no approvals match")

    _print(doc, as_json, render)


@approvals.command("show")
def show_approval(approval_id: str = typer.Argument(..., help="Approval request id."), server: str = SERVER,
                  api_key: str = API_KEY, as_json: bool = JSON) -> None:
    """Show one approval: status, routing, expiry and its decision."""
    doc = _get(server, api_key, f"/approvals/{approval_id}")

    def render(a: dict[str, Any]) -> None:
        d = a["decision"]
        for label, value in (("Status", "consumed" if a.get("token_consumed_at") else a["status"]),
                             ("Id", a["approval_id"]), ("Decision", f"{d['decision']} {a['decision_id']}"),
                             ("Project", d["project_id"]), ("Environment", d["environment"]),
                             ("Amount", f"{_usd(d['estimated_monthly_delta_usd'])}/month"),
                             ("Reasons", ", ".join(d["reason_codes"]) or "none"),
                             ("Routed by", f"{a['routing_rule_id']} (needs {a['required_permission']})"),
                             ("Expires", a["expires_at"]), ("Notes", a.get("review_notes") or "")):
            out.print(f"[bold]{label:12}[/bold] {value}")

    _print(doc, as_json, render)


@approvals.command("revoke")
def revoke_approval(approval_id: str = typer.Argument(..., help="Approval request id."),
                    notes: str | None = typer.Option(None, "--notes", help="Why; recorded with the approval."),
                    server: str = SERVER, api_key: str = API_KEY) -> None:
    """Revoke an approved approval whose token was not used: the token is refused, the reservation released."""
    with GateClient(server, api_key, retries=0) as client:
        try:
            client.revoke(approval_id, notes)
        except ApiError as exc:
            _fail(f"{exc.code}: {exc.detail}")
        except TransportFailure as exc:
            _fail(str(exc))
    err.print(f"approval {approval_id} revoked")
