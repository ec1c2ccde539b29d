"""Reconciling reservations against actual cost, releasing overdue ones, and reading what needs attention."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from valdrix.budgets import service as budgets
from valdrix.canonical import is_digest_of, sha256_hex
from valdrix.decisions import service as decisions
from valdrix.decisions.models import Decision
from valdrix.errors import Conflict, InvalidInput
from valdrix.ledger import service as ledger
from valdrix.money import monthly
from valdrix.reservations.metrics import DRIFT, RECONCILIATIONS
from valdrix.reservations.models import Reconciliation

EXCEPTION_STATUSES = ("overage", "savings", "auto_released")


@dataclass(frozen=True)
class Tolerance:
    """How far actual cost may differ from the reservation and still count as `matched`."""

    usd: Decimal
    percent: Decimal

    def status(self, drift: Decimal, reserved: Decimal) -> str:
        """Return matched when |drift| <= max(usd, percent % of reserved), else overage or savings by sign."""
        if abs(drift) <= max(self.usd, reserved * self.percent / 100):
            return "matched"
        return "overage" if drift > 0 else "savings"


@dataclass(frozen=True)
class Reconciled:
    row: Reconciliation
    replayed: bool


def list_active(session: Session, tenant_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None,
                limit: int) -> list[Decision]:
    """Return up to `limit` decisions holding an active reservation, oldest first, after the cursor position."""
    query = select(Decision).where(Decision.tenant_id == tenant_id, Decision.reservation_active.is_(True))
    if after is not None:
        at, row_id = after
        query = query.where(or_(Decision.created_at > at, and_(Decision.created_at == at, Decision.id > row_id)))
    return list(session.scalars(query.order_by(Decision.created_at, Decision.id).limit(limit)))


def check_key(raw: str | None) -> str | None:
    """Return the trimmed idempotency key (None when absent); raise InvalidInput outside 4..128 characters."""
    key = (raw or "").strip()
    if not key:
        return None
    if not 4 <= len(key) <= 128:
        raise InvalidInput("Idempotency-Key must be between 4 and 128 characters", code="invalid_idempotency_key")
    return key


def reconcile(session: Session, tenant_id: uuid.UUID, decision_id: uuid.UUID, *, actual: Decimal,
              notes: str | None, idempotency_key: str | None, tolerance: Tolerance, actor: uuid.UUID | None,
              now: datetime) -> Reconciled:
    """Settle a reservation against its actual monthly cost and record the drift; return the stored outcome.

    A repeat with the same idempotency key and payload returns the stored outcome. Raise NotFound for an
    unknown decision, Conflict `idempotency_key_reused` for the same key with another payload, and Conflict
    `reservation_not_active` when the reservation was already settled otherwise (or never held).
    """
    decision = decisions.get(session, tenant_id, decision_id)
    actual = monthly(actual)
    payload = {"actual_monthly_delta_usd": str(actual), "notes": notes}
    request = sha256_hex(payload)
    existing = _find(session, tenant_id, decision_id)
    if existing is not None:
        return _replay(existing, idempotency_key, payload)
    try:
        settlement = budgets.settle(session, decision, actual_monthly=actual, now=now)
    except Conflict:
        # Another replica may have settled it a moment ago: its committed outcome is now visible.
        existing = _find(session, tenant_id, decision_id)
        if existing is not None:
            return _replay(existing, idempotency_key, payload)
        raise
    reserved = settlement.reserved_total
    drift = monthly(actual - reserved)
    status = tolerance.status(drift, reserved)
    row = Reconciliation(
        id=uuid.uuid4(), tenant_id=tenant_id, decision_id=decision.id, trigger="manual", status=status,
        idempotency_key=idempotency_key, request_sha256=request, reserved_usd=reserved,
        actual_monthly_delta_usd=actual, drift_usd=drift, allocation_consumed_usd=settlement.allocation_consumed,
        allocation_released_usd=settlement.allocation_released, credit_consumed_usd=settlement.credit_consumed,
        credit_released_usd=settlement.credit_released, credit_settlement=list(settlement.credits), notes=notes,
        actor=actor, created_at=now)
    session.add(row)
    session.flush()
    ledger.append(session, decision, event="reservation_reconciled", actor=actor, now=now,
                  details={"reconciliation_id": str(row.id), "status": status, "reserved_usd": str(reserved),
                           "actual_monthly_delta_usd": str(actual), "drift_usd": str(drift),
                           "credit_settlement": list(settlement.credits)})
    RECONCILIATIONS.labels("manual", status).inc()
    if drift != 0:
        DRIFT.labels("overage" if drift > 0 else "savings").inc(float(abs(drift)))
    return Reconciled(row=row, replayed=False)


def _find(session: Session, tenant_id: uuid.UUID, decision_id: uuid.UUID) -> Reconciliation | None:
    return session.scalars(select(Reconciliation).where(Reconciliation.tenant_id == tenant_id,
                                                        Reconciliation.decision_id == decision_id)).first()


def _replay(existing: Reconciliation, key: str | None, payload: dict[str, str | None]) -> Reconciled:
    if key is None or existing.idempotency_key != key:
        raise Conflict(f"reservation is not active (already {existing.status.replace('_', ' ')})",
                       code="reservation_not_active", reconciliation_status=existing.status)
    # A settlement recorded before RFC 8785 carries the legacy hash of its payload.
    if existing.request_sha256 is None or not is_digest_of(existing.request_sha256, payload):
        raise Conflict("Idempotency-Key was already used with a different payload for this reservation",
                       code="idempotency_key_reused")
    RECONCILIATIONS.labels("manual_replay", existing.status).inc()
    return Reconciled(row=existing, replayed=True)


@dataclass(frozen=True)
class Released:
    decision_ids: tuple[uuid.UUID, ...]
    total_usd: Decimal
    older_than_seconds: int


def release_overdue(session: Session, *, tenant_id: uuid.UUID | None, older_than_seconds: int, limit: int,
                    actor: uuid.UUID | None, now: datetime) -> Released:
    """Release in full up to `limit` reservations created more than `older_than_seconds` ago, oldest first.

    `tenant_id` None sweeps every tenant (the worker). Rows another sweep has locked are skipped, and each
    reservation is claimed by a conditional update, so concurrent sweeps never release one twice.
    """
    cutoff = now - timedelta(seconds=older_than_seconds)
    query = select(Decision).where(Decision.reservation_active.is_(True), Decision.created_at < cutoff)
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id)
    rows = session.scalars(query.order_by(Decision.created_at, Decision.id).limit(limit)
                           .with_for_update(skip_locked=True)).all()
    released: list[uuid.UUID] = []
    total = monthly(0)
    for decision in rows:
        try:
            settlement = budgets.release(session, decision, now=now)
        except Conflict:
            continue  # settled by someone else between the read and the claim
        amount = settlement.reserved_total
        row = Reconciliation(
            id=uuid.uuid4(), tenant_id=decision.tenant_id, decision_id=decision.id, trigger="auto",
            status="auto_released", idempotency_key=None, request_sha256=None, reserved_usd=amount,
            actual_monthly_delta_usd=None, drift_usd=None, allocation_consumed_usd=settlement.allocation_consumed,
            allocation_released_usd=settlement.allocation_released, credit_consumed_usd=settlement.credit_consumed,
            credit_released_usd=settlement.credit_released, credit_settlement=list(settlement.credits), notes=None,
            actor=actor, created_at=now)
        session.add(row)
        ledger.append(session, decision, event="reservation_auto_released", actor=actor, now=now,
                      details={"reconciliation_id": str(row.id), "released_usd": str(amount),
                               "older_than_seconds": older_than_seconds,
                               "reason": "reservation_reconciliation_sla_expired",
                               "credit_settlement": list(settlement.credits)})
        released.append(decision.id)
        total = monthly(total + amount)
    session.flush()
    if released:
        RECONCILIATIONS.labels("auto", "auto_released").inc(len(released))
    return Released(decision_ids=tuple(released), total_usd=total, older_than_seconds=older_than_seconds)


def exceptions(session: Session, tenant_id: uuid.UUID, *, before: tuple[datetime, uuid.UUID] | None,
               limit: int) -> list[tuple[Reconciliation, Decision]]:
    """Return reconciliations needing attention (overage, savings beyond tolerance, auto-released), newest first."""
    query = (select(Reconciliation, Decision).join(Decision, Decision.id == Reconciliation.decision_id)
             .where(Reconciliation.tenant_id == tenant_id, Reconciliation.status.in_(EXCEPTION_STATUSES)))
    if before is not None:
        at, row_id = before
        query = query.where(or_(Reconciliation.created_at < at,
                                and_(Reconciliation.created_at == at, Reconciliation.id < row_id)))
    rows = session.execute(query.order_by(Reconciliation.created_at.desc(), Reconciliation.id.desc()).limit(limit))
    return [(r, d) for r, d in rows.tuples()]
