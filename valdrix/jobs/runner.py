"""The periodic jobs and the loop that runs them (behind `valdrix worker` and `valdrix reconcile`).

Each job runs under a database lease (`job_leases`): a replica runs a job only after taking its lease with
one conditional upsert, so however many replicas or CronJob pods run, a job is never run twice at once,
and the worker's schedule (`next_run_at`) is shared by all of them.
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

from prometheus_client import Counter, start_http_server
from sqlalchemy.orm import Session, sessionmaker

from valdrix.approvals import service as approvals
from valdrix.clock import SystemClock
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.jobs import service as leases
from valdrix.notifications import sender
from valdrix.reservations import service as reservations
from valdrix.reservations.metrics import SWEEP_RUNS

log = logging.getLogger("valdrix.worker")

JOB_RUNS = Counter("valdrix_ops_worker_job_runs_total", "Worker job runs by job and outcome.", ["job", "status"])


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


def loop(settings: Settings, selected: tuple[Job, ...], *, notify: bool) -> None:
    """Run the selected jobs whenever due until SIGTERM/SIGINT, serving metrics if a port is configured.

    With `notify`, also send due notifications every `notification_poll_seconds` (jobs are looked at every
    `worker_tick_seconds`).
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
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    log.info("worker %s: jobs %s%s", holder, ", ".join(j.name for j in selected),
             ", notifications" if notify else "")
    client = sender.client(settings) if notify else None
    jobs_due = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() >= jobs_due:
                for job in selected:
                    run_job(factory, settings, job, holder, respect_schedule=True)
                jobs_due = time.monotonic() + settings.worker_tick_seconds
            if client is not None:
                try:
                    sender.run_once(factory, settings, SystemClock(), holder, client)
                except Exception:  # a database outage must not end the worker; the next poll tries again
                    log.exception("sending notifications failed")
            stop.wait(settings.notification_poll_seconds if client is not None else settings.worker_tick_seconds)
    finally:
        if client is not None:
            client.close()
        engine.dispose()
