"""GET /ledger: the append-only decision history (admin)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from valdrix.deps import DB, Admin, WritingRoute
from valdrix.errors import InvalidInput
from valdrix.jsonio import JSONResponse
from valdrix.ledger import service
from valdrix.ledger.models import LedgerEntry

router = APIRouter(prefix="/api/v1/enforcement", tags=["ledger"], route_class=WritingRoute)


def entry_json(row: LedgerEntry) -> dict[str, Any]:
    """Return a ledger entry as JSON data."""
    return {
        "seq": row.seq, "id": str(row.id), "decision_id": str(row.decision_id), "event": row.event,
        "source": row.source, "environment": row.environment, "project_id": row.project_id,
        "decision": row.decision, "reason_codes": row.reason_codes, "policy_version": row.policy_version,
        "policy_sha256": row.policy_sha256, "request_fingerprint": row.request_fingerprint,
        "estimated_monthly_delta_usd": str(row.estimated_monthly_delta_usd),
        "estimated_hourly_delta_usd": str(row.estimated_hourly_delta_usd),
        "reserved_total_usd": str(row.reserved_total_usd), "reservation_active": row.reservation_active,
        "approval_request_id": str(row.approval_request_id) if row.approval_request_id else None,
        "request_payload_sha256": row.request_payload_sha256,
        "response_payload_sha256": row.response_payload_sha256, "details": row.details,
        "actor": str(row.actor) if row.actor else None, "recorded_at": row.recorded_at.isoformat(),
    }


@router.get("/ledger")
def read_ledger(db: DB, caller: Admin, since: datetime | None = None, until: datetime | None = None,
                decision_id: uuid.UUID | None = None, cursor: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> JSONResponse:
    """Return ledger entries in recording order; `next_cursor` continues after the last one."""
    if since and until and since >= until:
        raise InvalidInput("since must be before until", code="invalid_window")
    try:
        after = int(cursor) if cursor else None
    except ValueError as exc:
        raise InvalidInput("malformed cursor", code="invalid_cursor") from exc
    rows = service.page(db, caller.tenant_id, start=since, end=until, after_seq=after, limit=limit + 1,
                        decision_id=decision_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return JSONResponse({"items": [entry_json(r) for r in rows],
                         "next_cursor": str(rows[-1].seq) if more and rows else None})
