"""Approval requests: opening, reading, review, expiry, token issue, pickup and the one-time consume.

Every status change is a single conditional UPDATE checked by its row count, so concurrent reviewers,
sweepers and consumers on any number of replicas agree on one winner; the ledger row is written in the
same transaction by the winner only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, and_, bindparam, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from valdrix.approvals import routing
from valdrix.approvals.metrics import TOKEN_EVENTS
from valdrix.approvals.models import REDEEMABLE, ApprovalRequest
from valdrix.approvals.tokens import TOKEN_TYPE, KeyRing
from valdrix.auth.service import Caller
from valdrix.budgets import service as budgets
from valdrix.db import Statement
from valdrix.decisions.engine import SOURCES
from valdrix.decisions.models import Decision
from valdrix.environments import normalise_environment
from valdrix.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValdrixError
from valdrix.ledger import service as ledger
from valdrix.money import hourly, monthly
from valdrix.notifications import service as notifications
from valdrix.policies import service as policies

__all__ = ["Expected", "TokenClaims", "approve", "consume", "create_or_get", "deny", "expire_due", "get", "history",
           "open_for_decision", "pickup", "queue", "revoke"]

# Tolerated clock difference between the replica that signed a token and the one checking nbf/iat.
CLOCK_SKEW_SECONDS = 5
# The queue scans at most this many rows per page so a reviewer who may see few of many stays fast.
QUEUE_MAX_SCAN = 2000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Run for every priced admission request (the Kubernetes re-apply after approval), so built once.
_REDEEMABLE = Statement(
    select(ApprovalRequest.id)
    .join(Decision, Decision.id == ApprovalRequest.decision_id)
    # The predicate of the redeemable-approvals index, verbatim, so every plan can use that index.
    .where(ApprovalRequest.tenant_id == bindparam("tenant_id"), text(REDEEMABLE),
           ApprovalRequest.token_expires_at > bindparam("now"),
           Decision.source == bindparam("source"), Decision.request_fingerprint == bindparam("fingerprint"))
    .order_by(ApprovalRequest.approved_at, ApprovalRequest.id))


def open_for_decision(session: Session, decision: Decision, policy: policies.ActivePolicy, *,
                      requested_by: uuid.UUID | None, now: datetime, approval_id: uuid.UUID) -> ApprovalRequest:
    """Add a pending approval for `decision` with its routing frozen now, link it, and return it."""
    metadata = decision.request_payload.get("metadata") or {}
    facts = routing.RoutingInput(environment=decision.environment, action=decision.action,
                                 monthly_delta=decision.estimated_monthly_delta_usd,
                                 risk_level=metadata.get("computed_risk_class") or decision.computed_context.get(
                                     "risk_class"))
    trace = {**routing.route(policy.document.approval, facts), "policy_version": policy.version,
             "policy_sha256": policy.sha256}
    row = ApprovalRequest(
        id=approval_id, tenant_id=decision.tenant_id, decision_id=decision.id, status="pending",
        requested_by=requested_by, reviewed_by=None, review_notes=None, routing=trace,
        routing_rule_id=str(trace["rule_id"])[:64], required_permission=trace["required_permission"],
        expires_at=now + timedelta(seconds=policy.document.pending_ttl_seconds()), approved_at=None,
        denied_at=None, expired_at=None, revoked_at=None, token_jti=None, token_hash=None, token_expires_at=None,
        token_sealed=None, token_picked_up_at=None, token_consumed_at=None, token_consumed_by=None, created_at=now,
        updated_at=now)
    session.add(row)
    decision.approval_request_id = row.id
    notifications.approval_event(session, "approval.requested", row, decision, now=now, actor=requested_by)
    return row


def create_or_get(session: Session, caller: Caller, decision_id: uuid.UUID, *, now: datetime,
                  approval_id: uuid.UUID) -> tuple[ApprovalRequest, Decision, bool]:
    """Return (approval, decision, created) for a REQUIRE_APPROVAL decision, opening the approval if it has none.

    Raise NotFound for an unknown decision, Conflict for one that needs no approval or was a dry run.
    """
    decision = session.scalars(select(Decision).where(Decision.id == decision_id,
                                                      Decision.tenant_id == caller.tenant_id)).first()
    if decision is None:
        raise NotFound("decision not found", code="decision_not_found")
    if decision.decision != "REQUIRE_APPROVAL":
        raise Conflict(f"decision is {decision.decision}; only REQUIRE_APPROVAL decisions take approvals",
                       code="decision_not_approvable")
    if decision.dry_run:
        # A dry run reserves nothing and is never replayed as the real decision, so it cannot be approved.
        raise Conflict("a dry-run decision cannot be approved; evaluate the change for real",
                       code="decision_is_dry_run")
    existing = _by_decision(session, decision.id)
    if existing is not None:
        _expire_if_due(session, existing, decision, now)
        return existing, decision, False
    policy = policies.current(session, caller.tenant_id)
    try:
        with session.begin_nested():
            row = open_for_decision(session, decision, policy, requested_by=caller.principal_id, now=now,
                                    approval_id=approval_id)
            decision.updated_at = now
            session.flush()  # a concurrent creator for the same decision surfaces here as a unique violation
    except IntegrityError:
        winner = _by_decision(session, decision.id)
        if winner is None:
            raise
        session.refresh(decision)
        return winner, decision, False
    ledger.append(session, decision, event="approval_requested", actor=caller.principal_id, now=now,
                  details={"approval_id": str(row.id), "rule_id": row.routing_rule_id})
    return row, decision, True


def get(session: Session, tenant_id: uuid.UUID, approval_id: uuid.UUID, *, now: datetime
        ) -> tuple[ApprovalRequest, Decision]:
    """Return the approval and its decision, expiring it first if it is pending past its deadline; raise NotFound."""
    approval, decision = _load(session, tenant_id, approval_id)
    _expire_if_due(session, approval, decision, now)
    return approval, decision


def queue(session: Session, caller: Caller, *, now: datetime, after: tuple[datetime, uuid.UUID] | None,
          limit: int) -> tuple[list[tuple[ApprovalRequest, Decision]], tuple[datetime, uuid.UUID] | None]:
    """Return pending, unexpired approvals the caller may review, oldest first, and the next page's position."""
    expire_due(session, now, limit=100, tenant_id=caller.tenant_id)
    permissions = routing.effective_permissions(caller.role, caller.permissions)
    query = (select(ApprovalRequest, Decision).join(Decision, Decision.id == ApprovalRequest.decision_id)
             .where(ApprovalRequest.tenant_id == caller.tenant_id, ApprovalRequest.status == "pending",
                    ApprovalRequest.expires_at > now, ApprovalRequest.required_permission.in_(permissions))
             .order_by(ApprovalRequest.created_at, ApprovalRequest.id))
    items: list[tuple[ApprovalRequest, Decision]] = []
    position, scanned, batch = after, 0, max(limit + 1, 50)
    while True:
        page = query
        if position is not None:
            at, row_id = position
            page = page.where(or_(ApprovalRequest.created_at > at,
                                  and_(ApprovalRequest.created_at == at, ApprovalRequest.id > row_id)))
        rows = session.execute(page.limit(batch)).all()
        for approval, decision in rows:
            scanned += 1
            position = (approval.created_at, approval.id)
            if routing.may_review(approval.routing, role=caller.role, permissions=permissions):
                items.append((approval, decision))
                if len(items) == limit:
                    return items, position
        if len(rows) < batch:
            return items, None
        if scanned >= QUEUE_MAX_SCAN:
            return items, position


def approve(session: Session, caller: Caller, approval_id: uuid.UUID, *, notes: str | None, now: datetime,
            keyring: KeyRing) -> tuple[ApprovalRequest, Decision, str]:
    """Approve a pending approval and return it with its decision and the one approval token ever issued for it.

    Raise NotFound, Forbidden (reviewer not authorised, with the reason) or Conflict (already reviewed, expired).
    """
    approval, decision = _reviewable(session, caller, approval_id, now)
    ttl = int(decision.response_payload.get("ttl_seconds") or 900)
    issued = int(now.timestamp())
    jti = secrets.token_hex(16)
    claims = {
        "iss": keyring.issuer, "aud": keyring.audience, "sub": str(caller.principal_id), "jti": jti,
        "iat": issued, "nbf": issued, "exp": issued + ttl, "token_type": TOKEN_TYPE,
        "tenant_id": str(decision.tenant_id), "project_id": decision.project_id, "decision_id": str(decision.id),
        "approval_id": str(approval.id), "source": decision.source, "environment": decision.environment,
        "request_fingerprint": decision.request_fingerprint, "resource_reference": decision.resource_reference,
        "max_monthly_delta_usd": str(monthly(decision.estimated_monthly_delta_usd)),
        "max_hourly_delta_usd": str(hourly(decision.estimated_hourly_delta_usd)),
        "policy_sha256": decision.policy_sha256,
    }
    token = keyring.sign_token(claims)
    expires = datetime.fromtimestamp(issued + ttl, UTC)
    won = _transition(session, approval, now, status="approved", reviewed_by=caller.principal_id,
                      review_notes=notes, approved_at=now, token_jti=jti, token_hash=_digest(token),
                      token_expires_at=expires, token_sealed=keyring.seal(token, str(approval.id)))
    if not won:
        # Another reviewer's conditional update got there first; this token was never stored and is void.
        raise _already_reviewed(approval)
    ledger.append(session, decision, event="approval_approved", actor=caller.principal_id, now=now,
                  details={"approval_id": str(approval.id), "rule_id": approval.routing_rule_id, "token_jti": jti,
                           "token_kid": keyring.active_kid, "token_expires_at": expires.isoformat()})
    notifications.approval_event(session, "approval.approved", approval, decision, now=now,
                                 actor=caller.principal_id)
    TOKEN_EVENTS.labels("issued").inc()
    return approval, decision, token


def deny(session: Session, caller: Caller, approval_id: uuid.UUID, *, notes: str | None, now: datetime
         ) -> tuple[ApprovalRequest, Decision]:
    """Deny a pending approval, release its reservation and refund its credit; return it with its decision.

    Raise NotFound, Forbidden (reviewer not authorised) or Conflict (already reviewed, expired).
    """
    approval, decision = _reviewable(session, caller, approval_id, now)
    if not _transition(session, approval, now, status="denied", reviewed_by=caller.principal_id,
                       review_notes=notes, denied_at=now):
        raise _already_reviewed(approval)
    released = _release(session, decision, now)
    ledger.append(session, decision, event="approval_denied", actor=caller.principal_id, now=now,
                  details={"approval_id": str(approval.id), "rule_id": approval.routing_rule_id, **released})
    notifications.approval_event(session, "approval.denied", approval, decision, now=now, actor=caller.principal_id)
    return approval, decision


def revoke(session: Session, caller: Caller, approval_id: uuid.UUID, *, notes: str | None, now: datetime
           ) -> tuple[ApprovalRequest, Decision]:
    """Revoke an approved approval whose token was not used: the token is refused from now on and the
    reservation is released. Any caller who may review the approval may revoke it.

    Raise NotFound, Forbidden (may not review it) or Conflict (not approved, or its token already used).
    """
    approval, decision = _load(session, caller.tenant_id, approval_id)
    permissions = routing.effective_permissions(caller.role, caller.permissions)
    if not routing.may_review(approval.routing, role=caller.role, permissions=permissions):
        raise Forbidden(f"revoking this approval needs the {approval.required_permission!r} permission",
                        code="approval_permission_missing", required_permission=approval.required_permission)
    if approval.status != "approved":
        raise Conflict(f"only an approved approval can be revoked; this one is {approval.status}",
                       code="approval_not_approved", approval_status=approval.status)
    if approval.token_consumed_at is not None:
        raise Conflict("the approval's token was already used; it can no longer be revoked",
                       code="token_already_consumed")
    if not _changed(session, update(ApprovalRequest)
                    .where(ApprovalRequest.id == approval.id, ApprovalRequest.status == "approved",
                           ApprovalRequest.token_consumed_at.is_(None))
                    .values(status="revoked", revoked_at=now, token_sealed=None, updated_at=now,
                            review_notes=notes if notes is not None else ApprovalRequest.review_notes)):
        raise Conflict("the approval's token was used or the approval changed meanwhile",
                       code="token_already_consumed")
    session.refresh(approval)
    released = _release(session, decision, now)
    ledger.append(session, decision, event="approval_revoked", actor=caller.principal_id, now=now,
                  details={"approval_id": str(approval.id), "token_jti": approval.token_jti, **released})
    notifications.approval_event(session, "approval.revoked", approval, decision, now=now,
                                 actor=caller.principal_id)
    return approval, decision


def history(session: Session, tenant_id: uuid.UUID, *, status: str | None, project_id: str | None,
            environment: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
            ) -> tuple[list[tuple[ApprovalRequest, Decision]], tuple[datetime, uuid.UUID] | None]:
    """Return the tenant's approvals, newest first, filtered; and the next page's position (None at the end).

    `status` is one of the stored statuses or `consumed` (approved and its token used).
    """
    query = (select(ApprovalRequest, Decision).join(Decision, Decision.id == ApprovalRequest.decision_id)
             .where(ApprovalRequest.tenant_id == tenant_id)
             .order_by(ApprovalRequest.created_at.desc(), ApprovalRequest.id.desc()))
    if status == "consumed":
        query = query.where(ApprovalRequest.token_consumed_at.is_not(None))
    elif status == "approved":
        query = query.where(ApprovalRequest.status == "approved", ApprovalRequest.token_consumed_at.is_(None))
    elif status is not None:
        query = query.where(ApprovalRequest.status == status)
    if project_id is not None:
        query = query.where(Decision.project_id == project_id.strip().lower())
    if environment is not None:
        query = query.where(Decision.environment == normalise_environment(environment))
    if after is not None:
        at, row_id = after
        query = query.where(or_(ApprovalRequest.created_at < at,
                                and_(ApprovalRequest.created_at == at, ApprovalRequest.id < row_id)))
    rows = [(a, d) for a, d in session.execute(query.limit(limit + 1)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1][0].created_at, rows[-1][0].id) if more else None)
_LAPSED = {"approval_expired": "approval request has expired", "token_expired": "approval token has expired"}


def _pending_due(now: datetime) -> ColumnElement[bool]:
    return and_(ApprovalRequest.status == "pending", ApprovalRequest.expires_at <= now)


def _token_due(now: datetime) -> ColumnElement[bool]:
    # An approved approval whose token lapsed unconsumed: nothing can use it any more.
    return and_(ApprovalRequest.status == "approved", ApprovalRequest.token_consumed_at.is_(None),
                ApprovalRequest.token_expires_at <= now)


def expire_due(session: Session, now: datetime, *, limit: int, tenant_id: uuid.UUID | None = None) -> int:
    """Expire up to `limit` approvals past their deadline, releasing reservations; return how many.

    Due are pending approvals past `expires_at` and approved ones whose token passed its `exp` unconsumed.
    """
    expired = 0
    for due, deadline in ((_pending_due(now), ApprovalRequest.expires_at),
                          (_token_due(now), ApprovalRequest.token_expires_at)):
        query = (select(ApprovalRequest, Decision).join(Decision, Decision.id == ApprovalRequest.decision_id)
                 .where(due).order_by(deadline).limit(limit - expired)
                 # Concurrent sweepers take different rows instead of queueing behind each other.
                 .with_for_update(skip_locked=True, of=ApprovalRequest))
        if tenant_id is not None:
            query = query.where(ApprovalRequest.tenant_id == tenant_id)
        expired += sum(1 for approval, decision in session.execute(query).all()
                       if _expire(session, approval, decision, now))
        if expired >= limit:
            break
    return expired


def pickup(session: Session, caller: Caller, approval_id: uuid.UUID, *, now: datetime, keyring: KeyRing
           ) -> tuple[ApprovalRequest, str]:
    """Return the approval and its token, once, to the principal that made the gate request.

    Raise NotFound, Forbidden (another principal) or Conflict (not approved, already picked up or consumed,
    expired, or sealed under a key no longer held).
    """
    approval, decision = _load(session, caller.tenant_id, approval_id)
    lapsed = _expire_if_due(session, approval, decision, now)
    if lapsed is not None:
        raise Conflict(_LAPSED[lapsed], code=lapsed, commit=True)
    if decision.created_by is None or decision.created_by != caller.principal_id:
        raise Forbidden("only the principal that made the gate request may pick up its token",
                        code="token_pickup_forbidden")
    if approval.status == "revoked":
        raise Conflict("the approval was revoked", code="approval_revoked")
    if approval.status != "approved":
        raise Conflict(f"approval request is {approval.status}", code="approval_not_approved",
                       approval_status=approval.status)
    if approval.token_consumed_at is not None:
        raise Conflict("approval token was already consumed", code="token_already_consumed")
    if approval.token_picked_up_at is not None or approval.token_sealed is None:
        raise Conflict("approval token was already picked up", code="token_already_picked_up")
    token = keyring.unseal(approval.token_sealed, str(approval.id))
    if token is None or _digest(token) != approval.token_hash:
        raise Conflict("approval token cannot be unsealed: the key that sealed it is no longer held",
                       code="token_pickup_unavailable")
    if not _changed(session, update(ApprovalRequest)
                    .where(ApprovalRequest.id == approval.id, ApprovalRequest.token_picked_up_at.is_(None),
                           ApprovalRequest.token_consumed_at.is_(None), ApprovalRequest.token_sealed.is_not(None))
                    .values(token_picked_up_at=now, token_sealed=None, updated_at=now)):
        raise Conflict("approval token was already picked up", code="token_already_picked_up")
    session.refresh(approval)
    ledger.append(session, decision, event="token_picked_up", actor=caller.principal_id, now=now,
                  details={"approval_id": str(approval.id), "token_jti": approval.token_jti})
    TOKEN_EVENTS.labels("picked_up").inc()
    return approval, token


@dataclass(frozen=True)
class Expected:
    """The continuation binding a pipeline persisted from its preflight (runbook §1.3)."""

    source: str
    project_id: str
    environment: str
    request_fingerprint: str
    resource_reference: str


@dataclass(frozen=True)
class TokenClaims:
    """The verified claims of an approval token, typed."""

    sub: str
    jti: str
    iat: int
    nbf: int
    exp: int
    tenant_id: uuid.UUID
    approval_id: uuid.UUID
    decision_id: uuid.UUID
    project_id: str
    source: str
    environment: str
    request_fingerprint: str
    resource_reference: str
    max_monthly_delta_usd: str
    max_hourly_delta_usd: str
    policy_sha256: str

    @classmethod
    def parse(cls, claims: dict[str, Any]) -> TokenClaims:
        """Return typed claims; raise Unauthenticated when any is missing or malformed (not one of ours)."""
        if claims.get("token_type") != TOKEN_TYPE:
            raise Unauthenticated("token is not a Valdrix approval token", code="token_type_invalid")
        try:
            parsed = cls(
                sub=_text(claims["sub"]), jti=_text(claims["jti"]), iat=_int(claims["iat"]), nbf=_int(claims["nbf"]),
                exp=_int(claims["exp"]), tenant_id=uuid.UUID(_text(claims["tenant_id"])),
                approval_id=uuid.UUID(_text(claims["approval_id"])),
                decision_id=uuid.UUID(_text(claims["decision_id"])), project_id=_text(claims["project_id"]),
                source=_text(claims["source"]), environment=_text(claims["environment"]),
                request_fingerprint=_text(claims["request_fingerprint"]),
                resource_reference=_text(claims["resource_reference"]),
                max_monthly_delta_usd=_text(claims["max_monthly_delta_usd"]),
                max_hourly_delta_usd=_text(claims["max_hourly_delta_usd"]),
                policy_sha256=_text(claims["policy_sha256"]))
        except KeyError as exc:
            raise Unauthenticated(f"approval token lacks claim {exc.args[0]!r}", code="token_claim_missing") from exc
        except (TypeError, ValueError) as exc:
            raise Unauthenticated("approval token has a malformed claim", code="token_claim_invalid") from exc
        if parsed.source not in SOURCES or not _HEX64.match(parsed.request_fingerprint) \
                or not _HEX64.match(parsed.policy_sha256):
            raise Unauthenticated("approval token has a malformed claim", code="token_claim_invalid")
        return parsed


@dataclass(frozen=True)
class Consumed:
    approval: ApprovalRequest
    decision: Decision
    replayed: bool  # the answer of an earlier consume with the same Idempotency-Key, token and binding


def consume(session: Session, caller: Caller, token: str, expected: Expected, *, now: datetime,
            keyring: KeyRing, idempotency_key: str | None = None) -> Consumed:
    """Burn an approval token once and return its approval and decision.

    With an `idempotency_key`, a consume repeated with the same key, token and binding returns the first one's
    result (`replayed`), so a pipeline whose answer was lost can retry; any other repeat is `token_replayed`.
    Raise Unauthenticated (not authentic), Forbidden (another tenant's) or Conflict (authentic but unusable:
    expired, not yet valid, not approved, any binding mismatch, replay); every outcome is counted by its code.
    """
    try:
        result = _consume(session, caller, token, expected, now=now, keyring=keyring, key=idempotency_key)
    except ValdrixError as exc:
        TOKEN_EVENTS.labels(exc.code).inc()
        raise
    TOKEN_EVENTS.labels("consume_replayed" if result.replayed else "consumed").inc()
    return result


def _replay(approval: ApprovalRequest, decision: Decision, token: str, expected: Expected,
            key: str | None) -> Consumed | None:
    """Return the earlier consume of this token if it used `key` (and this is the same token and binding)."""
    if key is None or approval.token_consumed_at is None or approval.consume_idempotency_key != key \
            or _digest(token) != approval.token_hash:
        return None
    _check_expected(expected, decision)
    return Consumed(approval, decision, replayed=True)


def _consume(session: Session, caller: Caller, token: str, expected: Expected, *, now: datetime,
             keyring: KeyRing, key: str | None) -> Consumed:
    claims = TokenClaims.parse(keyring.verify_token(token))
    if claims.tenant_id != caller.tenant_id:
        raise Forbidden("approval token belongs to another tenant", code="token_tenant_mismatch")
    row = session.execute(select(ApprovalRequest, Decision).join(Decision, Decision.id == ApprovalRequest.decision_id)
                          .where(ApprovalRequest.id == claims.approval_id,
                                 ApprovalRequest.tenant_id == caller.tenant_id)).first()
    if row is None:
        raise _mismatch("approval_id")
    approval, decision = row
    if claims.decision_id != approval.decision_id:
        raise _mismatch("decision_id")
    if approval.status == "revoked":
        raise Conflict("the approval was revoked", code="approval_revoked")
    # A replay is answered even after `exp`: the consume it repeats happened in time.
    replay = _replay(approval, decision, token, expected, key)
    if replay is not None:
        return replay
    stamp = int(now.timestamp())
    if stamp >= claims.exp:
        raise Conflict("approval token has expired", code="token_expired")
    if claims.nbf > stamp + CLOCK_SKEW_SECONDS or claims.iat > stamp + CLOCK_SKEW_SECONDS:
        raise Conflict("approval token is not valid yet", code="token_not_yet_valid")
    if approval.status != "approved":
        raise Conflict(f"approval request is {approval.status}", code="approval_not_approved",
                       approval_status=approval.status)
    if approval.token_consumed_at is not None:
        raise Conflict("approval token was already used", code="token_replayed")
    _check_binding(claims, approval, decision)
    _check_expected(expected, decision)
    if policies.current(session, caller.tenant_id).sha256 != decision.policy_sha256:
        raise Conflict("the policy changed since this decision; evaluate the change again", code="policy_changed")
    if _digest(token) != approval.token_hash:
        raise Conflict("approval token is not the one issued for this approval", code="token_hash_mismatch")
    if not _changed(session, update(ApprovalRequest)
                    .where(ApprovalRequest.id == approval.id, ApprovalRequest.status == "approved",
                           ApprovalRequest.token_jti == claims.jti, ApprovalRequest.token_consumed_at.is_(None))
                    .values(token_consumed_at=now, token_consumed_by=caller.principal_id, token_sealed=None,
                            consume_idempotency_key=key, updated_at=now)):
        # A concurrent consume won; if it carried this key it is this pipeline's own retry.
        session.refresh(approval)
        replay = _replay(approval, decision, token, expected, key)
        if replay is not None:
            return replay
        raise Conflict("approval token was already used", code="token_replayed")
    session.refresh(approval)
    ledger.append(session, decision, event="token_consumed", actor=caller.principal_id, now=now,
                  details={"approval_id": str(approval.id), "token_jti": claims.jti,
                           **({"idempotency_key": key} if key else {})})
    notifications.approval_event(session, "approval.consumed", approval, decision, now=now,
                                 actor=caller.principal_id)
    return Consumed(approval, decision, replayed=False)


def redeem(session: Session, *, tenant_id: uuid.UUID, source: str, fingerprint: str, actor: uuid.UUID | None,
           now: datetime) -> tuple[ApprovalRequest, Decision] | None:
    """Burn an approved, unused, unexpired approval of an identical request; return it with its decision, or None.

    This is how an approval reaches a caller that cannot carry a token — the Kubernetes API server: after
    approval, the next identical request (same fingerprint) is admitted once, on the approved decision's
    reservation. The burn is the same single conditional update as a token consume, so it happens once.
    """
    candidates = _REDEEMABLE.run(session, {"tenant_id": tenant_id, "now": now, "source": source,
                                           "fingerprint": fingerprint})
    for (approval_id,) in candidates:
        if _changed(session, update(ApprovalRequest)
                    .where(ApprovalRequest.id == approval_id, ApprovalRequest.token_consumed_at.is_(None))
                    .values(token_consumed_at=now, token_consumed_by=actor, token_sealed=None, updated_at=now)):
            approval, decision = _load(session, tenant_id, approval_id)
            ledger.append(session, decision, event="approval_redeemed", actor=actor, now=now,
                          details={"approval_id": str(approval_id)})
            notifications.approval_event(session, "approval.consumed", approval, decision, now=now, actor=actor)
            TOKEN_EVENTS.labels("redeemed").inc()
            return approval, decision
    return None


def _check_binding(claims: TokenClaims, approval: ApprovalRequest, decision: Decision) -> None:
    assert approval.approved_at is not None and approval.token_expires_at is not None
    issued = int(approval.approved_at.timestamp())
    persisted: tuple[tuple[str, object, object], ...] = (
        ("jti", claims.jti, approval.token_jti),
        ("sub", claims.sub, str(approval.reviewed_by)),
        ("iat", claims.iat, issued),
        ("nbf", claims.nbf, issued),
        ("exp", claims.exp, int(approval.token_expires_at.timestamp())),
        ("project_id", claims.project_id, decision.project_id),
        ("source", claims.source, decision.source),
        ("environment", claims.environment, decision.environment),
        ("request_fingerprint", claims.request_fingerprint, decision.request_fingerprint),
        ("resource_reference", claims.resource_reference, decision.resource_reference),
        ("max_monthly_delta_usd", claims.max_monthly_delta_usd, str(monthly(decision.estimated_monthly_delta_usd))),
        ("max_hourly_delta_usd", claims.max_hourly_delta_usd, str(hourly(decision.estimated_hourly_delta_usd))),
        ("policy_sha256", claims.policy_sha256, decision.policy_sha256),
    )
    for name, claimed, stored in persisted:
        if claimed != stored:
            raise _mismatch(name)


def _check_expected(expected: Expected, decision: Decision) -> None:
    # Normalised exactly as the gate normalises its input, so the persisted binding always matches itself.
    pairs = (
        ("source", expected.source.strip().lower(), decision.source),
        ("project_id", expected.project_id.strip().lower(), decision.project_id),
        ("environment", normalise_environment(expected.environment), decision.environment),
        ("request_fingerprint", expected.request_fingerprint.strip().lower(), decision.request_fingerprint),
        ("resource_reference", expected.resource_reference.strip(), decision.resource_reference),
    )
    for name, given, stored in pairs:
        if given != stored:
            raise Conflict(f"expected_{name} does not match the approved decision", code=f"expected_{name}_mismatch")


def _mismatch(claim: str) -> Conflict:
    return Conflict(f"approval token claim {claim!r} does not match the approved request",
                    code=f"binding_mismatch_{claim}")


def _reviewable(session: Session, caller: Caller, approval_id: uuid.UUID, now: datetime
                ) -> tuple[ApprovalRequest, Decision]:
    approval, decision = _load(session, caller.tenant_id, approval_id)
    if _expire_if_due(session, approval, decision, now):
        # The expiry and its release are committed even though the review is refused.
        raise Conflict("approval request has expired", code="approval_expired", commit=True)
    if approval.status != "pending":
        raise _already_reviewed(approval)
    routing.authorize(approval.routing, reviewer=caller.principal_id, role=caller.role,
                      permissions=caller.permissions, requesters=(approval.requested_by, decision.created_by))
    return approval, decision


def _already_reviewed(approval: ApprovalRequest) -> Conflict:
    if approval.status == "expired":
        return Conflict("approval request has expired", code="approval_expired", approval_status="expired")
    return Conflict(f"approval request is already {approval.status}", code="approval_already_reviewed",
                    approval_status=approval.status)


def _transition(session: Session, approval: ApprovalRequest, now: datetime, *, status: str, **values: Any) -> bool:
    """Move a pending, unexpired approval to `status` with one conditional UPDATE; return whether this one won."""
    won = _changed(session, update(ApprovalRequest)
                   .where(ApprovalRequest.id == approval.id, ApprovalRequest.status == "pending",
                          ApprovalRequest.expires_at > now)
                   .values(status=status, updated_at=now, **values))
    session.refresh(approval)
    return won


def _expire_if_due(session: Session, approval: ApprovalRequest, decision: Decision, now: datetime) -> str | None:
    """Return why the approval is expired (`approval_expired`, or `token_expired` once it had a token), expiring
    it first when it is due; None while it is live."""
    due = (approval.status == "pending" and approval.expires_at <= now) or (
        approval.status == "approved" and approval.token_consumed_at is None
        and approval.token_expires_at is not None and approval.token_expires_at <= now)
    if due:
        _expire(session, approval, decision, now)
    if approval.status != "expired":
        return None
    return "token_expired" if approval.token_expires_at is not None else "approval_expired"


def _expire(session: Session, approval: ApprovalRequest, decision: Decision, now: datetime) -> bool:
    won = _changed(session, update(ApprovalRequest)
                   .where(ApprovalRequest.id == approval.id, or_(_pending_due(now), _token_due(now)))
                   .values(status="expired", expired_at=now, updated_at=now))
    token_expires_at = approval.token_expires_at
    session.refresh(approval)
    if not won:
        return False
    released = _release(session, decision, now)
    deadline = {"token_expires_at": token_expires_at.isoformat()} if token_expires_at is not None else {
        "expires_at": approval.expires_at.isoformat()}
    ledger.append(session, decision, event="approval_expired", actor=None, now=now,
                  details={"approval_id": str(approval.id), **deadline, **released})
    notifications.approval_event(session, "approval.expired", approval, decision, now=now)
    return True


def _release(session: Session, decision: Decision, now: datetime) -> dict[str, Any]:
    # Re-read under a row lock: a reconciliation may have settled the reservation since it was loaded.
    locked = session.scalars(select(Decision).where(Decision.id == decision.id).with_for_update()
                             .execution_options(populate_existing=True)).one()
    if not locked.reservation_active:
        return {"reservation_released": False}
    settled = budgets.release(session, locked, now=now)
    return {"reservation_released": True, "allocation_released_usd": str(settled.allocation_released),
            "credit_released_usd": str(settled.credit_released)}


def _load(session: Session, tenant_id: uuid.UUID, approval_id: uuid.UUID) -> tuple[ApprovalRequest, Decision]:
    row = session.execute(select(ApprovalRequest, Decision).join(Decision, Decision.id == ApprovalRequest.decision_id)
                          .where(ApprovalRequest.id == approval_id, ApprovalRequest.tenant_id == tenant_id)).first()
    if row is None:
        raise NotFound("approval request not found", code="approval_not_found")
    approval, decision = row
    return approval, decision


def _by_decision(session: Session, decision_id: uuid.UUID) -> ApprovalRequest | None:
    return session.scalars(select(ApprovalRequest).where(ApprovalRequest.decision_id == decision_id)).first()


def _changed(session: Session, statement: Update) -> bool:
    """Run a conditional UPDATE of one row; return whether it matched (the caller won the transition)."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount == 1


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value
