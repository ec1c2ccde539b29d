"""Reservations (admin): list active ones, reconcile one, release overdue ones, list exceptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from valdrix.decisions.models import Decision
from valdrix.decisions.router import decode_cursor, encode_cursor
from valdrix.deps import DB, Admin, ClockDep, SettingsDep, WritingRoute
from valdrix.jsonio import JSONResponse
from valdrix.money import monthly
from valdrix.reservations import service
from valdrix.reservations.models import Reconciliation
from valdrix.reservations.schemas import OverdueIn, ReconcileIn

router = APIRouter(prefix="/api/v1/enforcement/reservations", tags=["reservations"], route_class=WritingRoute)


def _money(value: Any) -> str | None:
    return None if value is None else str(monthly(value))


def reconciliation_json(row: Reconciliation) -> dict[str, Any]:
    """Return a stored reconciliation as JSON data."""
    return {
        "decision_id": str(row.decision_id), "trigger": row.trigger, "status": row.status,
        "reserved_usd": _money(row.reserved_usd), "actual_monthly_delta_usd": _money(row.actual_monthly_delta_usd),
        "drift_usd": _money(row.drift_usd), "allocation_consumed_usd": _money(row.allocation_consumed_usd),
        "allocation_released_usd": _money(row.allocation_released_usd),
        "credit_consumed_usd": _money(row.credit_consumed_usd), "credit_released_usd": _money(row.credit_released_usd),
        "credit_settlement": row.credit_settlement, "notes": row.notes, "idempotency_key": row.idempotency_key,
        "reservation_active": False, "reconciled_at": row.created_at.isoformat(),
        "actor": str(row.actor) if row.actor else None,
    }


def _active_json(row: Decision, age: int) -> dict[str, Any]:
    return {"decision_id": str(row.id), "source": row.source, "environment": row.environment,
            "project_id": row.project_id, "action": row.action, "resource_reference": row.resource_reference,
            "decision": row.decision, "budget_scope": row.budget_scope,
            "reserved_allocation_usd": _money(row.reserved_allocation_usd),
            "reserved_credit_usd": _money(row.reserved_credit_usd),
            "reserved_total_usd": _money(row.reserved_allocation_usd + row.reserved_credit_usd),
            "created_at": row.created_at.isoformat(), "age_seconds": age}


@router.get("/active")
def list_active(db: DB, caller: Admin, clock: ClockDep, cursor: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JSONResponse:
    """Return active reservations, oldest first, with their age; `next_cursor` continues the listing."""
    now = clock.now()
    rows = service.list_active(db, caller.tenant_id, after=decode_cursor(cursor) if cursor else None,
                               limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_active_json(r, max(0, int((now - r.created_at).total_seconds()))) for r in rows]
    return JSONResponse({"items": items,
                         "next_cursor": encode_cursor(rows[-1].created_at, rows[-1].id) if more else None})


@router.post("/reconcile-overdue")
def reconcile_overdue(db: DB, caller: Admin, clock: ClockDep, settings: SettingsDep,
                      body: OverdueIn | None = None) -> JSONResponse:
    """Release in full the reservations older than `older_than_seconds` (default the SLA setting)."""
    body = body or OverdueIn()
    age = body.older_than_seconds or settings.reservation_sla_seconds
    result = service.release_overdue(db, tenant_id=caller.tenant_id, older_than_seconds=age, limit=body.limit,
                                     actor=caller.principal_id, now=clock.now())
    return JSONResponse({"released_count": len(result.decision_ids), "total_released_usd": str(result.total_usd),
                         "decision_ids": [str(d) for d in result.decision_ids],
                         "older_than_seconds": result.older_than_seconds})


@router.get("/reconciliation-exceptions")
def reconciliation_exceptions(db: DB, caller: Admin, cursor: str | None = None,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JSONResponse:
    """Return overage, savings (beyond tolerance) and auto-released reservations, newest first."""
    rows = service.exceptions(db, caller.tenant_id, before=decode_cursor(cursor) if cursor else None,
                              limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{**reconciliation_json(r), "source": d.source, "environment": d.environment,
              "project_id": d.project_id, "action": d.action, "resource_reference": d.resource_reference}
             for r, d in rows]
    last = rows[-1][0] if rows else None
    return JSONResponse({"items": items,
                         "next_cursor": encode_cursor(last.created_at, last.id) if more and last else None})


@router.post("/{decision_id}/reconcile")
def reconcile(decision_id: uuid.UUID, body: ReconcileIn, db: DB, caller: Admin, clock: ClockDep,
              settings: SettingsDep,
              idempotency_key: Annotated[str | None, Header(max_length=256)] = None) -> JSONResponse:
    """Settle a reservation against its actual monthly cost; a same-key same-payload repeat replays the result."""
    outcome = service.reconcile(
        db, caller.tenant_id, decision_id, actual=body.actual_monthly_delta_usd, notes=body.notes,
        idempotency_key=service.check_key(idempotency_key),
        tolerance=service.Tolerance(settings.reconciliation_tolerance_usd, settings.reconciliation_tolerance_percent),
        actor=caller.principal_id, now=clock.now())
    return JSONResponse({**reconciliation_json(outcome.row), "replayed": outcome.replayed})
