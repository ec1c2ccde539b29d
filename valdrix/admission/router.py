"""POST /gate/k8s/admission/review: the validating webhook the Kubernetes API server calls (runbook §2).

Async on purpose: the body is parsed here so a malformed envelope is a 400 with our code, the fast path runs
without a thread hop, and the priced path runs in a worker thread under a deadline this coroutine enforces
even when the database hangs (an answer must reach the API server before its `timeoutSeconds`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from valdrix.admission import translate
from valdrix.admission.schemas import (
    AdmissionRequest,
    AdmissionReviewOut,
    MalformedReview,
    parse_review,
    review_response,
)
from valdrix.admission.service import AdmissionGate, Answer, Credential
from valdrix.config import Settings
from valdrix.decisions.metrics import observe_decision
from valdrix.deps import bearer_token
from valdrix.errors import Unauthenticated, ValdrixError
from valdrix.jsonio import JSONResponse
from valdrix.serving import client_common_name

router = APIRouter(prefix="/api/v1/enforcement", tags=["admission"])


def credential_for(request: Request, settings: Settings) -> Credential:
    """Return how the caller identified itself: API key, mapped client certificate, or the cluster tenant."""
    token = bearer_token(request)
    if token is not None:
        return Credential("api_key", token)
    common_name = client_common_name(request.scope)
    if common_name is not None:
        tenant = settings.admission_mtls_tenants.get(common_name)
        if tenant is None:
            raise Unauthenticated(f"client certificate CN {common_name!r} is not mapped to a tenant",
                                  code="unmapped_client_certificate")
        return Credential("mtls", tenant)
    if settings.admission_cluster_tenant:
        return Credential("cluster", settings.admission_cluster_tenant)
    raise Unauthenticated("missing bearer API key or client certificate", code="missing_credentials")


async def _verify_fast(gate: AdmissionGate, credential: Credential) -> None:
    if gate.cached_caller(credential) is None:
        await run_in_threadpool(gate.check_fast, credential)


@router.post("/gate/k8s/admission/review", response_model=AdmissionReviewOut)
async def admission_review(request: Request) -> JSONResponse:
    """Return the AdmissionReview answer for one API-server call (HTTP 200 for every evaluated request)."""
    started = time.monotonic()
    gate: AdmissionGate = request.app.state.admission
    try:
        req = parse_review(await request.body()).request
    except MalformedReview as exc:
        if exc.uid is None:
            raise  # nothing to answer inside a review: a 400 problem document
        return _refused(request, gate, exc.uid, None, exc, started)
    outcome = translate.translate(req, gate.book, gate.where)
    try:
        return await _decide(request, gate, req, outcome, credential_for(request, gate.settings), started)
    except ValdrixError as exc:
        environment = outcome.inp.environment if isinstance(outcome, translate.Priced) else None
        return _refused(request, gate, req.uid, environment, exc, started)


def _refused(request: Request, gate: AdmissionGate, uid: str, environment: str | None, error: ValdrixError,
             started: float) -> JSONResponse:
    """Answer a review the gate will not decide inside an AdmissionReview: once the uid is readable, the API
    server must get one, so the tenant's mode (not the webhook's failurePolicy) settles the outcome."""
    try:
        caller = gate.cached_caller(credential_for(request, gate.settings))
    except ValdrixError:
        caller = None
    return _timed(_review(uid, gate.refused(caller, environment, error, started)), started)


async def _decide(request: Request, gate: AdmissionGate, req: AdmissionRequest, outcome: translate.Outcome,
                  credential: Credential, started: float) -> JSONResponse:
    if isinstance(outcome, translate.Fast):
        await _verify_fast(gate, credential)
        delta = outcome.delta.monthly_delta_usd if outcome.delta is not None else None
        observe_decision(translate.SOURCE, "ALLOW", [], "fast", time.monotonic() - started)
        audit = {"decision": "ALLOW", "fast-path": outcome.why}
        if delta is not None:
            audit["monthly-delta-usd"] = str(delta)
        return _timed(review_response(req.uid, allowed=True, audit=audit), started)
    if isinstance(outcome, translate.Refused):
        await _verify_fast(gate, credential)
        observe_decision(translate.SOURCE, "DENY", ["invalid_cost_input"], "invalid", time.monotonic() - started)
        return _timed(review_response(
            req.uid, allowed=False, message=f"Valdrix Gate cannot price this object: {outcome.message}",
            audit={"decision": "DENY", "invalid-cost-input": outcome.message[:256]}), started)
    deadline = gate.settings.admission_timeout_seconds
    executor: ThreadPoolExecutor = request.app.state.gate_executor
    work = asyncio.get_running_loop().run_in_executor(executor, gate.decide, req, credential, outcome,
                                                      deadline * 0.8)
    try:
        answer = await asyncio.wait_for(work, timeout=max(0.01, deadline - (time.monotonic() - started)))
    except TimeoutError:
        # The worker may still finish and record its decision; a retry of this uid then replays that record.
        inp = outcome.inp if isinstance(outcome, translate.Priced) else None
        answer = gate.unrecorded(gate.cached_caller(credential), inp, "gate_timeout", started)
    return _timed(_review(req.uid, answer), started)


def _review(uid: str, answer: Answer) -> dict[str, object]:
    return review_response(uid, allowed=answer.allowed, message=answer.message, warnings=list(answer.warnings),
                           audit=dict(answer.audit), code=answer.code)


def _timed(body: dict[str, object], started: float) -> JSONResponse:
    # Server-Timing lets operators (and bench/admission.py) see the time spent inside the gate.
    return JSONResponse(body, headers={"Server-Timing": f"gate;dur={(time.monotonic() - started) * 1000:.3f}"})
