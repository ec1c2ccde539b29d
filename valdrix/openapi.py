"""The OpenAPI document the server publishes: what each route declares, plus the answers every route shares.

Routes declare their response model and the problems only they raise (`valdrix.errors.problems`); this module
adds what the application around them does for every route, so the document says what the server really
answers: the bearer scheme, the guard's 400/413/415, validation's 422, the database's 503 and 409, all as
`application/problem+json`. `tests/integration/test_contract.py` holds the server to it with schemathesis.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from valdrix.admission.schemas import AdmissionReview
from valdrix.errors import PROBLEM_MEDIA_TYPE, problems
from valdrix.policies.schemas import PolicyPutOut

PUBLIC_PATHS = frozenset({"/.well-known/jwks.json"})
# Authenticated by an HMAC signature over the body (a documented header), not by an API key.
SIGNED_PATHS = frozenset({"/api/v1/enforcement/integrations/terraform-cloud/run-task"})
# The webhook authenticates inside its answer (an AdmissionReview, also for a bad credential) and may also
# be called with a client certificate instead of a key.
REVIEW_PATH = "/api/v1/enforcement/gate/k8s/admission/review"
BODY_METHODS = frozenset({"post", "put", "patch"})

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document; `code` is the stable machine-readable error code.",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}


def _shared(path: str, method: str, operation: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """Return the problem responses the application adds around this operation."""
    shared: dict[int, tuple[str, ...]] = {400: ("nul_character",), 503: ("database_unavailable", "database_error")}
    if operation.get("parameters"):
        shared[422] = ("invalid_request",)
    if method in BODY_METHODS:
        shared |= {400: ("nul_character", "malformed_json", "json_too_deep"), 413: ("payload_too_large",),
                   415: ("unsupported_media_type",), 409: ("conflicting_write",)}
        if "requestBody" in operation:
            shared[422] = ("invalid_request",)
    if path == REVIEW_PATH:
        shared[400] = (*shared[400], "malformed_admission_review")
    elif path in SIGNED_PATHS:
        shared[401] = ("run_task_signature_missing", "run_task_signature_invalid")
    elif path not in PUBLIC_PATHS:
        shared |= {401: ("missing_credentials", "invalid_credentials"), 403: ("insufficient_role",)}
    else:
        del shared[503]
    return problems(shared)


def _merge(operation: dict[str, Any], extra: dict[int | str, dict[str, Any]]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for key, response in extra.items():
        status = str(key)
        declared = responses.get(status)
        if declared is None or PROBLEM_MEDIA_TYPE not in declared.get("content", {}):
            responses[status] = response  # also replaces FastAPI's default validation-error 422
            continue
        codes = sorted(set(_codes(declared)) | set(_codes(response)))
        responses[status] = problems({int(status): tuple(codes)})[status]


def _codes(response: dict[str, Any]) -> list[str]:
    codes: list[str] = response.get("x-problem-codes", [])
    return codes


def document(app: FastAPI) -> dict[str, Any]:
    """Return (and cache on the app) the OpenAPI document of `app`."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "An API key (`vxk_…`) as a bearer token"}
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    review = AdmissionReview.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schemas.update(review.pop("$defs", {}))
    schemas["AdmissionReview"] = review
    # PUT /policies answers one of two models (saved, or a dry run's report): the saved one is referenced there.
    saved = PolicyPutOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(saved.pop("$defs", {}))
    schemas["PolicyPutOut"] = saved
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            if path == REVIEW_PATH:
                # The route parses its body itself (a malformed review is its own 400), so FastAPI cannot see it.
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AdmissionReview"}}}}
            _merge(operation, _shared(path, method, operation))
            if path == REVIEW_PATH:
                operation["security"] = [{"bearer": []}, {}]
            elif path not in PUBLIC_PATHS | SIGNED_PATHS:
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = spec
    return spec
