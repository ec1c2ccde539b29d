"""POST /policies/simulate: what a candidate policy would have decided over a window of stored decisions (admin)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from valdrix.auth.service import Caller
from valdrix.db import transaction
from valdrix.deps import Admin, ClockDep
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


async def run(request: Request, caller: Caller, body: SimulationRequest, now: datetime, *,
              via: str) -> SimulationReport:
    """Return the simulation report for `body`, after recording its audit-trail row.

    The replay reads a snapshot of its own on one of anyio's threads, for seconds: on the write executor (one
    thread on SQLite) it would hold up every write, gate decisions included. Only the audit row is a write: a
    short unit of its own on the write executor, like every write.
    """
    state = request.app.state
    report = await run_in_threadpool(service.simulate, state.engine, caller.tenant_id, body, now=now)

    def record() -> uuid.UUID:
        with transaction(state.sessions) as db:
            return service.record(db, caller.tenant_id, report, actor=caller.principal_id, now=now, via=via).id

    event_id = await asyncio.get_running_loop().run_in_executor(state.write_executor, record)
    return report.model_copy(update={"audit_event_id": event_id})


@router.post("/policies/simulate", response_model=SimulationReport, responses=ERRORS)
async def simulate(body: SimulationRequest, request: Request, caller: Admin, clock: ClockDep) -> SimulationReport:
    """Replay the window's decisions under the candidate policy; nothing is written but an audit-trail row.

    Each decision is re-evaluated from its stored input and the budget, credit and spend state the gate read
    for it. Decisions lacking what the candidate needs are counted as not replayable, with the reason.
    """
    return await run(request, caller, body, clock.now(), via="simulate")
