"""POST /gate/terraform/preflight: the CI entry point (runbook §1)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from valdrix.decisions import engine, service
from valdrix.decisions.router import answer
from valdrix.decisions.schemas import continuation, decision_body, unrecorded_body
from valdrix.jsonio import JSONResponse
from valdrix.preflight import translate
from valdrix.preflight.schemas import TerraformPreflightRequest

router = APIRouter(prefix="/api/v1/enforcement", tags=["preflight"])


@router.post("/gate/terraform/preflight")
async def preflight(body: TerraformPreflightRequest, request: Request,
                    idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> JSONResponse:
    """Return the decision for a planned Terraform change with the continuation a pipeline must persist."""
    key = translate.idempotency_key(body, idempotency_key)
    inp = translate.to_input(body)

    run = {"run_id": body.run_id, "stage": body.stage, "idempotency_key": key}

    def render(outcome: service.Outcome) -> dict[str, Any]:
        return {**run, "replayed": outcome.replayed, **decision_body(outcome.decision),
                "continuation": continuation(outcome.decision)}

    def render_unrecorded(unrecorded: engine.Unrecorded) -> dict[str, Any]:
        return {**run, "replayed": False, **unrecorded_body(inp, unrecorded), "continuation": None}

    return JSONResponse(await answer(request, inp, key, body.expected_request_fingerprint, render, render_unrecorded))
