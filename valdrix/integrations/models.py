"""The HCP Terraform run-task integration: each tenant's settings, and the queue of run-task requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base

STATUSES = ("queued", "callback", "done", "failed")


class RunTaskSettings(Base):
    """A tenant's run-task set-up: its HMAC key (sealed, never shown again) and workspace → project mapping."""

    __tablename__ = "run_task_settings"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # The HMAC key sealed (AES-256-GCM) under a key derived from the active signing key: verifying a signature
    # needs the secret itself, so it cannot be kept as a hash.
    hmac_key_sealed: Mapped[str | None] = mapped_column(Text)
    hmac_key_kid: Mapped[str | None] = mapped_column(String(64))
    hmac_key_rotated_at: Mapped[datetime | None]
    # [{organization, workspace, project_id, environment}], `*` matching any organization or workspace.
    mappings: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RunTaskJob(Base):
    """One run-task request from HCP Terraform, worked by `valdrix worker` under a per-row lease.

    `queued` → (plan priced, decision made, callback body stored) `callback` → (callback accepted) `done`;
    `failed` when the callback could not be delivered in time. The run's access token is kept sealed only
    while the job needs it.
    """

    __tablename__ = "run_task_jobs"
    __table_args__ = (
        # HCP Terraform re-sends a request it got no 200 for: the same task result is queued once.
        Index("ix_run_task_jobs_task_result", "tenant_id", "task_result_id", unique=True),
        Index("ix_run_task_jobs_due", "status", "next_attempt_at"),
        Index("ix_run_task_jobs_tenant_created", "tenant_id", "created_at"),
        CheckConstraint("status IN ('queued', 'callback', 'done', 'failed')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    task_result_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(32))
    organization_name: Mapped[str] = mapped_column(String(256))
    workspace_id: Mapped[str] = mapped_column(String(128))
    workspace_name: Mapped[str] = mapped_column(String(256))
    # The request as received, without its access token.
    payload: Mapped[dict[str, Any]]
    access_token_sealed: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    # Until then `lease_holder` works the job; afterwards any worker may take it over.
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    decision_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("decisions.id"))
    # The task result sent (or to send) to HCP Terraform's callback.
    result: Mapped[dict[str, Any] | None]
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
