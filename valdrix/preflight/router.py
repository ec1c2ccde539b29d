"""POST /gate/terraform/preflight: the CI entry point (runbook §1)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from valdrix.decisions import service
from valdrix.decisions.router import gate_context
from valdrix.decisions.schemas import continuation, decision_body
from valdrix.deps import DB, ClockDep, IdsDep, Member, SettingsDep
from valdrix.preflight import translate
from valdrix.preflight.schemas import TerraformPreflightRequest

router = APIRouter(prefix="/api/v1/enforcement", tags=["preflight"])


@router.post("/gate/terraform/preflight")
def preflight(body: TerraformPreflightRequest, db: DB, caller: Member, settings: SettingsDep, clock: ClockDep,
              ids: IdsDep, idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Return the decision for a planned Terraform change with the continuation a pipeline must persist."""
    key = translate.idempotency_key(body, idempotency_key)
    outcome = service.decide(db, gate_context(caller, settings, clock, ids), translate.to_input(body), key,
                             body.expected_request_fingerprint)
    decision = outcome.decision
    return JSONResponse({"run_id": body.run_id, "stage": body.stage, "idempotency_key": key,
                         "replayed": outcome.replayed, **decision_body(decision),
                         "continuation": continuation(decision)})
