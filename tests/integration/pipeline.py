"""What a CI pipeline and its reviewers do over HTTP: preflight, review, pick up, consume; and token forgery."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from tests.live import post
from valdrix.approvals.tokens import TYP

APPROVALS = "/api/v1/enforcement/approvals"


def set_budget(c: httpx.Client, limit: str = "1000", scope: str = "payments") -> None:
    r = c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": scope, "monthly_limit_usd": limit}]})
    assert r.status_code == 200, r.text


def preflight(c: httpx.Client, *, run: str = "r1", environment: str = "prod", amount: str = "100",
              **extra: Any) -> dict[str, Any]:
    """Run a preflight that must end in REQUIRE_APPROVAL and return its body."""
    body = {"run_id": run, "project_id": "payments", "environment": environment,
            "resource_reference": f"module.db.aws_db_instance.{run}", "estimated_monthly_delta_usd": amount,
            "estimated_hourly_delta_usd": "0.14", **extra}
    r = post(c, "/gate/terraform/preflight", body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["decision"] == "REQUIRE_APPROVAL", out
    assert out["approval_request_id"], out
    return out


def approve(c: httpx.Client, approval_id: str, notes: str | None = None) -> httpx.Response:
    return c.post(f"{APPROVALS}/{approval_id}/approve", json={"notes": notes})


def deny(c: httpx.Client, approval_id: str, notes: str | None = None) -> httpx.Response:
    return c.post(f"{APPROVALS}/{approval_id}/deny", json={"notes": notes})


def consume(c: httpx.Client, token: str, gate: dict[str, Any], **overrides: str) -> httpx.Response:
    """Consume with the persisted continuation binding, optionally overriding expected_* fields."""
    return c.post(f"{APPROVALS}/consume",
                  json={"approval_token": token, **gate["continuation"]["binding"], **overrides})


def approved_token(c: httpx.Client, reviewer: httpx.Client, **kw: Any) -> tuple[dict[str, Any], str]:
    gate = preflight(c, **kw)
    r = approve(reviewer, gate["approval_request_id"])
    assert r.status_code == 200, r.text
    return gate, r.json()["approval_token"]


def claims_of(token: str) -> dict[str, Any]:
    out: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return out


def private_key(keys_dir: Path, kid: str) -> Any:
    return serialization.load_pem_private_key((keys_dir / f"{kid}.pem").read_bytes(), password=None)


def forge(claims: dict[str, Any], key: Any, kid: str, *, algorithm: str = "EdDSA", typ: str = TYP) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid, "typ": typ})


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """Return an `alg: none` token."""
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'none', 'typ': TYP, 'kid': kid})}.{seg(claims)}."


def swap_payload(token: str, claims: dict[str, Any]) -> str:
    """Return `token` with its payload replaced but its original signature kept."""
    header, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"
