"""Notification events, targets and deliveries.

`emit` writes an event in the caller's transaction, so an event exists exactly when the change it reports was
committed. The worker then fans each event out to the targets it matches (`dispatch`), takes due deliveries under
a per-row lease (`claim`), sends them outside any transaction, and records each outcome (`record`).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from valdrix.approvals.models import ApprovalRequest
from valdrix.auth.models import Principal
from valdrix.clock import IdFactory
from valdrix.decisions.models import Decision
from valdrix.errors import NotFound
from valdrix.money import monthly
from valdrix.notifications import engine
from valdrix.notifications.models import (
    BudgetThresholdNotice,
    NotificationDelivery,
    NotificationEvent,
    NotificationTarget,
)

__all__ = ["Claimed", "approval_event", "budget_thresholds", "claim", "create_target", "decision_denied",
           "delete_target", "deliveries", "dispatch", "emit", "list_targets", "oldest_pending", "record",
           "send_test"]


def emit(session: Session, *, tenant_id: uuid.UUID, event_type: str, now: datetime, data: dict[str, Any],
         project_id: str | None = None, environment: str | None = None, event_id: uuid.UUID | None = None,
         target_id: uuid.UUID | None = None) -> NotificationEvent:
    """Add an event to the outbox in the caller's transaction and return it."""
    event_id = event_id or uuid.uuid4()
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    row = NotificationEvent(id=event_id, tenant_id=tenant_id, type=event_type, project_id=project_id,
                            environment=environment, target_id=target_id, payload=payload, created_at=now,
                            dispatched_at=None)
    session.add(row)
    return row


def approval_event(session: Session, event_type: str, approval: ApprovalRequest, decision: Decision, *,
                   now: datetime, actor: uuid.UUID | None = None) -> NotificationEvent:
    """Emit an `approval.*` event describing the approval, its decision and who asked and acted."""
    names = _names(session, {decision.created_by, approval.requested_by, actor})
    requester = approval.requested_by or decision.created_by
    data = {
        "approval_id": str(approval.id), "status": approval.status, **_decision_data(decision),
        "requested_by": names.get(requester) if requester else None,
        "actor": names.get(actor) if actor else None, "review_notes": approval.review_notes,
        "rule_id": approval.routing_rule_id, "required_permission": approval.required_permission,
        "expires_at": approval.expires_at.isoformat(), "console_path": f"/console/approvals/{approval.id}",
    }
    return emit(session, tenant_id=decision.tenant_id, event_type=event_type, now=now, data=data,
                project_id=decision.project_id, environment=decision.environment)


def decision_denied(session: Session, decision: Decision, *, now: datetime, event_id: uuid.UUID
                    ) -> NotificationEvent:
    """Emit `decision.denied` for a DENY decision."""
    names = _names(session, {decision.created_by})
    data = {**_decision_data(decision), "requested_by": names.get(decision.created_by) if decision.created_by
            else None, "console_path": f"/console/decisions/{decision.id}"}
    return emit(session, tenant_id=decision.tenant_id, event_type="decision.denied", now=now, data=data,
                project_id=decision.project_id, environment=decision.environment, event_id=event_id)


def budget_thresholds(session: Session, *, tenant_id: uuid.UUID, scope_key: str, limit: Decimal,
                      used_before: Decimal, used_after: Decimal, thresholds: Sequence[int], now: datetime,
                      decision_id: uuid.UUID, ids: IdFactory) -> int:
    """Emit `budget.threshold_crossed` once per scope, month and threshold that this change crosses; return how
    many were emitted. A notice and its event share one id from `ids`.
    """
    emitted = 0
    month = now.strftime("%Y-%m")
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for percent in engine.crossed(limit, used_before, used_after, thresholds):
        notice_id = ids.new()
        # The unique key decides: of concurrent decisions crossing the same threshold, one inserts the notice.
        inserted = session.execute(
            dialect.insert(BudgetThresholdNotice)
            .values(id=notice_id, tenant_id=tenant_id, scope_key=scope_key, month=month, percent=percent,
                    created_at=now)
            .on_conflict_do_nothing(index_elements=["tenant_id", "scope_key", "month", "percent"])
            .returning(BudgetThresholdNotice.id)).first()
        if inserted is None:
            continue
        emit(session, tenant_id=tenant_id, event_type="budget.threshold_crossed", now=now, event_id=notice_id,
             project_id=None if scope_key == "default" else scope_key, environment=None,
             data={"scope_key": scope_key, "threshold_percent": percent, "month": month,
                   "monthly_limit_usd": str(monthly(limit)), "used_usd": str(monthly(used_after)),
                   "utilisation_percent": str((used_after * 100 / limit).quantize(Decimal("0.1"))),
                   "decision_id": str(decision_id), "console_path": "/console/budgets"})
        emitted += 1
    return emitted


@dataclass(frozen=True)
class NewTarget:
    kind: str
    name: str
    url: str
    event_types: Sequence[str]
    project_ids: Sequence[str]
    environments: Sequence[str]


def create_target(session: Session, tenant_id: uuid.UUID, spec: NewTarget, *, actor: uuid.UUID | None,
                  now: datetime, target_id: uuid.UUID) -> tuple[NotificationTarget, str]:
    """Create a target; return it with its secret, which is shown to the caller this once.

    A webhook gets a fresh Standard Webhooks secret (`whsec_` + base64 of 32 random bytes); a Slack target's
    secret is its incoming-webhook URL.
    """
    secret = spec.url if spec.kind == "slack" else "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    row = NotificationTarget(id=target_id, tenant_id=tenant_id, kind=spec.kind, name=spec.name,
                             url=spec.url, secret=secret, event_types=list(spec.event_types),
                             project_ids=list(spec.project_ids), environments=list(spec.environments),
                             active=True, created_by=actor, created_at=now)
    session.add(row)
    session.flush()
    return row, secret


def list_targets(session: Session, tenant_id: uuid.UUID) -> list[NotificationTarget]:
    """Return the tenant's active targets, oldest first."""
    return list(session.scalars(select(NotificationTarget)
                                .where(NotificationTarget.tenant_id == tenant_id, NotificationTarget.active)
                                .order_by(NotificationTarget.created_at, NotificationTarget.id)))


def delete_target(session: Session, tenant_id: uuid.UUID, target_id: uuid.UUID) -> None:
    """Deactivate a target: nothing more is sent to it (its delivery history stays); raise NotFound."""
    target = _target(session, tenant_id, target_id)
    target.active = False
    session.execute(update(NotificationDelivery)
                    .where(NotificationDelivery.target_id == target_id, NotificationDelivery.status == "pending")
                    .values(status="dead", last_error="target deleted", lease_holder=None, lease_expires_at=None))


def send_test(session: Session, tenant_id: uuid.UUID, target_id: uuid.UUID, *, now: datetime,
              actor: uuid.UUID | None) -> NotificationDelivery:
    """Queue a test event for one target (whatever its filters) and return its delivery."""
    target = _target(session, tenant_id, target_id)
    names = _names(session, {actor})
    event = emit(session, tenant_id=tenant_id, event_type=engine.TEST_EVENT, now=now, target_id=target.id,
                 data={"message": "Valdrix Gate test notification", "target": target.name,
                       "requested_by": names.get(actor) if actor else None})
    event.dispatched_at = now
    session.flush()  # the event row first: the delivery refers to it
    delivery = _delivery(event, target.id, now)
    session.add(delivery)
    session.flush()
    return delivery


def deliveries(session: Session, tenant_id: uuid.UUID, *, status: str | None, target_id: uuid.UUID | None,
               after: tuple[datetime, uuid.UUID] | None, limit: int
               ) -> tuple[list[tuple[NotificationDelivery, NotificationEvent, NotificationTarget]],
                          tuple[datetime, uuid.UUID] | None]:
    """Return the tenant's deliveries, newest first, and the position of the next page (None at the end)."""
    query = (select(NotificationDelivery, NotificationEvent, NotificationTarget)
             .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
             .join(NotificationTarget, NotificationTarget.id == NotificationDelivery.target_id)
             .where(NotificationDelivery.tenant_id == tenant_id)
             .order_by(NotificationDelivery.created_at.desc(), NotificationDelivery.id.desc()))
    if status is not None:
        query = query.where(NotificationDelivery.status == status)
    if target_id is not None:
        query = query.where(NotificationDelivery.target_id == target_id)
    if after is not None:
        at, row_id = after
        query = query.where(or_(NotificationDelivery.created_at < at,
                                and_(NotificationDelivery.created_at == at, NotificationDelivery.id < row_id)))
    rows = [(d, e, t) for d, e, t in session.execute(query.limit(limit + 1)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1][0].created_at, rows[-1][0].id) if more else None)


def dispatch(session: Session, *, now: datetime, limit: int) -> int:
    """Fan up to `limit` undispatched events out to the targets they match; return how many events were done.

    Each event is claimed by one conditional UPDATE, so concurrent workers never fan out an event twice; the
    unique (event, target) key would refuse a second delivery row anyway.
    """
    events = list(session.scalars(select(NotificationEvent).where(NotificationEvent.dispatched_at.is_(None))
                                  .order_by(NotificationEvent.created_at).limit(limit)
                                  .with_for_update(skip_locked=True)))
    done = 0
    targets: dict[uuid.UUID, list[NotificationTarget]] = {}
    for event in events:
        won = cast(CursorResult[Any], session.execute(
            update(NotificationEvent).where(NotificationEvent.id == event.id, NotificationEvent.dispatched_at.is_(None))
            .values(dispatched_at=now).execution_options(synchronize_session=False))).rowcount == 1
        if not won:
            continue
        if event.tenant_id not in targets:
            targets[event.tenant_id] = list_targets(session, event.tenant_id)
        for target in targets[event.tenant_id]:
            filters = engine.Filters(target.event_types, target.project_ids, target.environments)
            if engine.matches(filters, event.type, event.project_id, event.environment):
                session.add(_delivery(event, target.id, now))
        done += 1
    session.flush()
    return done


@dataclass(frozen=True)
class Claimed:
    """What a sender needs to make one attempt, read while the lease was taken."""

    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    attempts: int
    payload: dict[str, Any]
    created_at: datetime
    target_kind: str
    target_url: str
    target_secret: str


def claim(session: Session, holder: str, *, now: datetime, lease_seconds: float, limit: int) -> list[Claimed]:
    """Take the lease on up to `limit` due deliveries and return them.

    A delivery is due when pending, its next attempt has come and nobody holds an unexpired lease on it. On
    PostgreSQL concurrent claimers skip each other's rows (SKIP LOCKED); SQLite runs one writer at a time. The
    lease outlasts an attempt, and a worker killed mid-attempt leaves a lease that expires: the delivery is then
    sent again, with the same event id.
    """
    free = (NotificationDelivery.status == "pending", NotificationDelivery.next_attempt_at <= now,
            or_(NotificationDelivery.lease_expires_at.is_(None), NotificationDelivery.lease_expires_at <= now))
    due = (select(NotificationDelivery.id).where(*free).order_by(NotificationDelivery.next_attempt_at).limit(limit)
           .with_for_update(skip_locked=True))
    ids = list(session.scalars(due))
    if not ids:
        return []
    until = now + timedelta(seconds=lease_seconds)
    # The conditions again: a claimer that read the rows before another's lease committed takes none of them.
    session.execute(update(NotificationDelivery).where(NotificationDelivery.id.in_(ids), *free)
                    .values(lease_holder=holder, lease_expires_at=until, updated_at=now)
                    .execution_options(synchronize_session=False))
    rows = session.execute(select(NotificationDelivery, NotificationEvent, NotificationTarget)
                           .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
                           .join(NotificationTarget, NotificationTarget.id == NotificationDelivery.target_id)
                           .where(NotificationDelivery.id.in_(ids), NotificationDelivery.lease_holder == holder)
                           .order_by(NotificationDelivery.next_attempt_at)).all()
    return [Claimed(d.id, e.id, e.type, d.attempts, e.payload, e.created_at, t.kind, t.url, t.secret)
            for d, e, t in rows]


def record(session: Session, claimed: Claimed, holder: str, *, now: datetime, error: str | None,
           status_code: int | None, backoff: engine.Backoff, jitter: float) -> str:
    """Record one attempt's outcome while still holding the lease; return `delivered`, `retry` or `dead`.

    An outcome recorded after the lease was lost (taken over by another worker) changes nothing.
    """
    attempts = claimed.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "lease_holder": None, "lease_expires_at": None,
                              "last_status_code": status_code, "updated_at": now}
    if error is None:
        outcome = "delivered"
        values.update(status="delivered", delivered_at=now, last_error=None)
    else:
        retry_at = backoff.next_attempt(attempts, now, jitter)
        outcome = "retry" if retry_at is not None else "dead"
        values.update(status="pending" if retry_at is not None else "dead", last_error=error[:500],
                      next_attempt_at=retry_at or now)
    session.execute(update(NotificationDelivery)
                    .where(NotificationDelivery.id == claimed.delivery_id, NotificationDelivery.lease_holder == holder)
                    .values(**values).execution_options(synchronize_session=False))
    return outcome


def oldest_pending(session: Session) -> datetime | None:
    """Return when the oldest event still waiting to be fanned out or delivered was created (None: none wait)."""
    undelivered = session.scalar(select(func.min(NotificationEvent.created_at))
                                 .join(NotificationDelivery, NotificationDelivery.event_id == NotificationEvent.id)
                                 .where(NotificationDelivery.status == "pending"))
    undispatched = session.scalar(select(func.min(NotificationEvent.created_at))
                                  .where(NotificationEvent.dispatched_at.is_(None)))
    waiting = [t for t in (undelivered, undispatched) if t is not None]
    return min(waiting) if waiting else None


def _delivery(event: NotificationEvent, target_id: uuid.UUID, now: datetime) -> NotificationDelivery:
    return NotificationDelivery(id=uuid.uuid4(), tenant_id=event.tenant_id, event_id=event.id, target_id=target_id,
                                status="pending", attempts=0, next_attempt_at=now, lease_holder=None,
                                lease_expires_at=None, last_error=None, last_status_code=None, delivered_at=None,
                                created_at=now, updated_at=now)


def _target(session: Session, tenant_id: uuid.UUID, target_id: uuid.UUID) -> NotificationTarget:
    target = session.scalars(select(NotificationTarget).where(
        NotificationTarget.id == target_id, NotificationTarget.tenant_id == tenant_id,
        NotificationTarget.active)).first()
    if target is None:
        raise NotFound("notification target not found", code="notification_target_not_found")
    return target


def _decision_data(decision: Decision) -> dict[str, Any]:
    return {"decision_id": str(decision.id), "decision": decision.decision, "source": decision.source,
            "project_id": decision.project_id, "environment": decision.environment, "action": decision.action,
            "resource_reference": decision.resource_reference,
            "estimated_monthly_delta_usd": str(monthly(decision.estimated_monthly_delta_usd)),
            "reason_codes": list(decision.reason_codes), "policy_version": decision.policy_version}


def _names(session: Session, ids: set[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = session.execute(select(Principal.id, Principal.name).where(Principal.id.in_(wanted))).tuples()
    return {principal_id: name for principal_id, name in rows}
