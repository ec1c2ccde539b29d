"""Approval routes: request, read, queue, approve, deny, token pickup and consume; and the public JWKS."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from valdrix.approvals import service
from valdrix.approvals.schemas import ApprovalCreate, ConsumeRequest, ReviewBody, approval_body, consumed_body
from valdrix.decisions.router import decode_cursor, encode_cursor
from valdrix.deps import DB, ClockDep, IdsDep, KeyRingDep, Member, WriteDB, WritingRoute
from valdrix.jsonio import JSONResponse

router = APIRouter(prefix="/api/v1/enforcement/approvals", tags=["approvals"], route_class=WritingRoute)
jwks_router = APIRouter(tags=["keys"])


def _notes(body: ReviewBody) -> str | None:
    return (body.notes or "").strip() or None


@router.post("/requests")
def create_request(body: ApprovalCreate, db: DB, caller: Member, clock: ClockDep, ids: IdsDep) -> JSONResponse:
    """Return the decision's approval (200), opening one if it has none (201)."""
    approval, decision, created = service.create_or_get(db, caller, body.decision_id, now=clock.now(),
                                                        approval_id=ids.new())
    return JSONResponse(approval_body(approval, decision), status_code=201 if created else 200)


@router.get("/queue")
def review_queue(db: WriteDB, caller: Member, clock: ClockDep, cursor: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JSONResponse:
    """Return pending, unexpired approvals the caller may review, oldest first, with `next_cursor`."""
    rows, position = service.queue(db, caller, now=clock.now(), after=decode_cursor(cursor) if cursor else None,
                                   limit=limit)
    return JSONResponse({"items": [approval_body(a, d) for a, d in rows],
                         "next_cursor": encode_cursor(*position) if position else None})


@router.get("")
def list_approvals(db: DB, caller: Member,
                   status: Literal["pending", "approved", "denied", "expired", "revoked", "consumed"] | None = None,
                   project_id: Annotated[str | None, Query(max_length=128)] = None,
                   environment: Annotated[str | None, Query(max_length=32)] = None, cursor: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JSONResponse:
    """Return the approval history, newest first, filtered by status (`approved` means approved and not yet
    used; `consumed`, used), project and environment, with `next_cursor`."""
    rows, position = service.history(db, caller.tenant_id, status=status, project_id=project_id,
                                     environment=environment, after=decode_cursor(cursor) if cursor else None,
                                     limit=limit)
    return JSONResponse({"items": [approval_body(a, d) for a, d in rows],
                         "next_cursor": encode_cursor(*position) if position else None})


@router.get("/{approval_id}")
def get_approval(approval_id: uuid.UUID, db: WriteDB, caller: Member, clock: ClockDep) -> JSONResponse:
    """Return one approval with its status, routing, expiry and decision summary."""
    approval, decision = service.get(db, caller.tenant_id, approval_id, now=clock.now())
    return JSONResponse(approval_body(approval, decision))


@router.post("/{approval_id}/approve")
def approve(approval_id: uuid.UUID, body: ReviewBody, db: DB, caller: Member, clock: ClockDep,
            keyring: KeyRingDep) -> JSONResponse:
    """Approve and return the approval token (shown here once; only its hash is kept in clear)."""
    approval, decision, token = service.approve(db, caller, approval_id, notes=_notes(body), now=clock.now(),
                                                keyring=keyring)
    return JSONResponse({**approval_body(approval, decision), "approval_token": token,
                         "token_expires_at": approval.token_expires_at.isoformat()
                         if approval.token_expires_at else None})


@router.post("/{approval_id}/deny")
def deny(approval_id: uuid.UUID, body: ReviewBody, db: DB, caller: Member, clock: ClockDep) -> JSONResponse:
    """Deny, releasing the reservation and refunding credit."""
    approval, decision = service.deny(db, caller, approval_id, notes=_notes(body), now=clock.now())
    return JSONResponse({**approval_body(approval, decision), "approval_token": None})


@router.post("/{approval_id}/revoke")
def revoke(approval_id: uuid.UUID, body: ReviewBody, db: DB, caller: Member, clock: ClockDep) -> JSONResponse:
    """Revoke an approved approval whose token was not used: its token is refused (409 `approval_revoked`) and
    its reservation released."""
    approval, decision = service.revoke(db, caller, approval_id, notes=_notes(body), now=clock.now())
    return JSONResponse(approval_body(approval, decision))


@router.post("/{approval_id}/token")
def pick_up_token(approval_id: uuid.UUID, db: DB, caller: Member, clock: ClockDep,
                  keyring: KeyRingDep) -> JSONResponse:
    """Return the approval token once to the principal that made the gate request."""
    approval, token = service.pickup(db, caller, approval_id, now=clock.now(), keyring=keyring)
    return JSONResponse({"approval_id": str(approval.id), "decision_id": str(approval.decision_id),
                         "approval_token": token,
                         "token_expires_at": approval.token_expires_at.isoformat()
                         if approval.token_expires_at else None})


@router.post("/consume")
def consume(body: ConsumeRequest, db: DB, caller: Member, clock: ClockDep, keyring: KeyRingDep) -> JSONResponse:
    """Verify the token against the persisted decision and the expected binding, and burn it."""
    expected = service.Expected(source=body.expected_source, project_id=body.expected_project_id,
                                environment=body.expected_environment,
                                request_fingerprint=body.expected_request_fingerprint,
                                resource_reference=body.expected_resource_reference)
    approval, decision = service.consume(db, caller, body.approval_token.strip(), expected, now=clock.now(),
                                         keyring=keyring)
    return JSONResponse(consumed_body(approval, decision))


@jwks_router.get("/.well-known/jwks.json")
def jwks(request: Request) -> JSONResponse:
    """Return the public verification keys (never private material; empty without keys or under HS256)."""
    keyring = request.app.state.keyring
    return JSONResponse(keyring.jwks() if keyring is not None else {"keys": []},
                        headers={"Cache-Control": "public, max-age=300"})
