"""HCP Terraform run tasks, the request side: the tenant's HMAC key and mapping, verifying and queueing requests.

A request is verified (HMAC-SHA512 of the raw body under the tenant's key) before anything else is read from
it, and queued in the answering transaction; `integrations.worker` works the queue.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from valdrix.approvals.tokens import KeyRing
from valdrix.auth.models import Tenant
from valdrix.clock import IdFactory
from valdrix.errors import InvalidInput, Unauthenticated
from valdrix.integrations.models import RunTaskJob, RunTaskSettings
from valdrix.integrations.schemas import RunTaskRequest

log = logging.getLogger("valdrix.run_task")

RUN_TASK_PATH = "/api/v1/enforcement/integrations/terraform-cloud/run-task"
SIGNATURE_HEADER = "X-TFC-Task-Signature"
# The access token of HCP Terraform's verification request (sent when a run task is created or edited).
VERIFICATION_TOKEN = "test-token"


def _key_context(tenant_id: uuid.UUID) -> str:
    return f"run-task-hmac:{tenant_id}"


def token_context(job_id: uuid.UUID) -> str:
    return f"run-task-token:{job_id}"


# ---- the tenant's settings (admin API) -----------------------------------------------------------------------

def settings_of(session: Session, tenant_id: uuid.UUID) -> RunTaskSettings | None:
    """Return the tenant's run-task settings, None if it never set any."""
    return session.get(RunTaskSettings, tenant_id)


def _editable(session: Session, tenant_id: uuid.UUID, now: datetime) -> RunTaskSettings:
    row = settings_of(session, tenant_id)
    if row is None:
        row = RunTaskSettings(tenant_id=tenant_id, hmac_key_sealed=None, hmac_key_kid=None, hmac_key_rotated_at=None,
                              mappings=[], created_at=now, updated_at=now)
        session.add(row)
    return row


def rotate_key(session: Session, tenant_id: uuid.UUID, *, keyring: KeyRing, now: datetime
               ) -> tuple[RunTaskSettings, str]:
    """Replace the tenant's run-task HMAC key by a new random one; return the settings and the key (shown once).

    The previous key stops verifying at once.
    """
    key = secrets.token_hex(32)
    row = _editable(session, tenant_id, now)
    row.hmac_key_sealed = keyring.seal(key, _key_context(tenant_id))
    row.hmac_key_kid = keyring.active_kid
    row.hmac_key_rotated_at = now
    row.updated_at = now
    session.flush()
    return row, key


def put_mappings(session: Session, tenant_id: uuid.UUID, mappings: list[dict[str, Any]], *,
                 now: datetime) -> RunTaskSettings:
    """Replace the tenant's organization/workspace → project mapping; return the settings."""
    row = _editable(session, tenant_id, now)
    row.mappings = mappings
    row.updated_at = now
    session.flush()
    return row


def run_task_url(session: Session, public_url: str, tenant_id: uuid.UUID) -> str:
    """Return the URL to enter in HCP Terraform for a tenant's run task (the tenant named in the query)."""
    name = session.get_one(Tenant, tenant_id).name
    return f"{public_url.rstrip('/')}{RUN_TASK_PATH}?tenant={quote(name, safe='')}"


# ---- the endpoint -------------------------------------------------------------------------------------------

def verify(session: Session, tenant_name: str, body: bytes, signature: str | None,
           keyring: KeyRing | None) -> uuid.UUID:
    """Return the tenant whose run-task HMAC key signed `body`; raise Unauthenticated otherwise.

    The signature is compared in constant time. An unknown tenant, a tenant without a key and a wrong
    signature are refused alike, so the answer does not tell which tenants exist.
    """
    if not signature or not signature.strip():
        raise Unauthenticated(f"missing {SIGNATURE_HEADER}: configure an HMAC key on the run task",
                              code="run_task_signature_missing")
    tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == tenant_name)).first()
    row = settings_of(session, tenant_id) if tenant_id is not None else None
    key = None
    if row is not None and row.hmac_key_sealed is not None:
        if keyring is None:
            log.warning("run-task request refused: no signing keys configured to unseal the HMAC key")
        else:
            key = keyring.unseal(row.hmac_key_sealed, _key_context(row.tenant_id))
            if key is None:
                log.warning("run-task HMAC key of tenant %s cannot be unsealed (signing key %s gone): rotate it",
                            row.tenant_id, row.hmac_key_kid)
    # Computed even without a key, so an unknown tenant costs the same time as a wrong signature.
    expected = hmac.new((key or "").encode(), body, hashlib.sha512).hexdigest().encode()
    given = signature.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given) or key is None or tenant_id is None:
        raise Unauthenticated("run task signature does not verify", code="run_task_signature_invalid")
    return tenant_id


def checked_url(url: str) -> str:
    """Return `url` if the worker may call it with a run's token: https, or http to a loopback address only.

    Raise ValueError otherwise. The token must never travel in clear text over a network.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return url
    raise ValueError("must be an https URL (http only to a loopback address)")


def same_origin(a: str, b: str) -> bool:
    """Return whether two URLs share scheme, host and port (the plan and callback come from one HCP Terraform)."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_urls(req: RunTaskRequest) -> None:
    """Raise InvalidInput unless the run's URLs may receive its token: https (or loopback), one host."""
    urls = {"task_result_callback_url": req.task_result_callback_url, "plan_json_api_url": req.plan_json_api_url}
    for name, url in urls.items():
        if url is None:
            continue
        try:
            checked_url(url)
        except ValueError as exc:
            raise InvalidInput(f"{name} {exc}", code="invalid_run_task_request") from exc
    plan = req.plan_json_api_url
    if plan is not None and not same_origin(plan, req.task_result_callback_url):
        raise InvalidInput("plan_json_api_url and task_result_callback_url must be on the same HCP Terraform host",
                           code="invalid_run_task_request")


def enqueue(session: Session, tenant_id: uuid.UUID, req: RunTaskRequest, *, keyring: KeyRing, ids: IdFactory,
            now: datetime) -> tuple[uuid.UUID, bool]:
    """Queue a verified request; return the job id and whether it is new (a re-sent task result is queued once)."""
    job_id = ids.new()
    values = {
        "id": job_id, "tenant_id": tenant_id, "task_result_id": req.task_result_id, "run_id": req.run_id,
        "stage": req.stage, "organization_name": req.organization_name, "workspace_id": req.workspace_id,
        "workspace_name": req.workspace_name, "payload": req.model_dump(mode="json", exclude={"access_token"}),
        "access_token_sealed": keyring.seal(req.access_token, token_context(job_id)), "status": "queued",
        "attempts": 0, "next_attempt_at": now, "lease_holder": None, "lease_expires_at": None,
        "decision_id": None, "result": None, "last_error": None, "created_at": now, "updated_at": now,
        "finished_at": None}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(RunTaskJob).values(**values)
                 .on_conflict_do_nothing(index_elements=[RunTaskJob.tenant_id, RunTaskJob.task_result_id])
                 .returning(RunTaskJob.id))
    if session.execute(statement).first() is not None:
        return job_id, True
    existing = session.scalars(select(RunTaskJob.id).where(RunTaskJob.tenant_id == tenant_id,
                                                           RunTaskJob.task_result_id == req.task_result_id)).one()
    return existing, False


def recent_jobs(session: Session, tenant_id: uuid.UUID, *, limit: int) -> list[RunTaskJob]:
    """Return the tenant's newest run-task jobs first."""
    return list(session.scalars(select(RunTaskJob).where(RunTaskJob.tenant_id == tenant_id)
                                .order_by(RunTaskJob.created_at.desc(), RunTaskJob.id).limit(limit)))
