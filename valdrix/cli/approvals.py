"""`valdrix approve|deny APPROVAL_ID` for reviewers and `valdrix consume` for pipelines and scripts.

All three talk to a running gate (`--server` / VALDRIX_SERVER) with `--api-key` / VALDRIX_API_KEY. `consume`
exits like `valdrix preflight`: 0 consumed, 1 usage/transport error, 3 approval not yet usable, 4 refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from valdrix.cli.continuation import (
    Exit,
    Result,
    StateError,
    consume_token,
    explain_api_error,
    load_state,
    read_binding,
)
from valdrix.cli.continuation import consume as consume_state
from valdrix.client import ApiError, GateClient, TransportFailure

err = Console(stderr=True)

SERVER = typer.Option(..., "--server", envvar="VALDRIX_SERVER", help="Gate URL (env VALDRIX_SERVER).")
NOTES = typer.Option(None, "--notes", help="Why; recorded with the decision.")
JSON = typer.Option(False, "--json", help="Print the API answer as JSON.")
RETRIES = typer.Option(3, "--retries", min=0, max=10, help="Retries when the request was not processed.")


# Optional for click, checked by `_key`: a missing key exits 1 (usage), as the exit codes promise, not click's 2.
API_KEY = typer.Option(None, "--api-key", envvar="VALDRIX_API_KEY", show_default=False,
                       help="API key (env VALDRIX_API_KEY).")


def _key(given: str | None) -> str:
    key = (given or "").strip()
    if not key:
        err.print("[red]error[/red]: give --api-key or set VALDRIX_API_KEY to your API key")
        raise typer.Exit(int(Exit.ERROR))
    return key


def _review(verb: str, approval_id: str, notes: str | None, server: str, key: str | None, as_json: bool,
            retries: int) -> None:
    with GateClient(server, _key(key), retries=retries) as client:
        try:
            body = client.approve(approval_id, notes) if verb == "approve" else client.deny(approval_id, notes)
        except ApiError as exc:
            _exit(Result(Exit.ERROR, f"{verb}_refused", explain_api_error(exc), error=exc.body), as_json)
        except TransportFailure as exc:
            _exit(Result(Exit.ERROR, "transport_error", str(exc)), as_json)
    if as_json:
        print(json.dumps(body, indent=2))
        return
    # The token is not printed: the pipeline that asked collects it itself (POST /approvals/{id}/token).
    until = body.get("token_expires_at")
    expires = f"; the pipeline's token is valid until {until}" if until else ""
    err.print(f"approval {approval_id} {'approved' if verb == 'approve' else 'denied'}{expires}")


def approve(approval_id: str = typer.Argument(..., help="Approval request id."), notes: str | None = NOTES,
            server: str = SERVER, key: str | None = API_KEY, as_json: bool = JSON, retries: int = RETRIES) -> None:
    """Approve a pending approval request (needs the approve:prod or approve:nonprod permission)."""
    _review("approve", approval_id, notes, server, key, as_json, retries)


def deny(approval_id: str = typer.Argument(..., help="Approval request id."), notes: str | None = NOTES,
         server: str = SERVER, key: str | None = API_KEY, as_json: bool = JSON, retries: int = RETRIES) -> None:
    """Deny a pending approval request; the waiting pipeline exits 3."""
    _review("deny", approval_id, notes, server, key, as_json, retries)


def consume(
    state_file: Path | None = typer.Option(None, "--state-file", help="State file written by `valdrix preflight`."),
    token: str | None = typer.Option(None, "--token", envvar="VALDRIX_APPROVAL_TOKEN",
                                     help="Approval token (env VALDRIX_APPROVAL_TOKEN); needs --binding-file."),
    binding_file: Path | None = typer.Option(None, "--binding-file", help="JSON with the binding: a state file, a "
                                             "preflight answer or the bare `continuation.binding` object."),
    server: str = SERVER, key: str | None = API_KEY, as_json: bool = JSON, retries: int = RETRIES,
) -> None:
    """Consume an approval token against the persisted request binding; exit 0 only if the server accepts it."""
    try:
        if (state_file is None) == (token is None):
            raise StateError("give either --state-file, or --token with --binding-file")
        if token is not None and binding_file is None:
            raise StateError("--token needs --binding-file")
        state = load_state(state_file) if state_file is not None else None
        if state_file is not None and state is None:
            raise StateError(f"no state file at {state_file}")
        continuation = read_binding(binding_file) if binding_file is not None else None
    except StateError as exc:
        _exit(Result(Exit.ERROR, "usage_error", str(exc)), as_json)
    with GateClient(server, _key(key), retries=retries) as client:
        if state is not None:
            _exit(consume_state(client, state, state_file, err), as_json)
        if token is not None and continuation is not None:
            _exit(consume_token(client, token, continuation, None, None), as_json)


def _exit(result: Result, as_json: bool) -> NoReturn:
    """Report the result and exit with its code (success included: every command path ends here)."""
    if as_json:
        doc: dict[str, Any] = {"exit_code": int(result.code), "outcome": result.outcome, "message": result.message,
                               **result.details}
        print(json.dumps(doc, indent=2, default=str))
    else:
        colour = "green" if result.code == Exit.OK else "red"
        err.print(f"[{colour}]exit {int(result.code)} ({result.outcome})[/]: {result.message}")
    raise typer.Exit(int(result.code))

