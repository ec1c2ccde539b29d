"""Gate request bodies (closed) and the decision response built from a stored decision."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from valdrix.decisions.engine import DecisionInput, Unrecorded
from valdrix.decisions.models import Decision
from valdrix.money import MAX_AMOUNT

Amount = Annotated[Decimal, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
CONSUME_ENDPOINT = "/api/v1/enforcement/approvals/consume"


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GateRequest(Closed):
    project_id: str = Field(default="default", min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)
    action: str = Field(min_length=1, max_length=128)
    resource_reference: str = Field(min_length=1, max_length=512)
    estimated_monthly_delta_usd: Amount
    estimated_hourly_delta_usd: Amount = Decimal(0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=4, max_length=128)
    expected_request_fingerprint: Fingerprint | None = None
    dry_run: bool = False


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope; attributes beyond the spec's are extensions and are kept."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=512)
    subject: str | None = Field(default=None, max_length=1024)
    time: datetime | None = None
    datacontenttype: str | None = Field(default=None, max_length=256)
    dataschema: str | None = Field(default=None, max_length=2048)
    data: Any = None


class CloudEventGateRequest(Closed):
    cloud_event: CloudEvent
    project_id: str = Field(default="default", min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)
    action: str = Field(default="cloud_event.observe", min_length=1, max_length=128)
    resource_reference: str | None = Field(default=None, min_length=1, max_length=512)
    estimated_monthly_delta_usd: Amount = Decimal(0)
    estimated_hourly_delta_usd: Amount = Decimal(0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=4, max_length=128)
    expected_request_fingerprint: Fingerprint | None = None
    dry_run: bool = False


def decision_body(decision: Decision) -> dict[str, Any]:
    """Return the gate response for a stored decision (the same for the first answer and every replay)."""
    return {
        "decision_id": str(decision.id),
        "decision": decision.decision,
        "reason_codes": list(decision.reason_codes),
        "request_fingerprint": decision.request_fingerprint,
        "approval_required": decision.decision == "REQUIRE_APPROVAL",
        "approval_request_id": str(decision.approval_request_id) if decision.approval_request_id else None,
        "policy_version": decision.policy_version,
        "policy_sha256": decision.policy_sha256,
        "mode": decision.mode,
        "dry_run": decision.dry_run,
        "ttl_seconds": decision.response_payload.get("ttl_seconds"),
        "reservation_active": decision.reservation_active,
        "reserved_allocation_usd": str(decision.reserved_allocation_usd),
        "reserved_credit_usd": str(decision.reserved_credit_usd),
        "computed_context": decision.computed_context,
        "recorded": True,
    }


def unrecorded_body(inp: DecisionInput, answer: Unrecorded) -> dict[str, Any]:
    """Return the gate response for a fail-safe answer no decision could be recorded for (no id, no hold)."""
    return {
        "decision_id": None,
        "decision": answer.decision,
        "reason_codes": list(answer.reasons),
        "request_fingerprint": inp.fingerprint,
        "approval_required": answer.decision == "REQUIRE_APPROVAL",
        "approval_request_id": None,
        "policy_version": None,
        "policy_sha256": None,
        "mode": answer.mode,
        "dry_run": inp.dry_run,
        "ttl_seconds": None,
        "reservation_active": False,
        "reserved_allocation_usd": "0.0000",
        "reserved_credit_usd": "0.0000",
        "computed_context": {"fail_safe_trigger": answer.trigger},
        "recorded": False,
    }


def continuation(decision: Decision) -> dict[str, Any]:
    """Return the continuation block a pipeline persists to consume an approval token later."""
    return {
        "approval_consume_endpoint": CONSUME_ENDPOINT,
        "binding": {
            "expected_source": decision.source,
            "expected_project_id": decision.project_id,
            "expected_environment": decision.environment,
            "expected_request_fingerprint": decision.request_fingerprint,
            "expected_resource_reference": decision.resource_reference,
        },
    }


def decision_detail(decision: Decision) -> dict[str, Any]:
    """Return the full stored view of a decision for GET /decisions."""
    return {
        **decision_body(decision),
        "source": decision.source,
        "project_id": decision.project_id,
        "environment": decision.environment,
        "action": decision.action,
        "resource_reference": decision.resource_reference,
        "estimated_monthly_delta_usd": str(decision.estimated_monthly_delta_usd),
        "estimated_hourly_delta_usd": str(decision.estimated_hourly_delta_usd),
        "budget_scope": decision.budget_scope,
        "fail_safe": decision.fail_safe,
        "idempotency_key": decision.idempotency_key,
        "request_payload": decision.request_payload,
        "response_payload": decision.response_payload,
        "created_at": decision.created_at.isoformat(),
        "updated_at": decision.updated_at.isoformat(),
    }
