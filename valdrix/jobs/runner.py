"""The periodic jobs and the loop that runs them (behind `valdrix worker` and `valdrix reconcile`).

Each job runs under a database lease (`job_leases`): a replica runs a job only after taking its lease with
one conditional upsert, so however many replicas or CronJob pods run, a job is never run twice at once,
and the worker's schedule (`next_run_at`) is shared by all of them. Between the periodic jobs the worker
works queued HCP Terraform run-task requests, each under a lease of its own (`integrations.worker`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

import httpx
from prometheus_client import REGISTRY, Counter, start_http_server
from sqlalchemy.orm import Session, sessionmaker

from valdrix.approvals import service as approvals
from valdrix.approvals.tokens import KeyRing
from valdrix.clock import SystemClock, UuidFactory
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.integrations.worker import RunTaskWorker
from valdrix.jobs import service as leases
from valdrix.notifications import sender
from valdrix.observability.metrics import BuildInfo
from valdrix.reservations import service as reservations
from valdrix.reservations.metrics import SWEEP_RUNS

log = logging.getLogger("valdrix.worker")

JOB_RUNS = Counter("valdrix_ops_worker_job_runs_total", "Worker job runs by job and outcome.", ["job", "status"])
RUN_TASKS = Counter("valdrix_ops_worker_run_task_attempts_total", "Run-task requests worked (one per attempt).")


@dataclass(frozen=True)
class Job:
    name: str
    interval_seconds: int
    run: Callable[[Session, datetime, Settings], str]


def _release_overdue(session: Session, now: datetime, settings: Settings) -> str:
    result = reservations.release_overdue(session, tenant_id=None, older_than_seconds=settings.reservation_sla_seconds,
                                          limit=settings.reconcile_sweep_limit, actor=None, now=now)
    return f"released {len(result.decision_ids)} reservation(s), {result.total_usd} USD"


def _expire_approvals(session: Session, now: datetime, settings: Settings) -> str:
    # Pending approvals past their deadline also expire lazily when touched; the sweep frees their
    # reservations even when nobody looks at them again.
    return f"expired {approvals.expire_due(session, now, limit=settings.reconcile_sweep_limit)} approval(s)"


RELEASE_OVERDUE = "reservations.release_overdue"
EXPIRE_APPROVALS = "approvals.expire"


def jobs(settings: Settings) -> tuple[Job, ...]:
    """Return the periodic jobs the worker runs."""
    return (Job(RELEASE_OVERDUE, settings.reconcile_interval_seconds, _release_overdue),
            Job(EXPIRE_APPROVALS, settings.approval_expiry_interval_seconds, _expire_approvals))


def run_job(factory: sessionmaker[Session], settings: Settings, job: Job, holder: str, *,
            respect_schedule: bool) -> str | None:
    """Run `job` once if its lease can be taken; return `success` or `failure`, or None when skipped."""
    now = SystemClock().now()
    with transaction(factory) as session:
        if not leases.acquire(session, job.name, holder, now=now, ttl_seconds=settings.job_lease_seconds,
                              respect_schedule=respect_schedule):
            return None
    status = "success"
    try:
        with transaction(factory) as session:
            summary = job.run(session, now, settings)
        log.info("job %s: %s", job.name, summary)
    except Exception:  # a failed run is recorded and retried at the next slot; the worker keeps going
        status = "failure"
        log.exception("job %s failed", job.name)
    finally:
        with transaction(factory) as session:
            leases.finish(session, job.name, holder, now=SystemClock().now(), status=status,
                          next_run_at=now + timedelta(seconds=job.interval_seconds))
    JOB_RUNS.labels(job.name, status).inc()
    if job.name == RELEASE_OVERDUE:
        SWEEP_RUNS.labels(status).inc()
    return status


def loop(settings: Settings, selected: tuple[Job, ...], *, queues: bool = False) -> None:
    """Run the selected jobs whenever due until SIGTERM/SIGINT, serving metrics if a port is configured.

    With `queues`, also send due notifications and work queued run tasks: the queues are polled every
    `notification_poll_seconds` or `run_task_poll_seconds` (the shorter), the jobs looked at every
    `worker_tick_seconds`. Raise KeyRingError when the signing keys are misconfigured.
    """
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if settings.worker_metrics_port:
        REGISTRY.register(BuildInfo("worker"))
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    http = httpx.Client(timeout=settings.run_task_http_timeout_seconds)
    notifier = sender.client(settings) if queues else None
    tasks = _run_task_worker(settings, factory, http, holder) if queues else None
    log.info("worker %s: jobs %s%s%s", holder, ", ".join(j.name for j in selected),
             ", notifications" if notifier else "", ", run tasks" if tasks else "")
    poll = min(settings.notification_poll_seconds, settings.run_task_poll_seconds)
    next_jobs = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() >= next_jobs:
                for job in selected:
                    run_job(factory, settings, job, holder, respect_schedule=True)
                next_jobs = time.monotonic() + settings.worker_tick_seconds
            if notifier is not None:
                try:
                    sender.run_once(factory, settings, SystemClock(), holder, notifier)
                except Exception:  # a database outage must not end the worker; the next poll tries again
                    log.exception("sending notifications failed")
            if tasks is not None:
                work_run_tasks(tasks)
            wait = next_jobs - time.monotonic()
            stop.wait(max(0.0, min(wait, poll) if queues else wait))
    finally:
        if notifier is not None:
            notifier.close()
        http.close()
        engine.dispose()


def _run_task_worker(settings: Settings, factory: sessionmaker[Session], http: httpx.Client,
                     holder: str) -> RunTaskWorker | None:
    keyring = KeyRing.from_settings(settings)
    if keyring is None:
        # Queued requests keep their access token sealed under the signing key: without it they stay queued
        # for a worker that has it.
        log.warning("no signing keys configured (VALDRIX_SIGNING_KEYS_DIR): run tasks are not worked here")
        return None
    return RunTaskWorker(sessions=factory, settings=settings, keyring=keyring, clock=SystemClock(),
                         ids=UuidFactory(), http=http, holder=holder)


def work_run_tasks(tasks: RunTaskWorker) -> int:
    """Work the due run tasks; return how many. A failure is logged and left to the next poll."""
    try:
        worked = tasks.work_due()
    except Exception:  # the database may be away for a moment; the worker keeps going
        log.exception("working run tasks failed")
        return 0
    if worked:
        RUN_TASKS.inc(worked)
    return worked
