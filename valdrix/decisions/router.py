"""Generic gate routes, the CloudEvents gate and decision reads."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.orm import Session

from valdrix.auth.service import Caller
from valdrix.canonical import canonical_json
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.decisions import engine, service
from valdrix.decisions.explain import explain
from valdrix.decisions.schemas import (
    CloudEventGateRequest,
    GateRequest,
    decision_body,
    decision_detail,
    unrecorded_body,
)
from valdrix.deps import DB, Member, WritingRoute, api_key_caller, in_gate_unit
from valdrix.errors import InvalidInput
from valdrix.jsonio import JSONResponse

router = APIRouter(prefix="/api/v1/enforcement", tags=["gate"], route_class=WritingRoute)


def gate_context(request: Request, caller: Caller, seconds_left: float) -> service.GateContext:
    """Return the gate context for an authenticated request, from the app's settings, clock and id factory.

    `seconds_left` is what remains of the gate deadline; the database waits within it.
    """
    # Read from the app state directly: the gate routes are the hot path, and resolving these as FastAPI
    # dependencies costs more per request than the rest of the routing.
    settings: Settings = request.app.state.settings
    clock: Clock = request.app.state.clock
    ids: IdFactory = request.app.state.ids
    return service.GateContext(tenant_id=caller.tenant_id, actor=caller.principal_id, now=clock.now(), ids=ids,
                               timeout_seconds=seconds_left,
                               lock_timeout_seconds=min(settings.lock_timeout_seconds, seconds_left),
                               cost_context=settings.cost_context,
                               cost_data_max_age_days=settings.cost_data_max_age_days,
                               api_key_hash=caller.key_hash,
                               budget_alert_thresholds=tuple(settings.budget_alert_thresholds))


def answer(request: Request, inp: engine.DecisionInput, key: str | None, expected_fingerprint: str | None,
           render: Callable[[service.Outcome], dict[str, Any]],
           render_unrecorded: Callable[[engine.Unrecorded], dict[str, Any]]) -> Awaitable[dict[str, Any]]:
    """Return the gate's answer to `inp` within VALDRIX_GATE_TIMEOUT_SECONDS of now, whatever the database does.

    The decision is `render`ed; when none could be recorded in time, the mode's fail-safe answer is, by
    `render_unrecorded`.
    """
    started = time.monotonic()
    modes: service.ModeMemory = request.app.state.modes
    authenticate, known, forget = api_key_caller(request)

    def work(db: Session, caller: Caller, seconds_left: float) -> tuple[dict[str, Any], service.Outcome]:
        outcome = service.decide(db, gate_context(request, caller, seconds_left), inp, key, expected_fingerprint)
        modes.remember(outcome.decision)
        return render(outcome), outcome

    def unrecorded(caller: Caller | None, trigger: str) -> dict[str, Any]:
        return render_unrecorded(service.unrecorded(modes, caller.tenant_id if caller else None, inp.source,
                                                    inp.environment, trigger, started))

    return in_gate_unit(request, authenticate, work, unrecorded, known=known, started=started,
                        deadline=request.app.state.settings.gate_timeout_seconds, forget=forget)


def _generic(source: str, body: GateRequest, request: Request, header_key: str | None) -> Awaitable[dict[str, Any]]:
    inp = engine.make_input(source=source, project_id=body.project_id, environment=body.environment,
                            action=body.action, resource_reference=body.resource_reference,
                            monthly_delta=body.estimated_monthly_delta_usd,
                            hourly_delta=body.estimated_hourly_delta_usd, metadata=body.metadata,
                            dry_run=body.dry_run)

    return answer(request, inp, header_key or body.idempotency_key, body.expected_request_fingerprint,
                  lambda outcome: decision_body(outcome.decision), partial(unrecorded_body, inp))


@router.post("/gate/terraform")
async def gate_terraform(body: GateRequest, request: Request,
                         idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Evaluate a Terraform change described by the generic gate body."""
    return JSONResponse(await _generic("terraform", body, request, idempotency_key))


@router.post("/gate/k8s/admission")
async def gate_k8s_generic(body: GateRequest, request: Request,
                           idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Evaluate a Kubernetes change described by the generic gate body (the webhook uses /review)."""
    return JSONResponse(await _generic("k8s_admission", body, request, idempotency_key))


@router.post("/gate/cloud-event")
async def gate_cloud_event(body: CloudEventGateRequest, request: Request,
                           idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Evaluate a change announced by a CloudEvents 1.0 event."""
    event = body.cloud_event
    reference = next((v.strip() for v in (body.resource_reference, event.subject, event.source) if v and v.strip()),
                     None)
    if reference is None:
        raise InvalidInput("resource_reference could not be derived from the body or the event",
                           code="resource_reference_missing")
    extensions = dict(event.model_extra or {})
    metadata: dict[str, Any] = {
        **body.metadata,
        "cloud_event_id": event.id, "cloud_event_source": event.source, "cloud_event_type": event.type,
        "cloud_event_specversion": event.specversion, "cloud_event_subject": event.subject,
        "cloud_event_time": event.time.isoformat() if event.time else None,
        "cloud_event_datacontenttype": event.datacontenttype, "cloud_event_dataschema": event.dataschema,
        # The payload itself is not stored, only its digest: events can carry large or sensitive data.
        "cloud_event_data_sha256": hashlib.sha256(canonical_json(event.data).encode()).hexdigest(),
    }
    if extensions:
        metadata["cloud_event_extensions"] = dict(sorted(extensions.items()))
    inp = engine.make_input(source="cloud_event", project_id=body.project_id, environment=body.environment,
                            action=body.action, resource_reference=reference,
                            monthly_delta=body.estimated_monthly_delta_usd,
                            hourly_delta=body.estimated_hourly_delta_usd, metadata=metadata, dry_run=body.dry_run)
    key = idempotency_key or body.idempotency_key or f"cloudevent:{event.source}:{event.id}"[:128]

    return JSONResponse(await answer(request, inp, key, body.expected_request_fingerprint,
                                     lambda outcome: decision_body(outcome.decision), partial(unrecorded_body, inp)))


@router.get("/decisions/{decision_id}")
def get_decision(decision_id: uuid.UUID, db: DB, caller: Member) -> JSONResponse:
    """Return one decision with its stored request and response."""
    return JSONResponse(decision_detail(service.get(db, caller.tenant_id, decision_id)))


@router.get("/decisions/{decision_id}/explanation")
def explain_decision(decision_id: uuid.UUID, db: DB, caller: Member) -> JSONResponse:
    """Return the decision in words: a summary, each reason code, each waterfall stage and the figures used."""
    decision = service.get(db, caller.tenant_id, decision_id)
    return JSONResponse({"decision_id": str(decision.id), "decision": decision.decision,
                         "policy_sha256": decision.policy_sha256, **explain(decision).as_json()})


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """Return an opaque cursor for keyset pagination by (created_at, id)."""
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), str(row_id)]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Return the position a cursor encodes; raise InvalidInput for a malformed cursor."""
    try:
        stamp, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(stamp), uuid.UUID(row_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("malformed cursor", code="invalid_cursor") from exc


@router.get("/decisions")
def list_decisions(db: DB, caller: Member, source: str | None = None, decision: str | None = None,
                   project_id: str | None = None, environment: str | None = None,
                   since: datetime | None = None, until: datetime | None = None, cursor: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> JSONResponse:
    """Return a page of decisions, newest first, with `next_cursor` when more remain."""
    rows, position = service.search(db, caller.tenant_id, source=source, decision=decision, project_id=project_id,
                                    environment=environment, since=since, until=until,
                                    after=decode_cursor(cursor) if cursor else None, limit=limit)
    return JSONResponse({"items": [decision_detail(r) for r in rows],
                         "next_cursor": encode_cursor(*position) if position else None})
