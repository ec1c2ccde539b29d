"""Policy document reads, writes and version history."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from valdrix.db import transaction
from valdrix.deps import DB, Admin, ClockDep, Member, WritingRoute
from valdrix.errors import problems
from valdrix.jsonio import JSONResponse
from valdrix.policies import service
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import PolicyDocument, PolicyVersionList, PolicyVersionOut
from valdrix.simulation import router as simulation
from valdrix.simulation.schemas import SimulationRequest

# Versions are INTEGER columns: a larger path value is a request for a version that cannot exist.
MAX_VERSION = 2**31 - 1

router = APIRouter(prefix="/api/v1/enforcement", tags=["policies"], route_class=WritingRoute)


def _version(row: PolicyVersion) -> dict[str, Any]:
    return {"version": row.version, "schema_version": row.schema_version, "sha256": row.sha256,
            "created_at": row.created_at.isoformat(), "created_by": str(row.created_by) if row.created_by else None,
            "document": row.document}


@router.get("/policies", response_model=PolicyVersionOut, responses=problems({404: ("policy_not_found",)}))
def get_policy(db: DB, caller: Member) -> JSONResponse:
    """Return the policy in force."""
    active = service.current(db, caller.tenant_id)
    return JSONResponse(_version(service.get_version(db, caller.tenant_id, active.version)))


DRY_RUN_WINDOW_DAYS = 7


@router.put("/policies", responses={200: {"description": "The stored version (`changed` false for a no-op); with "
                                          "`dry_run=true` nothing is saved and the answer is a SimulationReport "
                                          "of the last 7 days.", "content": {"application/json": {"schema": {
                                              "oneOf": [{"$ref": "#/components/schemas/PolicyPutOut"},
                                                        {"$ref": "#/components/schemas/SimulationReport"}]}}}},
                                    **simulation.ERRORS})
async def put_policy(document: PolicyDocument, request: Request, caller: Admin, clock: ClockDep,
                     dry_run: Annotated[bool, Query(description="Simulate the last 7 days under the document "
                                                    "instead of saving it.")] = False) -> JSONResponse:
    """Store a new policy version if the document changed; a no-op PUT creates no version.

    With `dry_run=true` the document is not saved: the answer is what it would have decided over the last
    7 days (`POST /policies/simulate`), replayed off the write executor. The save is one unit on it.
    """
    if dry_run:
        report = await simulation.run(request, caller, SimulationRequest(policy=document,
                                                                         window_days=DRY_RUN_WINDOW_DAYS),
                                      clock.now(), via="put_dry_run")
        return JSONResponse(report.model_dump(mode="json"))

    def save() -> dict[str, Any]:
        with transaction(request.app.state.sessions) as db:
            row, changed = service.put(db, caller.tenant_id, document, actor=caller.principal_id, now=clock.now())
            return {**_version(row), "changed": changed}

    return JSONResponse(await asyncio.get_running_loop().run_in_executor(request.app.state.write_executor, save))


@router.get("/policies/versions", response_model=PolicyVersionList)
def list_versions(db: DB, caller: Member) -> JSONResponse:
    """Return every policy version, newest first."""
    return JSONResponse({"items": [_version(r) for r in service.history(db, caller.tenant_id)]})


@router.get("/policies/versions/{version}", response_model=PolicyVersionOut,
            responses=problems({404: ("policy_version_not_found",)}))
def get_version(version: Annotated[int, Path(ge=1, le=MAX_VERSION)], db: DB, caller: Member) -> JSONResponse:
    """Return one policy version."""
    return JSONResponse(_version(service.get_version(db, caller.tenant_id, version)))
