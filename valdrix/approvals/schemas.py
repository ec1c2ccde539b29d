"""Approval request bodies (closed) and the approval views built from stored rows."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from valdrix.approvals.models import ApprovalRequest
from valdrix.decisions.models import Decision
from valdrix.decisions.schemas import Closed, Fingerprint
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
