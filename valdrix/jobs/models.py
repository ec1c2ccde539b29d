"""Database leases: which replica runs a periodic job now, and when the job is next due."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    # The holder may run the job until then; afterwards any replica may take the lease over.
    expires_at: Mapped[datetime]
    # The job is not started again (by the worker's schedule) before this time.
    next_run_at: Mapped[datetime]
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_finished_at: Mapped[datetime | None]
