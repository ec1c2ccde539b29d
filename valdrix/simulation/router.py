"""POST /policies/simulate: what a candidate policy would have decided over a window of stored decisions (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from valdrix.db import transaction
from valdrix.deps import ClockDep, read_snapshot_as
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


def run(request: Request, body: SimulationRequest, clock: ClockDep, *, via: str) -> SimulationReport:
    """Return the simulation report for `body`, read from a snapshot, after recording its audit-trail row."""
    now = clock.now()
    with read_snapshot_as(request, "admin") as (snapshot, caller):
        report = service.simulate(snapshot, caller.tenant_id, body, now=now)
    with transaction(request.app.state.sessions) as db:
        event = service.record(db, caller.tenant_id, report, actor=caller.principal_id, now=now, via=via)
    return report.model_copy(update={"audit_event_id": event.id})


@router.post("/policies/simulate", response_model=SimulationReport, responses=ERRORS)
def simulate(body: SimulationRequest, request: Request, clock: ClockDep) -> SimulationReport:
    """Replay the window's decisions under the candidate policy; nothing is written but an audit-trail row.

    Each decision is re-evaluated from its stored input and the budget, credit and spend state the gate read
    for it. Decisions lacking what the candidate needs are counted as not replayable, with the reason.
    """
    return run(request, body, clock, via="simulate")
