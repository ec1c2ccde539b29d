"""Approval request bodies (closed) and the approval views built from stored rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from valdrix.approvals.models import ApprovalRequest
from valdrix.decisions.models import Decision
from valdrix.decisions.schemas import Closed, Fingerprint, Money
from valdrix.money import hourly, monthly


class ApprovalCreate(Closed):
    decision_id: uuid.UUID


class ReviewBody(Closed):
    notes: str | None = Field(default=None, max_length=1000)


class ConsumeRequest(Closed):
    """The token and the five `expected_*` values of the preflight's `continuation.binding`, all required."""

    approval_token: str = Field(min_length=16, max_length=8192)
    expected_source: str = Field(min_length=1, max_length=32)
    expected_project_id: str = Field(min_length=1, max_length=128)
    expected_environment: str = Field(min_length=1, max_length=32)
    expected_request_fingerprint: Fingerprint
    expected_resource_reference: str = Field(min_length=1, max_length=512)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def approval_body(approval: ApprovalRequest, decision: Decision) -> dict[str, Any]:
    """Return the approval with a summary of its decision (what a pipeline polls and a reviewer reads)."""
    return {
        "approval_id": str(approval.id),
        "decision_id": str(approval.decision_id),
        "status": approval.status,
        "requested_by": str(approval.requested_by) if approval.requested_by else None,
        "reviewed_by": str(approval.reviewed_by) if approval.reviewed_by else None,
        "review_notes": approval.review_notes,
        "routing_rule_id": approval.routing_rule_id,
        "required_permission": approval.required_permission,
        "routing": approval.routing,
        "expires_at": _iso(approval.expires_at),
        "approved_at": _iso(approval.approved_at),
        "denied_at": _iso(approval.denied_at),
        "expired_at": _iso(approval.expired_at),
        "revoked_at": _iso(approval.revoked_at),
        "token_expires_at": _iso(approval.token_expires_at),
        "token_picked_up_at": _iso(approval.token_picked_up_at),
        "token_consumed_at": _iso(approval.token_consumed_at),
        "created_at": _iso(approval.created_at),
        "updated_at": _iso(approval.updated_at),
        "decision": {
            **_bound(decision),
            "decision": decision.decision,
            "reason_codes": list(decision.reason_codes),
            "estimated_monthly_delta_usd": str(monthly(decision.estimated_monthly_delta_usd)),
            "estimated_hourly_delta_usd": str(hourly(decision.estimated_hourly_delta_usd)),
            "policy_version": decision.policy_version,
            "reservation_active": decision.reservation_active,
            "created_at": _iso(decision.created_at),
        },
    }


def _bound(decision: Decision) -> dict[str, Any]:
    """The request a decision (and so its approval token) is bound to."""
    return {"source": decision.source, "project_id": decision.project_id, "environment": decision.environment,
            "action": decision.action, "resource_reference": decision.resource_reference,
            "request_fingerprint": decision.request_fingerprint}


def consumed_body(approval: ApprovalRequest, decision: Decision) -> dict[str, Any]:
    """Return the bound values a pipeline may now act on, and when the token was consumed."""
    return {
        "status": "consumed",
        "approval_id": str(approval.id),
        "decision_id": str(decision.id),
        **_bound(decision),
        "max_monthly_delta_usd": str(monthly(decision.estimated_monthly_delta_usd)),
        "max_hourly_delta_usd": str(hourly(decision.estimated_hourly_delta_usd)),
        "policy_sha256": decision.policy_sha256,
        "token_expires_at": _iso(approval.token_expires_at),
        "consumed_at": _iso(approval.token_consumed_at),
    }


class DecisionSummary(Closed):
    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    request_fingerprint: str
    decision: str
    reason_codes: list[str]
    estimated_monthly_delta_usd: Money
    estimated_hourly_delta_usd: Money
    policy_version: int
    reservation_active: bool
    created_at: datetime | None


class ApprovalOut(Closed):
    approval_id: uuid.UUID
    decision_id: uuid.UUID
    status: Literal["pending", "approved", "denied", "expired", "revoked"]
    requested_by: uuid.UUID | None
    reviewed_by: uuid.UUID | None
    review_notes: str | None
    routing_rule_id: str | None
    required_permission: str | None
    routing: dict[str, Any]
    expires_at: datetime | None
    approved_at: datetime | None
    denied_at: datetime | None
    expired_at: datetime | None
    revoked_at: datetime | None
    token_expires_at: datetime | None
    token_picked_up_at: datetime | None
    token_consumed_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    decision: DecisionSummary


class ReviewedOut(ApprovalOut):
    approval_token: str | None = Field(description="The approval token (shown once, on approval); null on denial")


class ApprovalPage(Closed):
    items: list[ApprovalOut]
    next_cursor: str | None


class TokenOut(Closed):
    approval_id: uuid.UUID
    decision_id: uuid.UUID
    approval_token: str
    token_expires_at: datetime | None


class ConsumedOut(Closed):
    status: Literal["consumed"]
    approval_id: uuid.UUID
    decision_id: uuid.UUID
    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    request_fingerprint: str
    max_monthly_delta_usd: Money
    max_hourly_delta_usd: Money
    policy_sha256: str
    token_expires_at: datetime | None
    consumed_at: datetime | None
    replayed: bool = Field(description="True when this answers again an earlier consume with the same "
                                       "Idempotency-Key, token and binding")


class JsonWebKey(Closed):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JwksOut(Closed):
    keys: list[JsonWebKey]
