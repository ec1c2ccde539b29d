"""Appending to and reading the decision ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, bindparam, insert, select
from sqlalchemy.orm import Session

from valdrix.canonical import sha256_hex
from valdrix.db import Statement
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry
from valdrix.money import monthly


def insert_statement(prefix: str = "") -> Insert:
    """Return the INSERT of one ledger row, each value bound as `prefix` + column (`seq` comes from the database)."""
    return insert(LedgerEntry).values(
        {column.key: bindparam(prefix + column.key) for column in LedgerEntry.__table__.columns if column.key != "seq"})


_INSERT = Statement(insert_statement())


def append(session: Session, decision: Decision, *, event: str, actor: uuid.UUID | None, now: datetime,
           details: dict[str, Any] | None = None) -> None:
    """Write a snapshot of `decision` after a state change in the current transaction."""
    write(session, entry(decision, event=event, actor=actor, now=now, details=details))


def write(session: Session, row: dict[str, Any]) -> None:
    """Insert a ledger row built by `entry` in the current transaction."""
    _INSERT.run(session, row)


def entry(decision: Decision, *, event: str, actor: uuid.UUID | None, now: datetime,
          details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the ledger row (column values) snapshotting `decision` after a state change."""
    return {
        "id": uuid.uuid4(), "tenant_id": decision.tenant_id, "decision_id": decision.id, "event": event,
        "source": decision.source, "environment": decision.environment, "project_id": decision.project_id,
        "decision": decision.decision, "reason_codes": list(decision.reason_codes),
        "policy_version": decision.policy_version, "policy_sha256": decision.policy_sha256,
        "request_fingerprint": decision.request_fingerprint,
        "estimated_monthly_delta_usd": decision.estimated_monthly_delta_usd,
        "estimated_hourly_delta_usd": decision.estimated_hourly_delta_usd,
        "reserved_total_usd": monthly(decision.reserved_allocation_usd + decision.reserved_credit_usd),
        "reservation_active": decision.reservation_active, "approval_request_id": decision.approval_request_id,
        "request_payload_sha256": sha256_hex(decision.request_payload),
        "response_payload_sha256": sha256_hex(decision.response_payload),
        "details": details or {}, "actor": actor, "recorded_at": now,
    }


def page(session: Session, tenant_id: uuid.UUID, *, start: datetime | None, end: datetime | None,
         after_seq: int | None, limit: int, decision_id: uuid.UUID | None = None) -> list[LedgerEntry]:
    """Return up to `limit` entries in recording order after the cursor, within [start, end)."""
    query = select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id)
    if start is not None:
        query = query.where(LedgerEntry.recorded_at >= start)
    if end is not None:
        query = query.where(LedgerEntry.recorded_at < end)
    if after_seq is not None:
        query = query.where(LedgerEntry.seq > after_seq)
    if decision_id is not None:
        query = query.where(LedgerEntry.decision_id == decision_id)
    return list(session.scalars(query.order_by(LedgerEntry.seq).limit(limit)))
