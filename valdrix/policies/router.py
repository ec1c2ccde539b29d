"""Policy document reads, writes and version history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from valdrix.deps import DB, Admin, ClockDep, Member, WritingRoute
from valdrix.errors import problems
from valdrix.jsonio import JSONResponse
from valdrix.policies import service
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import PolicyDocument, PolicyPutOut, PolicyVersionList, PolicyVersionOut

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


@router.put("/policies", response_model=PolicyPutOut)
def put_policy(document: PolicyDocument, db: DB, caller: Admin, clock: ClockDep) -> JSONResponse:
    """Store a new policy version if the document changed; a no-op PUT creates no version."""
    row, changed = service.put(db, caller.tenant_id, document, actor=caller.principal_id, now=clock.now())
    return JSONResponse({**_version(row), "changed": changed})


@router.get("/policies/versions", response_model=PolicyVersionList)
def list_versions(db: DB, caller: Member) -> JSONResponse:
    """Return every policy version, newest first."""
    return JSONResponse({"items": [_version(r) for r in service.history(db, caller.tenant_id)]})


@router.get("/policies/versions/{version}", response_model=PolicyVersionOut,
            responses=problems({404: ("policy_version_not_found",)}))
def get_version(version: Annotated[int, Path(ge=1, le=MAX_VERSION)], db: DB, caller: Member) -> JSONResponse:
    """Return one policy version."""
    return JSONResponse(_version(service.get_version(db, caller.tenant_id, version)))
