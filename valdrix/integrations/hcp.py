"""The calls to HCP Terraform: downloading a run's plan JSON and sending its task result.

Both calls carry the run's access token as a bearer token. Failures are classified so the worker knows
whether a later attempt can succeed (`transient`: transport errors, 408, 429, 5xx) or not (anything else).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

CALLBACK_MEDIA_TYPE = "application/vnd.api+json"
_TRANSIENT_STATUSES = {408, 425, 429}


class CallFailed(Exception):
    """A call to HCP Terraform failed; `transient` when retrying it later can succeed."""

    def __init__(self, what: str, *, transient: bool) -> None:
        super().__init__(what)
        self.transient = transient


def _status_failure(what: str, status: int) -> CallFailed:
    return CallFailed(f"{what}: HTTP {status}", transient=status in _TRANSIENT_STATUSES or status >= 500)


def download_plan(client: httpx.Client, url: str, token: str, *, max_bytes: int) -> Any:
    """Return the parsed plan JSON at `url`; raise CallFailed.

    HCP Terraform answers the JSON-output endpoint with a redirect to a short-lived download address; httpx
    follows it and drops the Authorization header when the redirect leaves the origin.
    """
    try:
        with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"},
                           follow_redirects=True) as response:
            if response.status_code != 200:
                raise _status_failure("plan download", response.status_code)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise CallFailed(f"plan download: the plan JSON exceeds {max_bytes} bytes", transient=False)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise CallFailed(f"plan download: {type(exc).__name__}", transient=True) from exc
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise CallFailed("plan download: the answer is not JSON", transient=False) from exc


def send_result(client: httpx.Client, url: str, token: str, body: dict[str, Any]) -> None:
    """PATCH the task result to the run's callback URL; raise CallFailed unless HCP Terraform accepted it."""
    try:
        response = client.patch(url, content=json.dumps(body).encode(),
                                headers={"Authorization": f"Bearer {token}", "Content-Type": CALLBACK_MEDIA_TYPE})
    except httpx.HTTPError as exc:
        raise CallFailed(f"callback: {type(exc).__name__}", transient=True) from exc
    if not 200 <= response.status_code < 300:
        raise _status_failure("callback", response.status_code)
