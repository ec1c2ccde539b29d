"""Budgets per scope and credit grants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from valdrix.budgets import service
from valdrix.budgets.models import Budget, CreditGrant
from valdrix.budgets.schemas import BudgetsPut, CreditGrantIn
from valdrix.deps import DB, Admin, ClockDep, Member, WritingRoute
from valdrix.errors import InvalidInput
from valdrix.jsonio import JSONResponse
from valdrix.money import monthly

router = APIRouter(prefix="/api/v1/enforcement", tags=["budgets"], route_class=WritingRoute)


def _budget(row: Budget) -> dict[str, Any]:
    return {"scope_key": row.scope_key, "monthly_limit_usd": str(row.monthly_limit_usd),
            "reserved_usd": str(row.reserved_usd),
            "headroom_usd": str(max(monthly(0), monthly(row.monthly_limit_usd - row.reserved_usd))),
            "active": row.active, "updated_at": row.updated_at.isoformat()}


def _grant(row: CreditGrant) -> dict[str, Any]:
    return {"id": str(row.id), "pool": row.pool, "scope_key": row.scope_key, "total_usd": str(row.total_usd),
            "remaining_usd": str(row.remaining_usd), "active": row.active,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None, "reason": row.reason,
            "created_at": row.created_at.isoformat()}


@router.get("/budgets")
def list_budgets(db: DB, caller: Member) -> JSONResponse:
    """Return every budget with its reserved total and headroom."""
    return JSONResponse({"items": [_budget(b) for b in service.list_budgets(db, caller.tenant_id)]})


@router.put("/budgets")
def put_budgets(body: BudgetsPut, db: DB, caller: Admin, clock: ClockDep) -> JSONResponse:
    """Create or update the budgets named in the body (other scopes are left as they are)."""
    scopes = [service.normalise_scope(b.scope_key) for b in body.budgets]
    if len(set(scopes)) != len(scopes):
        raise InvalidInput("each scope_key may appear once", code="duplicate_scope_key")
    now = clock.now()
    rows = [service.put_budget(db, caller.tenant_id, b.scope_key, b.monthly_limit_usd, active=b.active, now=now)
            for b in sorted(body.budgets, key=lambda b: service.normalise_scope(b.scope_key))]
    return JSONResponse({"items": [_budget(r) for r in rows]})


@router.get("/credits")
def list_credits(db: DB, caller: Member) -> JSONResponse:
    """Return every credit grant with what remains of it."""
    return JSONResponse({"items": [_grant(g) for g in service.list_grants(db, caller.tenant_id)]})


@router.post("/credits", status_code=201)
def create_credit(body: CreditGrantIn, db: DB, caller: Admin, clock: ClockDep) -> JSONResponse:
    """Create a credit grant in the reserved or emergency pool."""
    grant = service.create_grant(db, caller.tenant_id, pool=body.pool, scope_key=body.scope_key,
                                 amount=body.amount_usd, expires_at=body.expires_at, reason=body.reason,
                                 actor=caller.principal_id, now=clock.now())
    return JSONResponse(_grant(grant), status_code=201)
