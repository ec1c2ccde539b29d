"""HTTP client for the enforcement API as the CLI uses it: bearer auth, bounded retries, problem-JSON errors.

Retries back off exponentially (with jitter, honouring `Retry-After`) and are bounded by `retries`. What is
retried depends on whether repeating the request is harmless:

- idempotent requests (GET, and the preflight and consume, which carry an idempotency key) are retried on
  any transport error and on 502/503/504;
- one-shot requests (approve, deny, token pickup) only when the request cannot have been processed: the
  connection was never made, or the API answered 503 (its transaction was rolled back). Repeating a token
  pickup whose first answer was lost would turn a success into a 409.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

API = "/api/v1/enforcement"
# Where a continuation without its own endpoint consumes its token (the server names it in every continuation).
CONSUME_ENDPOINT = f"{API}/approvals/consume"
_RETRY_ALWAYS = {503}
_RETRY_IDEMPOTENT = {502, 503, 504}
MAX_BACKOFF_SECONDS = 8.0


class ApiError(Exception):
    """The API answered with an error status; `code` is its stable problem code."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class TransportFailure(Exception):
    """The API could not be reached (or kept answering 5xx) within the retry budget."""


class GateClient:
    """A session against one Valdrix server with one API key."""

    def __init__(self, server: str, api_key: str, *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self.server = server.rstrip("/")
        self.retries = max(0, retries)
        self.backoff = backoff
        self._http = httpx.Client(base_url=self.server, timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}",
                                           "User-Agent": "valdrix-cli"})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> GateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def preflight(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Return the preflight decision; raise ApiError or TransportFailure."""
        return self._call("POST", f"{API}/gate/terraform/preflight", body, idempotent=True,
                          headers={"Idempotency-Key": idempotency_key})

    def approval(self, approval_id: str) -> dict[str, Any]:
        """Return the approval request's current state."""
        return self._call("GET", f"{API}/approvals/{approval_id}", None, idempotent=True)

    def approve(self, approval_id: str, notes: str | None) -> dict[str, Any]:
        """Approve the request; the answer carries the approval token."""
        return self._call("POST", f"{API}/approvals/{approval_id}/approve", {"notes": notes}, idempotent=False)

    def deny(self, approval_id: str, notes: str | None) -> dict[str, Any]:
        """Deny the request."""
        return self._call("POST", f"{API}/approvals/{approval_id}/deny", {"notes": notes}, idempotent=False)

    def pickup_token(self, approval_id: str) -> dict[str, Any]:
        """Return the approval token of an approved request (once, to the requesting principal)."""
        return self._call("POST", f"{API}/approvals/{approval_id}/token", None, idempotent=False)

    def consume(self, endpoint: str, token: str, binding: dict[str, str], idempotency_key: str) -> dict[str, Any]:
        """Consume the token against the persisted binding; return the consumed claims.

        The server answers a repeat with the same `idempotency_key`, token and binding with the first consume's
        result, so this is retried like any idempotent call: a lost answer never loses the approval.
        """
        return self._call("POST", endpoint, {"approval_token": token, **binding}, idempotent=True,
                          headers={"Idempotency-Key": idempotency_key})

    def read(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an API resource (`path` below /api/v1/enforcement), dropping empty query parameters."""
        query = {k: v for k, v in (params or {}).items() if v}
        return self._call("GET", f"{API}{path}", None, idempotent=True, params=query)

    def revoke(self, approval_id: str, notes: str | None) -> dict[str, Any]:
        """Revoke an approved approval whose token was not used."""
        return self._call("POST", f"{API}/approvals/{approval_id}/revoke", {"notes": notes}, idempotent=False)

    def simulate_policy(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the simulation report of a candidate policy (repeating it only adds an audit-trail row)."""
        return self._call("POST", f"{API}/policies/simulate", body, idempotent=True)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, idempotent: bool,
              headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> dict[str, Any]:
        retryable = _RETRY_IDEMPOTENT if idempotent else _RETRY_ALWAYS
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=body, headers=headers, params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure: Exception = exc
                delay = None
            except httpx.TransportError as exc:
                if not idempotent:
                    raise TransportFailure(f"{method} {path}: {exc!r}; the request may have been processed, "
                                           "so it is not repeated") from exc
                failure, delay = exc, None
            else:
                if response.status_code < 400:
                    return _json(response)
                if response.status_code not in retryable or attempt >= self.retries:
                    raise _api_error(response)
                failure, delay = _api_error(response), _retry_after(response)
            if attempt >= self.retries:
                raise TransportFailure(f"{method} {self.server}{path} failed after {attempt + 1} attempt(s): "
                                       f"{failure}") from failure
            attempt += 1
            pause = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (attempt - 1))
            time.sleep(min(MAX_BACKOFF_SECONDS, delay) if delay is not None else pause * random.uniform(0.5, 1))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise TransportFailure(f"HTTP {response.status_code}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise TransportFailure(f"HTTP {response.status_code}: the answer is not a JSON object")
    return data


def _api_error(response: httpx.Response) -> ApiError:
    try:
        data = response.json()
    except ValueError:
        data = None
    body: dict[str, Any] = data if isinstance(data, dict) else {"detail": response.text[:500]}
    detail = body.get("detail")
    if not isinstance(detail, str):
        # FastAPI's own validation errors carry a list of problems as `detail`.
        detail = str(detail)[:1000] if detail is not None else response.reason_phrase
    return ApiError(response.status_code, str(body.get("code") or f"http_{response.status_code}"), detail, body)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
