"""HCP Terraform / Terraform Enterprise run tasks: the run-task endpoint and its admin API."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from valdrix.config import Settings
from valdrix.db import transaction
from valdrix.deps import DB, Admin, ClockDep, KeyRingDep, Member, SettingsDep, WritingRoute
from valdrix.errors import BadRequest, InvalidInput, Unavailable
from valdrix.integrations import service
from valdrix.integrations.models import RunTaskJob, RunTaskSettings
from valdrix.integrations.schemas import (
    HmacKeyIssued,
    Mapping,
    MappingsPut,
    Problem,
    RunTaskAck,
    RunTaskJobs,
    RunTaskJobView,
    RunTaskRequest,
    RunTaskSettingsView,
)

router = APIRouter(prefix="/api/v1/enforcement/integrations/terraform-cloud", tags=["integrations"],
                   route_class=WritingRoute)


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """Return `schema` with its local `$defs` references replaced by the definitions (for `openapi_extra`)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema


# The endpoint reads the raw body (the signature covers its exact bytes), so its schema is given by hand.
_REQUEST_SCHEMA = RunTaskRequest.model_json_schema()
_REQUEST_SCHEMA = _inlined(_REQUEST_SCHEMA, _REQUEST_SCHEMA.get("$defs", {}))


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # `model` registers the Problem schema; the answer's media type is application/problem+json.
    body = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {status: {"model": Problem, "content": {"application/problem+json": body}} for status in statuses}


@router.post(
    "/run-task", response_model=RunTaskAck, responses=_problems(400, 401, 413, 415, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _REQUEST_SCHEMA}}},
        "parameters": [{"name": service.SIGNATURE_HEADER, "in": "header", "required": True,
                        "description": "HMAC-SHA512 (hex) of the raw body under the tenant's run-task HMAC key",
                        "schema": {"type": "string"}}]})
async def run_task(request: Request, tenant: Annotated[str | None, Query(
        min_length=1, max_length=128, description="the tenant's name (default: VALDRIX_BOOTSTRAP_TENANT)")] = None
                   ) -> RunTaskAck:
    """Accept a run-task request from HCP Terraform: verify its signature, then queue it and answer at once.

    The result follows on the run's callback URL, sent by `valdrix worker`. The verification request HCP
    Terraform sends when the run task is saved (access token `test-token`) is answered without queueing.
    """
    body = await request.body()
    signature = request.headers.get(service.SIGNATURE_HEADER)
    state = request.app.state
    name = tenant or state.settings.bootstrap_tenant

    def unit() -> RunTaskAck:
        with transaction(state.sessions) as db:
            tenant_id = service.verify(db, name, body, signature, state.keyring)
            payload = _json_object(body)
            if payload.get("access_token") == service.VERIFICATION_TOKEN:
                return RunTaskAck(status="verified")
            try:
                req = RunTaskRequest.model_validate(payload)
            except ValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
                raise InvalidInput(f"invalid run task request: {fields}", code="invalid_run_task_request") from exc
            service.check_urls(req)
            if state.keyring is None:
                raise Unavailable("no signing keys are configured (VALDRIX_SIGNING_KEYS_DIR)",
                                  code="signing_keys_unavailable")
            job_id, new = service.enqueue(db, tenant_id, req, keyring=state.keyring, ids=state.ids,
                                          now=state.clock.now())
            return RunTaskAck(status="queued" if new else "already_queued", job_id=str(job_id))

    return await asyncio.get_running_loop().run_in_executor(state.write_executor, unit)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("request body is not valid JSON", code="malformed_json") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("run task request must be a JSON object", code="invalid_run_task_request")
    return payload


def _view(row: RunTaskSettings | None, url: str) -> RunTaskSettingsView:
    return RunTaskSettingsView(
        run_task_url=url, hmac_key_configured=row is not None and row.hmac_key_sealed is not None,
        hmac_key_rotated_at=row.hmac_key_rotated_at if row is not None else None,
        mappings=[Mapping.model_validate(m) for m in (row.mappings if row is not None else [])])


def _url(db: Session, settings: Settings, tenant_id: uuid.UUID) -> str:
    return service.run_task_url(db, settings.public_url, tenant_id)


@router.get("", response_model=RunTaskSettingsView, responses=_problems(401, 403))
def get_run_task_settings(db: DB, caller: Admin, settings: SettingsDep) -> RunTaskSettingsView:
    """Return the tenant's run-task set-up: the URL to enter in HCP Terraform, whether a key is set, the mapping."""
    return _view(service.settings_of(db, caller.tenant_id), _url(db, settings, caller.tenant_id))


@router.post("/hmac-key", status_code=201, response_model=HmacKeyIssued, responses=_problems(401, 403, 503))
def rotate_hmac_key(db: DB, caller: Admin, settings: SettingsDep, keyring: KeyRingDep,
                    clock: ClockDep) -> HmacKeyIssued:
    """Set a new random run-task HMAC key and return it this once; the previous key stops verifying at once."""
    row, key = service.rotate_key(db, caller.tenant_id, keyring=keyring, now=clock.now())
    assert row.hmac_key_rotated_at is not None
    return HmacKeyIssued(hmac_key=key, hmac_key_rotated_at=row.hmac_key_rotated_at,
                         run_task_url=_url(db, settings, caller.tenant_id))


@router.put("/mappings", response_model=RunTaskSettingsView, responses=_problems(401, 403, 422))
def put_mappings(body: MappingsPut, db: DB, caller: Admin, settings: SettingsDep,
                 clock: ClockDep) -> RunTaskSettingsView:
    """Replace which project and environment each organization/workspace (`*`: any) is decided for."""
    seen = {(m.organization.lower(), m.workspace.lower()) for m in body.mappings}
    if len(seen) != len(body.mappings):
        raise InvalidInput("each organization/workspace pair may appear once", code="duplicate_mapping")
    row = service.put_mappings(db, caller.tenant_id, [m.model_dump() for m in body.mappings], now=clock.now())
    return _view(row, _url(db, settings, caller.tenant_id))


def _job(row: RunTaskJob) -> RunTaskJobView:
    return RunTaskJobView(id=str(row.id), task_result_id=row.task_result_id, run_id=row.run_id, stage=row.stage,
                          organization_name=row.organization_name, workspace_name=row.workspace_name,
                          status=row.status, attempts=row.attempts,
                          decision_id=str(row.decision_id) if row.decision_id else None, result=row.result,
                          last_error=row.last_error, created_at=row.created_at, updated_at=row.updated_at,
                          finished_at=row.finished_at)


@router.get("/runs", response_model=RunTaskJobs, responses=_problems(401, 403))
def list_runs(db: DB, caller: Member, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunTaskJobs:
    """Return the newest run-task requests with their status, decision and the task result sent."""
    return RunTaskJobs(items=[_job(r) for r in service.recent_jobs(db, caller.tenant_id, limit=limit)])
