"""The pipeline side of runbook §1: the persisted preflight state, exit codes, waiting, token pickup, consume.

The state file is what lets a retried pipeline job continue safely: it keeps the idempotency key, the
request fingerprint and the consume binding of the first answer, and, once collected, the one-time approval
token, so a retry that lost its process can still consume instead of being stranded.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from valdrix.canonical import LEGACY_SCHEME, Scheme
from valdrix.client import CONSUME_ENDPOINT, ApiError, GateClient, TransportFailure


class Exit(IntEnum):
    """Process exit codes of `valdrix preflight` and `valdrix consume` (documented in docs/ci.md)."""

    OK = 0  # allowed, or approved and the token consumed
    ERROR = 1  # usage, input, authentication or transport error
    DENIED = 2  # the gate denied the change
    APPROVAL = 3  # approval pending, timed out, expired or denied by a reviewer
    CONSUME_REFUSED = 4  # the approval token could not be collected or consumed: hard stop (runbook §3.2)
    CONFLICT = 5  # the planned change differs from the one this run already had evaluated (409)


class Binding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_source: str
    expected_project_id: str
    expected_environment: str
    expected_request_fingerprint: str
    expected_resource_reference: str


class Continuation(BaseModel):
    # A path on the gate server: an absolute URL would send the API key and the token to another host.
    approval_consume_endpoint: str = Field(default=CONSUME_ENDPOINT, pattern=r"^/[A-Za-z0-9/_.-]*$")
    binding: Binding


class State(BaseModel):
    """What a pipeline persists after preflight (runbook §1.1), plus the token and consume progress."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["valdrix.preflight.state.v1"] = "valdrix.preflight.state.v1"
    server: str
    run_id: str
    stage: str
    project_id: str
    environment: str
    idempotency_key: str
    decision_id: str
    decision: str
    request_fingerprint: str
    # The canonical JSON the change digest in the request was hashed with; a state file written before
    # RFC 8785 has none, and its retries keep hashing the legacy way so they send the same request.
    canonicalization: Scheme = LEGACY_SCHEME
    approval_required: bool
    approval_request_id: str | None = None
    continuation: Continuation
    saved_at: str
    approval_token: str | None = Field(default=None, repr=False)
    token_expires_at: str | None = None
    # Saved before the first consume call: a re-run repeats the consume with it and gets the first answer.
    consume_idempotency_key: str | None = None
    consumed_at: str | None = None


class StateError(Exception):
    """The state file cannot be read or does not belong to this run."""


def load_state(path: Path) -> State | None:
    """Return the state saved at `path`, None if there is none; raise StateError if it is unreadable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from exc
    try:
        return State.model_validate_json(raw)
    except ValidationError as exc:
        raise StateError(f"state file {path} is not a valdrix preflight state: {exc.errors()[0]['msg']}") from exc


def save_state(path: Path, state: State) -> None:
    """Write the state atomically, readable by the owner only (it may hold an approval token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(state.model_dump_json(indent=2))
        handle.write("\n")
    os.replace(tmp, path)


def now_iso() -> str:
    """Return the current UTC time for the state file's bookkeeping fields."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_duration(raw: str) -> float:
    """Return seconds for `90`, `90s`, `30m`, `2h` or `1h30m`; raise ValueError otherwise."""
    text = raw.strip().lower()
    if not text:
        raise ValueError("empty duration")
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, number = 0.0, ""
    units = {"s": 1, "m": 60, "h": 3600}
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise ValueError(f"not a duration: {raw!r} (use e.g. 90s, 30m, 2h)")
    if number:
        raise ValueError(f"not a duration: {raw!r} (a number needs a unit after another unit)")
    return total


class Result:
    """The outcome of a command: exit code, one-line message and details for `--json`."""

    def __init__(self, code: Exit, outcome: str, message: str, **details: Any) -> None:
        self.code = code
        self.outcome = outcome
        self.message = message
        self.details = details


def explain_api_error(exc: ApiError) -> str:
    """Return a human explanation of an API error the pipeline cannot recover from by itself."""
    hints = {
        401: "the API key (VALDRIX_API_KEY) or the approval token was not accepted",
        403: "the API key may not do this (another tenant, or a missing approval permission)",
        404: "no such object for this API key's tenant",
    }
    hint = hints.get(exc.status)
    return f"{exc.detail} [{exc.status} {exc.code}]" + (f" — {hint}" if hint else "")


_CONSUME_HINTS = {
    401: "the token is not authentic, malformed or expired",
    403: "the token belongs to another tenant",
    409: "the token was already used, the approval is no longer usable, or the binding does not match "
         "the approved request",
}


def consume(client: GateClient, state: State, path: Path | None, err: Console) -> Result:
    """Collect the approval token (unless already held) and consume it with the persisted binding."""
    if state.consumed_at:
        # Recorded only after the server confirmed the consume for this exact binding (same fingerprint).
        return Result(Exit.OK, "already_consumed", f"approval {state.approval_request_id} was already consumed for "
                      f"this exact change at {state.consumed_at}", consumed_at=state.consumed_at)
    if not state.approval_request_id:
        return Result(Exit.APPROVAL, "no_approval_request", "the decision requires approval but the server "
                      "opened no approval request; ask an operator")
    if not state.approval_token:
        try:
            pickup = client.pickup_token(state.approval_request_id)
        except ApiError as exc:
            if exc.code in ("approval_not_approved", "approval_expired"):
                return Result(Exit.APPROVAL, exc.code, f"the approval cannot be used yet or any more: {exc.detail}",
                              error=exc.body)
            if exc.status == 409:
                return Result(Exit.CONSUME_REFUSED, "token_unavailable",
                              f"the approval token cannot be collected: {exc.detail} [{exc.code}]. It is handed "
                              "out once; if an earlier attempt collected it and lost its state file, this run "
                              "cannot continue. Hard stop: start a new pipeline run.", error=exc.body)
            return Result(Exit.ERROR, "token_pickup_failed", explain_api_error(exc), error=exc.body)
        except TransportFailure as exc:
            return Result(Exit.ERROR, "transport_error", f"{exc}. If the token was handed out but the answer lost, "
                          "it cannot be collected again: the re-run stops with exit 4.")
        token = pickup.get("approval_token")
        if not isinstance(token, str) or not token:
            return Result(Exit.ERROR, "token_pickup_failed", "the token pickup answer carries no approval_token")
        state.approval_token = token
        state.token_expires_at = str(pickup.get("token_expires_at") or "") or None
        if path is not None:
            save_state(path, state)
        err.print(f"collected the approval token (expires {state.token_expires_at or 'unknown'})")
    return consume_token(client, state.approval_token, state.continuation, state, path)


def consume_token(client: GateClient, token: str, continuation: Continuation, state: State | None,
                  path: Path | None) -> Result:
    """Consume `token` against `continuation.binding`; a refusal is a hard stop (runbook §3.2)."""
    binding = continuation.binding.model_dump()
    key = (state.consume_idempotency_key if state is not None else None) or f"consume-{uuid.uuid4().hex}"
    if state is not None and state.consume_idempotency_key != key:
        state.consume_idempotency_key = key
        if path is not None:
            save_state(path, state)  # before the call: the key must outlive a lost answer and this process
    try:
        body = client.consume(continuation.approval_consume_endpoint, token, binding, key)
    except ApiError as exc:
        hint = _CONSUME_HINTS.get(exc.status)
        if exc.status in _CONSUME_HINTS:
            return Result(Exit.CONSUME_REFUSED, "consume_refused",
                          f"approval token refused: {exc.detail} [{exc.status} {exc.code}] — {hint}. "
                          "Hard stop: do not apply; a stale or foreign token must never be bypassed.",
                          error=exc.body)
        return Result(Exit.ERROR, "consume_failed", explain_api_error(exc), error=exc.body)
    except TransportFailure as exc:
        return Result(Exit.ERROR, "transport_error", f"{exc}. The state file keeps the token and the consume's "
                      "idempotency key; a re-run repeats the consume and gets its answer even if the first one "
                      "reached the server.")
    if state is not None:
        state.consumed_at = str(body.get("consumed_at") or now_iso())
        state.approval_token = None
        if path is not None:
            save_state(path, state)
    return Result(Exit.OK, "consumed", "approval token consumed; the change may be applied", consume=body)


def wait_for_approval(client: GateClient, state: State, path: Path | None, timeout: float, poll: float,
                      err: Console) -> Result:
    """Poll the approval until it is decided or `timeout` seconds pass; consume it when approved."""
    approval_id = state.approval_request_id
    if state.consumed_at:
        return consume(client, state, path, err)
    if not approval_id:
        return Result(Exit.APPROVAL, "no_approval_request", "the decision requires approval but the server "
                      "opened no approval request; ask an operator")
    started = time.monotonic()
    last_status: str | None = None
    last_report = started
    while True:
        try:
            approval = client.approval(approval_id)
        except TransportFailure as exc:
            # Reading is harmless to repeat: ride out an outage until the wait itself runs out.
            err.print(f"[yellow]approval status unavailable, still waiting:[/yellow] {exc}")
            approval = {"status": last_status or "pending"}
        except ApiError as exc:
            return Result(Exit.ERROR, "approval_unreadable", explain_api_error(exc), error=exc.body)
        status = str(approval.get("status"))
        elapsed = time.monotonic() - started
        if status == "approved":
            err.print(f"approval {approval_id} approved after {_clock(elapsed)}")
            return consume(client, state, path, err)
        if status in ("denied", "expired"):
            return Result(Exit.APPROVAL, f"approval_{status}", f"approval {approval_id} was {status}"
                          + (f": {approval['review_notes']}" if approval.get("review_notes") else ""),
                          approval=approval)
        if status != "pending":
            return Result(Exit.ERROR, "approval_unknown_status", f"approval {approval_id} has unknown status "
                          f"{status!r}", approval=approval)
        remaining = timeout - elapsed
        if remaining <= 0:
            return Result(Exit.APPROVAL, "approval_timed_out", f"approval {approval_id} still pending after "
                          f"{_clock(elapsed)}; re-run this job to keep waiting (the decision is reused)",
                          approval=approval)
        if status != last_status or time.monotonic() - last_report >= 30:
            expires = f", request expires {approval['expires_at']}" if approval.get("expires_at") else ""
            err.print(f"waiting for approval {approval_id}: {status}, {_clock(elapsed)} elapsed, "
                      f"{_clock(remaining)} left{expires}")
            last_status, last_report = status, time.monotonic()
        time.sleep(min(poll, remaining))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def read_binding(path: Path) -> Continuation:
    """Return the consume continuation from a state file, a preflight response or a bare binding document."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read binding file {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("continuation"), dict):
        data = data["continuation"]
    if isinstance(data, dict) and "binding" not in data:
        data = {"binding": data}
    try:
        return Continuation.model_validate(data)
    except ValidationError as exc:
        raise StateError(f"binding file {path} has no usable binding: {exc.errors()[0]['msg']}") from exc
