"""Taking and giving back job leases with one conditional statement each, so replicas never run a job twice."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from valdrix.jobs.models import JobLease


def acquire(session: Session, name: str, holder: str, *, now: datetime, ttl_seconds: int,
            respect_schedule: bool) -> bool:
    """Return whether `holder` now holds the lease on job `name` for `ttl_seconds`.

    The lease is taken when nobody holds it (or the holder's lease expired) and, with `respect_schedule`,
    the job is due. Insert-or-conditional-update in one statement: of racing replicas exactly one row
    version wins.
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"name": name, "holder": holder, "expires_at": now + timedelta(seconds=ttl_seconds),
              "next_run_at": now}
    free = JobLease.expires_at <= now
    if respect_schedule:
        free = free & (JobLease.next_run_at <= now)
    statement = (dialect.insert(JobLease).values(**values)
                 .on_conflict_do_update(index_elements=[JobLease.name],
                                        set_={"holder": holder, "expires_at": values["expires_at"]}, where=free)
                 .returning(JobLease.name))
    return session.execute(statement).first() is not None


def finish(session: Session, name: str, holder: str, *, now: datetime, status: str, next_run_at: datetime) -> None:
    """Give the lease back after a run, recording its outcome and when the job is next due."""
    session.execute(update(JobLease).where(JobLease.name == name, JobLease.holder == holder)
                    .values(expires_at=now, next_run_at=next_run_at, last_status=status, last_finished_at=now))
