"""Gate request bodies (closed) and the decision response built from a stored decision."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from valdrix.canonical import canonical_bytes
from valdrix.client import CONSUME_ENDPOINT
from valdrix.clock import Instant
from valdrix.decisions.engine import DecisionInput, Unrecorded
from valdrix.decisions.models import Decision
from valdrix.money import Amount

Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


def _canonical(value: Any) -> Any:
    # Request metadata and event data are hashed (request fingerprint) as RFC 8785 JSON, whose domain excludes
    # integers beyond ±(2**53 - 1) and unpaired surrogates: such input is refused here with 422, not at hashing.
    try:
        canonical_bytes(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not representable as RFC 8785 JSON ({exc}); send large integers as strings") from exc
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_canonical)]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GateRequest(Closed):
    project_id: str = Field(default="default", min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)
    action: str = Field(min_length=1, max_length=128)
    resource_reference: str = Field(min_length=1, max_length=512)
    estimated_monthly_delta_usd: Amount
    estimated_hourly_delta_usd: Amount = Decimal(0)
    metadata: Metadata = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=4, max_length=128)
    expected_request_fingerprint: Fingerprint | None = None
    dry_run: StrictBool = False


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope; attributes beyond the spec's are extensions and are kept."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=512)
    subject: str | None = Field(default=None, max_length=1024)
    time: Instant | None = None
    datacontenttype: str | None = Field(default=None, max_length=256)
    dataschema: str | None = Field(default=None, max_length=2048)
    data: Annotated[Any, AfterValidator(_canonical)] = None

    @model_validator(mode="after")
    def _canonical_extensions(self) -> CloudEvent:
        # Extension attributes are hashed with the event, so they obey the same JSON domain as `data`.
        _canonical(self.model_extra or {})
        return self


class CloudEventGateRequest(Closed):
    cloud_event: CloudEvent
    project_id: str = Field(default="default", min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)
    action: str = Field(default="cloud_event.observe", min_length=1, max_length=128)
    resource_reference: str | None = Field(default=None, min_length=1, max_length=512)
    estimated_monthly_delta_usd: Amount = Decimal(0)
    estimated_hourly_delta_usd: Amount = Decimal(0)
    metadata: Metadata = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=4, max_length=128)
    expected_request_fingerprint: Fingerprint | None = None
    dry_run: StrictBool = False


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


# ---- responses (documented as response models; the routes render the dicts below directly) ----------------

Money = Annotated[str, Field(description="A decimal amount in USD, as a string")]


class DecisionOut(Closed):
    decision_id: uuid.UUID | None = Field(description="null only when `recorded` is false")
    decision: str
    reason_codes: list[str]
    request_fingerprint: str
    approval_required: bool
    approval_request_id: uuid.UUID | None
    policy_version: int | None
    policy_sha256: str | None
    mode: str
    dry_run: bool
    ttl_seconds: int | None
    reservation_active: bool
    reserved_allocation_usd: Money
    reserved_credit_usd: Money
    computed_context: dict[str, Any]
    recorded: bool = Field(description="false: the mode's fail-safe answer, given by the deadline without a record "
                                       "(the database was unavailable); retry with the same idempotency key")


class DecisionDetailOut(DecisionOut):
    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    estimated_monthly_delta_usd: Money
    estimated_hourly_delta_usd: Money
    budget_scope: str | None
    fail_safe: bool
    idempotency_key: str
    request_payload: dict[str, Any]
    response_payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class DecisionPage(Closed):
    items: list[DecisionDetailOut]
    next_cursor: str | None


class Binding(Closed):
    expected_source: str
    expected_project_id: str
    expected_environment: str
    expected_request_fingerprint: str
    expected_resource_reference: str


class Continuation(Closed):
    approval_consume_endpoint: str
    binding: Binding


class ExplanationLine(Closed):
    label: str
    text: str


class ExplanationOut(Closed):
    decision_id: uuid.UUID
    decision: str
    policy_sha256: str
    summary: str
    reasons: list[ExplanationLine]
    waterfall: list[ExplanationLine]
    figures: list[ExplanationLine]
