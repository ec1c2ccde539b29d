"""Notification routes (admin): targets, a test event per target, and the delivery history."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response

from valdrix.decisions.router import decode_cursor, encode_cursor
from valdrix.deps import DB, Admin, ClockDep, IdsDep, WritingRoute
from valdrix.notifications import service
from valdrix.notifications.models import NotificationDelivery, NotificationEvent, NotificationTarget
from valdrix.notifications.schemas import DeliveryOut, DeliveryPage, TargetCreated, TargetIn, TargetList, TargetOut

router = APIRouter(prefix="/api/v1/enforcement/notifications", tags=["notifications"], route_class=WritingRoute)


def _masked(target: NotificationTarget) -> str:
    if target.kind != "slack":
        return target.url
    parts = urlsplit(target.url)
    return f"{parts.scheme}://{parts.hostname}/…"


def _target(target: NotificationTarget) -> TargetOut:
    return TargetOut(id=target.id, kind=target.kind, name=target.name, url=_masked(target),
                     event_types=target.event_types, project_ids=target.project_ids,
                     environments=target.environments, created_at=target.created_at)


def _delivery(d: NotificationDelivery, e: NotificationEvent, t: NotificationTarget) -> DeliveryOut:
    return DeliveryOut(id=d.id, event_id=e.id, event_type=e.type, target_id=t.id, target_kind=t.kind,
                       target_name=t.name, status=d.status, attempts=d.attempts,
                       next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                       last_error=d.last_error, last_status_code=d.last_status_code, delivered_at=d.delivered_at,
                       created_at=d.created_at)


@router.get("/targets", response_model=TargetList)
def list_targets(db: DB, caller: Admin) -> TargetList:
    """Return the tenant's notification targets (secrets are never returned after creation)."""
    return TargetList(items=[_target(t) for t in service.list_targets(db, caller.tenant_id)])


@router.post("/targets", status_code=201, response_model=TargetCreated)
def create_target(body: TargetIn, db: DB, caller: Admin, clock: ClockDep, ids: IdsDep) -> TargetCreated:
    """Create a target and return it with its secret, shown this once."""
    spec = service.NewTarget(kind=body.kind, name=body.name, url=body.url, event_types=body.event_types,
                             project_ids=body.project_ids, environments=body.environments)
    target, secret = service.create_target(db, caller.tenant_id, spec, actor=caller.principal_id, now=clock.now(),
                                           target_id=ids.new())
    return TargetCreated(**_target(target).model_dump(), secret=secret)


@router.delete("/targets/{target_id}", status_code=204, response_class=Response)
def delete_target(target_id: uuid.UUID, db: DB, caller: Admin) -> Response:
    """Delete a target: nothing more is sent to it; its pending deliveries are dropped."""
    service.delete_target(db, caller.tenant_id, target_id)
    return Response(status_code=204)


@router.post("/targets/{target_id}/test", status_code=202, response_model=DeliveryOut)
def test_target(target_id: uuid.UUID, db: DB, caller: Admin, clock: ClockDep) -> DeliveryOut:
    """Queue a test event for the target; the worker sends it (see its delivery for the outcome)."""
    delivery = service.send_test(db, caller.tenant_id, target_id, now=clock.now(), actor=caller.principal_id)
    event = db.get_one(NotificationEvent, delivery.event_id)
    target = db.get_one(NotificationTarget, delivery.target_id)
    return _delivery(delivery, event, target)


@router.get("/deliveries", response_model=DeliveryPage)
def list_deliveries(db: DB, caller: Admin, status: Literal["pending", "delivered", "dead"] | None = None,
                    target_id: uuid.UUID | None = None, cursor: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> DeliveryPage:
    """Return deliveries, newest first: status, attempts and the last error of each."""
    rows, position = service.deliveries(db, caller.tenant_id, status=status, target_id=target_id,
                                        after=decode_cursor(cursor) if cursor else None, limit=limit)
    return DeliveryPage(items=[_delivery(*row) for row in rows],
                        next_cursor=encode_cursor(*position) if position else None)
