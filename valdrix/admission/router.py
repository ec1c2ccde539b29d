"""POST /gate/k8s/admission/review: the validating webhook the Kubernetes API server calls (runbook §2).

Async on purpose: the body is parsed here so a malformed envelope is a 400 with our code, the fast path runs
without a thread hop, and the priced path runs in a worker thread under a deadline this coroutine enforces
even when the database hangs (an answer must reach the API server before its `timeoutSeconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, Request
from starlette.types import Scope

from valdrix.admission import translate
from valdrix.admission.schemas import parse_review, review_response
from valdrix.admission.service import AdmissionGate, Answer, Credential
from valdrix.config import Settings
from valdrix.decisions.metrics import observe_decision
from valdrix.deps import bearer_token, in_gate_unit
from valdrix.errors import Unauthenticated
from valdrix.jsonio import JSONResponse

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


def client_common_name(scope: Scope) -> str | None:
    """Return the subject CN of the verified client certificate of this connection, or None."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        return None
    names = x509.load_pem_x509_certificate(chain[0].encode()).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and value else None


async def _verify_fast(request: Request, gate: AdmissionGate, credential: Credential, started: float) -> None:
    # The check may write (the cluster tenant's principal), so it runs as a write unit; its answer does not
    # depend on it, so it is not awaited past the deadline.
    if gate.cached_caller(credential) is None:
        check = asyncio.get_running_loop().run_in_executor(request.app.state.write_executor, gate.check_fast,
                                                           credential)
        check.add_done_callback(lambda f: f.cancelled() or f.exception())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(check), _left(gate, started))


def _left(gate: AdmissionGate, started: float) -> float:
    return max(0.0, gate.settings.admission_timeout_seconds - (time.monotonic() - started))


@router.post("/gate/k8s/admission/review")
async def admission_review(request: Request) -> JSONResponse:
    """Return the AdmissionReview answer for one API-server call (HTTP 200 for every evaluated request)."""
    started = time.monotonic()
    gate: AdmissionGate = request.app.state.admission
    review = parse_review(await request.body())
    credential = credential_for(request, gate.settings)
    req = review.request
    outcome = translate.translate(req, gate.book, gate.where)
    if isinstance(outcome, translate.Fast):
        await _verify_fast(request, gate, credential, started)
        delta = outcome.delta.monthly_delta_usd if outcome.delta is not None else None
        observe_decision(translate.SOURCE, "ALLOW", [], "fast", time.monotonic() - started)
        audit = {"decision": "ALLOW", "fast-path": outcome.why}
        if delta is not None:
            audit["monthly-delta-usd"] = str(delta)
        return _timed(review_response(req.uid, allowed=True, audit=audit), started)
    if isinstance(outcome, translate.Refused):
        await _verify_fast(request, gate, credential, started)
        observe_decision(translate.SOURCE, "DENY", ["invalid_cost_input"], "invalid", time.monotonic() - started)
        return _timed(review_response(
            req.uid, allowed=False, message=f"Valdrix Gate cannot price this object: {outcome.message}",
            audit={"decision": "DENY", "invalid-cost-input": outcome.message[:256]}), started)
    change = outcome
    inp = change.inp if isinstance(change, translate.Priced) else None
    answer = await in_gate_unit(
        request, lambda db: gate.caller(db, credential),
        lambda db, caller, left: gate.decide(db, caller, req, change, left),
        lambda caller, trigger: gate.unrecorded(caller, inp, trigger, started),
        known=gate.cached_caller(credential), started=started, deadline=gate.settings.admission_timeout_seconds,
        forget=lambda: gate.forget(credential))
    return _timed(_review(req.uid, answer), started)


def _review(uid: str, answer: Answer) -> dict[str, object]:
    return review_response(uid, allowed=answer.allowed, message=answer.message, warnings=list(answer.warnings),
                           audit=dict(answer.audit))


def _timed(body: dict[str, object], started: float) -> JSONResponse:
    # Server-Timing lets operators (and bench/admission.py) see the time spent inside the gate.
    return JSONResponse(body, headers={"Server-Timing": f"gate;dur={(time.monotonic() - started) * 1000:.3f}"})
