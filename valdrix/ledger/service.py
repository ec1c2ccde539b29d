"""Appending to and reading the decision ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CTE, Insert, bindparam, insert, select
from sqlalchemy.orm import Session

from valdrix.canonical import sha256_hex
from valdrix.db import Statement
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry
from valdrix.money import monthly

# A ledger row copies these columns from its decision (`decision_id` is the decision's `id`); the others
# describe the event.
SNAPSHOT = ("tenant_id", "source", "environment", "project_id", "decision", "reason_codes", "policy_version",
            "policy_sha256", "request_fingerprint", "estimated_monthly_delta_usd", "estimated_hourly_delta_usd",
            "reservation_active", "approval_request_id")
EVENT = ("id", "event", "reserved_total_usd", "request_payload_sha256", "response_payload_sha256", "details", "actor",
         "recorded_at")

_INSERT = Statement(insert(LedgerEntry).values(
    {column.key: bindparam(column.key) for column in LedgerEntry.__table__.columns if column.key != "seq"}))


def insert_from(decided: CTE, prefix: str) -> Insert:
    """Return the INSERT of the ledger row for the decision row `decided` returns (its event columns bound as
    `prefix` + column), so the snapshot is what the database stored."""
    columns = LedgerEntry.__table__.c
    return insert(LedgerEntry).from_select(
        [*EVENT, *SNAPSHOT, "decision_id"],
        select(*(bindparam(prefix + name, type_=columns[name].type) for name in EVENT),
               *(decided.c[name] for name in SNAPSHOT), decided.c.id))


def append(session: Session, decision: Decision, *, event: str, actor: uuid.UUID | None, now: datetime,
           details: dict[str, Any] | None = None) -> None:
    """Write a snapshot of `decision` after a state change in the current transaction."""
    row = event_values(decision, event=event, actor=actor, now=now, details=details)
    row.update({name: getattr(decision, name) for name in SNAPSHOT}, decision_id=decision.id)
    row["reason_codes"] = list(decision.reason_codes)
    _INSERT.run(session, row)


def event_values(decision: Decision, *, event: str, actor: uuid.UUID | None, now: datetime,
                 details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the EVENT columns of the ledger row recording `decision` after a state change."""
    return {
        "id": uuid.uuid4(), "event": event,
        "reserved_total_usd": monthly(decision.reserved_allocation_usd + decision.reserved_credit_usd),
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
