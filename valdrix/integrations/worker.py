"""HCP Terraform run tasks, the worker side: working the queue `integrations.service` fills.

A worker claims one due request under a lease (SKIP LOCKED on PostgreSQL; SQLite's write lock serialises
claims), downloads and prices the plan with no transaction open, decides (or redeems an approval of the
identical plan) in one transaction that also stores the task result, then sends the result to HCP Terraform,
retrying with a bounded backoff until the run's ten minutes are up. Every write of a claimed request is
conditional on still holding its lease.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from valdrix.approvals import service as approvals
from valdrix.approvals.tokens import KeyRing
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.db import transaction
from valdrix.decisions import service as gate
from valdrix.errors import Unavailable, ValdrixError
from valdrix.integrations import hcp, service, translate
from valdrix.integrations.models import RunTaskJob
from valdrix.integrations.schemas import RunTaskRequest
from valdrix.pricing.summary import change_digest
from valdrix.pricing.terraform import PricingError, price_plan

log = logging.getLogger("valdrix.run_task")

# A run's access token, and with it the callback, is valid for ten minutes from the request.
CALLBACK_DEADLINE = timedelta(minutes=10)
MAX_BACKOFF_SECONDS = 60.0
_DUE = ("queued", "callback")


@dataclass(frozen=True)
class _Claimed:
    """What a worker needs of a claimed job, read in the claiming transaction."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    attempts: int
    payload: dict[str, Any]
    token: str | None
    deadline: datetime
    result: dict[str, Any] | None


class _Retry(Exception):
    """A step failed in a way a later attempt can get past."""


@dataclass(frozen=True)
class RunTaskWorker:
    """Works queued run-task requests; any number of them may run on any number of replicas."""

    sessions: sessionmaker[Session]
    settings: Settings
    keyring: KeyRing
    clock: Clock
    ids: IdFactory
    http: httpx.Client
    holder: str

    def work_due(self, limit: int = 100) -> int:
        """Work due jobs one after another until none is due (at most `limit`); return how many were worked."""
        worked = 0
        while worked < limit:
            job = self._claim()
            if job is None:
                break
            self._work(job)
            worked += 1
        return worked

    def _claim(self) -> _Claimed | None:
        now = self.clock.now()
        free = or_(RunTaskJob.lease_expires_at.is_(None), RunTaskJob.lease_expires_at <= now)
        with transaction(self.sessions) as session:
            job = session.scalars(select(RunTaskJob)
                                  .where(RunTaskJob.status.in_(_DUE), RunTaskJob.next_attempt_at <= now, free)
                                  .order_by(RunTaskJob.next_attempt_at).limit(1)
                                  # Concurrent workers take different jobs instead of queueing behind one.
                                  .with_for_update(skip_locked=True)).first()
            if job is None:
                return None
            if not _changed(session, update(RunTaskJob).where(RunTaskJob.id == job.id, free)
                            .values(lease_holder=self.holder,
                                    lease_expires_at=now + timedelta(seconds=self.settings.run_task_lease_seconds))):
                return None
            token = (self.keyring.unseal(job.access_token_sealed, service.token_context(job.id))
                     if job.access_token_sealed is not None else None)
            return _Claimed(id=job.id, tenant_id=job.tenant_id, status=job.status, attempts=job.attempts,
                            payload=dict(job.payload), token=token, deadline=job.created_at + CALLBACK_DEADLINE,
                            result=job.result)

    def _work(self, job: _Claimed) -> None:
        if job.token is None:
            self._finish(job, "failed", "the run's access token cannot be unsealed (signing key changed)")
            return
        req = RunTaskRequest.model_validate({**job.payload, "access_token": job.token})
        result = job.result
        try:
            if job.status == "queued":
                result = self._decide(job, req)
                if result is None:
                    return  # the lease was lost to another worker
            assert result is not None
            hcp.send_result(self.http, req.task_result_callback_url, job.token, result)
        except hcp.CallFailed as exc:
            if exc.transient:
                self._retry(job, str(exc))
            else:
                self._finish(job, "failed", str(exc))
            return
        except _Retry as exc:
            self._retry(job, str(exc))
            return
        self._finish(job, "done", None)
        log.info("run task %s (run %s, %s): %s", req.task_result_id, req.run_id, req.stage,
                 result["data"]["attributes"]["status"])

    def _decide(self, job: _Claimed, req: RunTaskRequest) -> dict[str, Any] | None:
        """Price the run's plan and decide; store the task result with the decision. Return it, None if outbid.

        Raise CallFailed (transient) or _Retry when a later attempt may succeed.
        """
        if req.plan_json_api_url is None:
            return self._store(job, None, translate.failed(
                f"Valdrix Gate prices the plan, which the {req.stage} stage does not have: attach the run task at "
                "the post-plan (or pre-apply) stage."))
        try:
            plan = hcp.download_plan(self.http, req.plan_json_api_url, job.token or "",
                                     max_bytes=self.settings.run_task_max_plan_bytes)
        except hcp.CallFailed as exc:
            if exc.transient:
                raise
            return self._store(job, None, translate.failed(f"Valdrix Gate could not read the plan: {exc}"))
        try:
            estimate = price_plan(plan)
        except PricingError as exc:
            return self._store(job, None, translate.failed(f"Valdrix Gate could not price the plan: {exc.message}"))
        digest = change_digest(plan)
        try:
            with transaction(self.sessions) as session:
                row = service.settings_of(session, job.tenant_id)
                where = translate.target(row.mappings if row is not None else [], req.organization_name,
                                         req.workspace_name)
                inp = translate.to_input(req, estimate, digest, where)
                now = self.clock.now()
                redeemed = None if inp.dry_run else approvals.redeem(
                    session, tenant_id=job.tenant_id, source=inp.source, fingerprint=inp.fingerprint, actor=None,
                    now=now)
                if redeemed is not None:
                    approval, decision = redeemed
                    approval_id: str | None = str(approval.id)
                else:
                    ctx = gate.GateContext(tenant_id=job.tenant_id, actor=None, now=now, ids=self.ids,
                                           timeout_seconds=self.settings.gate_timeout_seconds,
                                           lock_timeout_seconds=self.settings.lock_timeout_seconds,
                                           cost_context=self.settings.cost_context,
                                           cost_data_max_age_days=self.settings.cost_data_max_age_days)
                    decision = gate.decide(session, ctx, inp, translate.idempotency_key(req)).decision
                    approval_id = None
                url = f"{self.settings.public_url.rstrip('/')}/console/decisions/{decision.id}"
                result = translate.task_result(decision, estimate, url=url, redeemed_approval=approval_id,
                                               outcomes=req.capabilities.outcomes)
                if not self._record(session, job, decision.id, result):
                    raise _LeaseLost()
        except _LeaseLost:
            return None
        except Unavailable as exc:
            raise _Retry(f"gate unavailable: {exc.message}") from exc
        except ValdrixError as exc:
            # E.g. this run's key already met a different request (the mapping changed since it was decided).
            return self._store(job, None, translate.failed(f"Valdrix Gate refused the run: {exc.message} "
                                                           f"[{exc.code}]"))
        return result

    def _store(self, job: _Claimed, decision_id: uuid.UUID | None, result: dict[str, Any]) -> dict[str, Any] | None:
        with transaction(self.sessions) as session:
            return result if self._record(session, job, decision_id, result) else None

    def _record(self, session: Session, job: _Claimed, decision_id: uuid.UUID | None,
                result: dict[str, Any]) -> bool:
        return _changed(session, update(RunTaskJob)
                        .where(RunTaskJob.id == job.id, RunTaskJob.lease_holder == self.holder,
                               RunTaskJob.status == "queued")
                        .values(status="callback", decision_id=decision_id, result=result,
                                updated_at=self.clock.now()))

    def _retry(self, job: _Claimed, error: str) -> None:
        now = self.clock.now()
        attempts = job.attempts + 1
        delay = min(MAX_BACKOFF_SECONDS, self.settings.run_task_retry_base_seconds * 2 ** (attempts - 1))
        if now + timedelta(seconds=delay) >= job.deadline:
            self._finish(job, "failed", f"{error} (gave up: the run's ten minutes are over)")
            return
        log.warning("run task job %s attempt %d failed, retrying in %.1fs: %s", job.id, attempts, delay, error)
        with transaction(self.sessions) as session:
            session.execute(update(RunTaskJob).where(RunTaskJob.id == job.id, RunTaskJob.lease_holder == self.holder)
                            .values(attempts=attempts, next_attempt_at=now + timedelta(seconds=delay),
                                    lease_holder=None, lease_expires_at=None, last_error=error[:1000],
                                    updated_at=now))

    def _finish(self, job: _Claimed, status: str, error: str | None) -> None:
        now = self.clock.now()
        if error is not None:
            log.warning("run task job %s %s: %s", job.id, status, error)
        with transaction(self.sessions) as session:
            session.execute(update(RunTaskJob).where(RunTaskJob.id == job.id, RunTaskJob.lease_holder == self.holder)
                            .values(status=status, attempts=job.attempts + 1, access_token_sealed=None,
                                    lease_holder=None, lease_expires_at=None,
                                    last_error=error[:1000] if error is not None else None, updated_at=now,
                                    finished_at=now))


class _LeaseLost(Exception):
    """Another worker took the job over: this one's transaction is rolled back."""


def _changed(session: Session, statement: Any) -> bool:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount == 1
