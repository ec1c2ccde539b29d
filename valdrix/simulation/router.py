"""POST /policies/simulate: what a candidate policy would have decided over a window of stored decisions (admin)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from valdrix.auth.service import Caller
from valdrix.deps import DB, Admin, ClockDep
from valdrix.simulation import service
from valdrix.simulation.schemas import SimulationReport, SimulationRequest

router = APIRouter(prefix="/api/v1/enforcement", tags=["policies"])

_PROBLEM: dict[str, object] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "Missing or unknown API key (`missing_credentials`, `invalid_credentials`).", **_PROBLEM},
    403: {"description": "The caller is not an admin (`insufficient_role`).", **_PROBLEM},
    422: {"description": "Invalid candidate policy or window (`validation_error`), or a malformed cursor "
                         "(`invalid_cursor`).", **_PROBLEM},
}


def run(request: Request, db: Session, caller: Caller, body: SimulationRequest, now: datetime, *,
        via: str) -> SimulationReport:
    """Return the simulation report for `body`, after recording its audit-trail row in the request's transaction.

    The transaction that authenticated the caller is ended first (it wrote nothing): the replay reads from a
    snapshot of its own for seconds, and on SQLite an open request transaction would hold the database's one
    write lock, and every gate decision with it, that long. The audit row then opens the request's next one.
    """
    db.rollback()
    report = service.simulate(request.app.state.engine, caller.tenant_id, body, now=now)
    event = service.record(db, caller.tenant_id, report, actor=caller.principal_id, now=now, via=via)
    return report.model_copy(update={"audit_event_id": event.id})


@router.post("/policies/simulate", response_model=SimulationReport, responses=ERRORS)
def simulate(body: SimulationRequest, request: Request, db: DB, caller: Admin, clock: ClockDep) -> SimulationReport:
    """Replay the window's decisions under the candidate policy; nothing is written but an audit-trail row.

    Each decision is re-evaluated from its stored input and the budget, credit and spend state the gate read
    for it. Decisions lacking what the candidate needs are counted as not replayable, with the reason.
    """
    return run(request, db, caller, body, clock.now(), via="simulate")
