"""POST /gate/terraform/preflight: the CI entry point (runbook §1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sqlalchemy.orm import Session

from valdrix.auth.service import Caller
from valdrix.decisions import service
from valdrix.decisions.router import GATE_PROBLEMS, gate_context
from valdrix.decisions.schemas import continuation, decision_body
from valdrix.deps import in_gate_transaction
from valdrix.jsonio import JSONResponse
from valdrix.preflight import translate
from valdrix.preflight.schemas import PreflightOut, TerraformPreflightRequest

router = APIRouter(prefix="/api/v1/enforcement", tags=["preflight"])


@router.post("/gate/terraform/preflight", response_model=PreflightOut, responses=GATE_PROBLEMS)
async def preflight(body: TerraformPreflightRequest, request: Request,
                    idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Return the decision for a planned Terraform change with the continuation a pipeline must persist."""
    key = translate.idempotency_key(body, idempotency_key)
    inp = translate.to_input(body)

    def work(db: Session, caller: Caller) -> dict[str, Any]:
        outcome = service.decide(db, gate_context(request, caller), inp, key,
                                 body.expected_request_fingerprint)
        return {"run_id": body.run_id, "stage": body.stage, "idempotency_key": key, "replayed": outcome.replayed,
                **decision_body(outcome.decision), "continuation": continuation(outcome.decision)}

    return JSONResponse(await in_gate_transaction(request, work))
