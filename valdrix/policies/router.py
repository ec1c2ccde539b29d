"""Policy document reads, writes and version history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from valdrix.db import transaction
from valdrix.deps import DB, ClockDep, Member, authenticated, authorised, bearer_token
from valdrix.jsonio import JSONResponse
from valdrix.policies import service
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import PolicyDocument
from valdrix.simulation import router as simulation
from valdrix.simulation.schemas import SimulationRequest

router = APIRouter(prefix="/api/v1/enforcement", tags=["policies"])


def _version(row: PolicyVersion) -> dict[str, Any]:
    return {"version": row.version, "schema_version": row.schema_version, "sha256": row.sha256,
            "created_at": row.created_at.isoformat(), "created_by": str(row.created_by) if row.created_by else None,
            "document": row.document}


@router.get("/policies")
def get_policy(db: DB, caller: Member) -> JSONResponse:
    """Return the policy in force."""
    active = service.current(db, caller.tenant_id)
    return JSONResponse(_version(service.get_version(db, caller.tenant_id, active.version)))


DRY_RUN_WINDOW_DAYS = 7


@router.put("/policies", responses={200: {"description": "The stored version (`changed` false for a no-op); with "
                                          "`dry_run=true` nothing is saved and the answer is a SimulationReport "
                                          "of the last 7 days.", "content": {"application/json": {"schema": {
                                              "oneOf": [{"type": "object"},
                                                        {"$ref": "#/components/schemas/SimulationReport"}]}}}},
                                    **simulation.ERRORS})
def put_policy(document: PolicyDocument, request: Request, clock: ClockDep,
               dry_run: Annotated[bool, Query(description="Simulate the last 7 days under the document "
                                              "instead of saving it.")] = False) -> JSONResponse:
    """Store a new policy version if the document changed; a no-op PUT creates no version.

    With `dry_run=true` the document is not saved: the answer is what it would have decided over the last
    7 days (`POST /policies/simulate`), read without holding up the gate.
    """
    if dry_run:
        report = simulation.run(request, SimulationRequest(policy=document, window_days=DRY_RUN_WINDOW_DAYS), clock,
                                via="put_dry_run")
        return JSONResponse(report.model_dump(mode="json"))
    # The transaction is opened here rather than by the `DB` dependency, so a dry run never opens one.
    with transaction(request.app.state.sessions) as db:
        caller = authorised(authenticated(db, bearer_token(request)), "admin")
        row, changed = service.put(db, caller.tenant_id, document, actor=caller.principal_id, now=clock.now())
        body = {**_version(row), "changed": changed}
    return JSONResponse(body)


@router.get("/policies/versions")
def list_versions(db: DB, caller: Member) -> JSONResponse:
    """Return every policy version, newest first."""
    return JSONResponse({"items": [_version(r) for r in service.history(db, caller.tenant_id)]})


@router.get("/policies/versions/{version}")
def get_version(version: int, db: DB, caller: Member) -> JSONResponse:
    """Return one policy version."""
    return JSONResponse(_version(service.get_version(db, caller.tenant_id, version)))
