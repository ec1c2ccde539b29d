"""Answering the API server: who calls, the decision for a priced change, and the answer when the database fails.

In-process state (per worker, never shared, never authoritative):
- verified credentials, for `admission_auth_cache_seconds`, so the fast path needs no database and a
  revoked key stops working within that time;
- the last mode each tenant's policy gave per environment class (`decisions.service.ModeMemory`, shared with
  the other gate routes), used only to answer when the database is down (a tenant never seen gets the safest
  answer, `hard`: deny).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from valdrix.admission import translate
from valdrix.admission.schemas import AdmissionRequest
from valdrix.approvals import service as approvals
from valdrix.approvals.models import ApprovalRequest
from valdrix.auth import service as auth
from valdrix.auth.service import Caller
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.db import transaction
from valdrix.decisions import engine
from valdrix.decisions import service as gate
from valdrix.decisions.metrics import observe_decision
from valdrix.decisions.models import Decision
from valdrix.errors import NotFound, Unauthenticated, ValdrixError
from valdrix.money import monthly
from valdrix.policies import service as policies
from valdrix.pricing.kubernetes import PriceBook

log = logging.getLogger("valdrix.admission")

PRINCIPAL = "k8s-apiserver"
MAX_WARNINGS = 5
MAX_WARNING_CHARS = 120
NEAR_BUDGET_FRACTION = Decimal("0.10")
APPROVE_ENDPOINT = "/api/v1/enforcement/approvals/{id}/approve"


@dataclass(frozen=True)
class Credential:
    """How the API server identified itself: an API key, a verified client certificate, or the cluster tenant."""

    kind: Literal["api_key", "mtls", "cluster"]
    value: str  # the key for api_key, the tenant name otherwise

    @property
    def cache_key(self) -> str:
        # Never keep plaintext keys in memory longer than the request.
        return f"{self.kind}:{hashlib.sha256(self.value.encode()).hexdigest()}"


@dataclass(frozen=True)
class Answer:
    """What to tell the API server, before it is put into an AdmissionReview."""

    allowed: bool
    decision: str
    message: str | None = None
    code: int = 403  # the AdmissionReview status code explaining a refusal
    warnings: tuple[str, ...] = ()
    audit: tuple[tuple[str, str], ...] = ()


def _short(text: str) -> str:
    return text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 1] + "…"


class AdmissionGate:
    """The admission webhook's state for one worker: settings, price book, caches."""

    def __init__(self, settings: Settings, book: PriceBook, sessions: sessionmaker[Session], clock: Clock,
                 ids: IdFactory, modes: gate.ModeMemory) -> None:
        self.settings = settings
        self.book = book
        self.sessions = sessions
        self.clock = clock
        self.ids = ids
        self.where = translate.ClusterMap(settings.k8s_cluster_name, dict(settings.admission_namespace_projects),
                                          dict(settings.admission_namespace_environments))
        self._callers: dict[str, tuple[float, Caller]] = {}
        self.modes = modes
        self._lock = threading.Lock()

    # ---- callers -------------------------------------------------------------------------------

    def cached_caller(self, credential: Credential) -> Caller | None:
        """Return the caller verified for this credential within the cache lifetime, or None."""
        hit = self._callers.get(credential.cache_key)
        if hit is None or time.monotonic() - hit[0] > self.settings.admission_auth_cache_seconds:
            return None
        return hit[1]

    def _verify(self, session: Session, credential: Credential) -> Caller | None:
        if credential.kind == "api_key":
            caller = auth.authenticate(session, credential.value)
            if caller is not None and not caller.has_role("member"):
                caller = None
        else:
            caller = self._tenant_principal(session, credential.value)
        if caller is not None:
            with self._lock:
                self._callers[credential.cache_key] = (time.monotonic(), caller)
        return caller

    def _tenant_principal(self, session: Session, tenant_name: str) -> Caller | None:
        try:
            tenant = auth.get_tenant(session, tenant_name)
        except NotFound:
            return None
        try:
            with session.begin_nested():
                principal = auth.ensure_principal(session, tenant.id, PRINCIPAL, role="member", permissions=[],
                                                  now=self.clock.now())
        except IntegrityError:
            # Another worker created it first.
            principal = auth.ensure_principal(session, tenant.id, PRINCIPAL, role="member", permissions=[],
                                              now=self.clock.now())
        return Caller(tenant_id=tenant.id, principal_id=principal.id, name=principal.name, role=principal.role,
                      permissions=frozenset(principal.permissions))

    def caller(self, session: Session, credential: Credential) -> Caller:
        """Return the verified caller; raise Unauthenticated for an unknown key or unmapped tenant."""
        caller = self.cached_caller(credential) or self._verify(session, credential)
        if caller is None:
            raise Unauthenticated("unknown or revoked admission credential", code="invalid_credentials")
        return caller

    def check_fast(self, credential: Credential) -> None:
        """Verify the caller of a fast-path request (cache first); raise Unauthenticated if it is unknown.

        A database outage does not block the fast path: its answer (allowed) does not depend on the caller.
        """
        if self.cached_caller(credential) is not None:
            return
        try:
            with transaction(self.sessions) as session:
                self.caller(session, credential)
        except SQLAlchemyError as exc:
            log.warning("admission caller not verifiable, fast path answered anyway: %s", type(exc).__name__)

    # ---- priced decisions ----------------------------------------------------------------------

    def _per_replica(self, session: Session, tenant_id: uuid.UUID, reference: str) -> Decimal | None:
        payload = session.scalars(
            select(Decision.request_payload).where(Decision.tenant_id == tenant_id,
                                                   Decision.source == translate.SOURCE,
                                                   Decision.resource_reference == reference)
            .order_by(Decision.created_at.desc()).limit(1)).first()
        after = (((payload or {}).get("metadata") or {}).get("cost_breakdown") or {}).get("after") or {}
        value = after.get("pod_monthly_usd")
        return Decimal(value) if isinstance(value, str) else None

    def forget(self, credential: Credential) -> None:
        """Forget a credential found revoked (or unknown), so the fast path stops accepting it too."""
        with self._lock:
            self._callers.pop(credential.cache_key, None)

    def decide(self, session: Session, caller: Caller, req: AdmissionRequest,
               change: translate.Priced | translate.ScaleUp | translate.NeedsDefaults,
               seconds_left: float) -> tuple[Answer, gate.Outcome | None]:
        """Return the answer for a priced change, decided in `session` within `seconds_left`, and the gate's
        outcome to count once it is committed (None for an admission redeemed by an approval, or answered
        without a decision once priced with the tenant's container defaults)."""
        if isinstance(change, translate.NeedsDefaults):
            # Priced again with the tenant's container defaults, now that the tenant is known.
            begun = time.monotonic()
            defaults = translate.container_defaults(policies.current(session, caller.tenant_id).document)
            retranslated = translate.translate(req, self.book, self.where, defaults)
            if not isinstance(retranslated, (translate.Priced, translate.ScaleUp)):
                return self.without_decision(retranslated, begun), None
            change = retranslated
        if isinstance(change, translate.ScaleUp):
            per_replica = self._per_replica(session, caller.tenant_id, change.reference)
            inp = translate.scale_input(req, self.where, change, per_replica)
        else:
            inp = change.inp
        ctx = gate.GateContext(tenant_id=caller.tenant_id, actor=caller.principal_id, now=self.clock.now(),
                               ids=self.ids, timeout_seconds=seconds_left,
                               lock_timeout_seconds=min(self.settings.lock_timeout_seconds, seconds_left / 2),
                               api_key_hash=caller.key_hash,
                               budget_alert_thresholds=tuple(self.settings.budget_alert_thresholds))
        # An approved identical request is admitted once (also when the API server retries the uid that was
        # rejected for approval); otherwise the gate decides, replaying a known uid.
        # An approval of a request recorded before RFC 8785 carries its legacy fingerprint.
        redeemed = next(filter(None, (approvals.redeem(session, tenant_id=caller.tenant_id, source=inp.source,
                                                       fingerprint=fingerprint, actor=caller.principal_id,
                                                       now=ctx.now)
                                      for fingerprint in inp.fingerprints)), None)
        if redeemed is not None:
            return self.approved(*redeemed), None
        outcome = gate.decide(session, ctx, inp, req.uid)
        self.modes.remember(outcome.decision)
        return self.answer(outcome.decision), outcome

    def without_decision(self, outcome: translate.Outcome, started: float) -> Answer:
        """Return the answer for a change that needs no decision once priced with the tenant's defaults."""
        if isinstance(outcome, translate.Refused):
            observe_decision(translate.SOURCE, "DENY", ["invalid_cost_input"], "invalid", time.monotonic() - started)
            return Answer(False, "DENY", message=f"Valdrix Gate cannot price this object: {outcome.message}",
                          audit=(("decision", "DENY"), ("invalid-cost-input", outcome.message[:256])))
        why = outcome.why if isinstance(outcome, translate.Fast) else "no_cost_impact"
        observe_decision(translate.SOURCE, "ALLOW", [], "fast", time.monotonic() - started)
        return Answer(True, "ALLOW", audit=(("decision", "ALLOW"), ("fast-path", why)))

    def unrecorded(self, caller: Caller | None, inp: engine.DecisionInput | None, trigger: str,
                   started: float) -> Answer:
        """Return the fail-safe answer without a database: the last-seen mode, else `hard` (deny)."""
        environment = inp.environment if inp is not None else "nonprod"
        answer = gate.unrecorded(self.modes, caller.tenant_id if caller is not None else None, translate.SOURCE,
                                 environment, trigger, started)
        decision, mode, trigger = answer.decision, answer.mode, answer.trigger
        delta = str(inp.monthly_delta) if inp is not None else "unknown"
        audit = (("decision", decision), ("fail-safe", trigger), ("monthly-delta-usd", delta))
        if decision == "ALLOW":
            return Answer(True, decision, warnings=(
                _short(f"Valdrix Gate unavailable ({trigger}); admitted by {mode}-mode fail-open, not recorded"),),
                audit=audit)
        return Answer(False, decision, message=(
            f"Valdrix Gate {decision} ({mode} mode fail-safe, {trigger}): the gate could not evaluate or record "
            f"this +${delta}/mo change; nothing was reserved. Retry shortly. Reasons: {', '.join(answer.reasons)}"),
            audit=audit)

    def _mode(self, caller: Caller | None, environment: str | None) -> str:
        """Return the mode last seen for the caller's tenant and environment class; `hard` when unknown."""
        return self.modes.mode(caller.tenant_id if caller is not None else None, translate.SOURCE,
                               environment or "nonprod")

    def refused(self, caller: Caller | None, environment: str | None, error: ValdrixError, started: float) -> Answer:
        """Return the answer to a review the gate refuses to decide (an unknown credential, a uid reused for
        another object): the mode's answer to a violation, explaining the error in the review's status.

        The API server must get an AdmissionReview whenever it sent a readable one; an HTTP error would
        leave the outcome to the webhook's `failurePolicy` instead of the tenant's mode.
        """
        mode = self._mode(caller, environment)
        decision = engine.violation_decision(mode)
        observe_decision(translate.SOURCE, decision, [error.code], "refused", time.monotonic() - started)
        audit = (("decision", decision), ("refused", error.code))
        explained = f"Valdrix Gate refused this review ({error.code}): {error.message}"
        if decision == "ALLOW":
            return Answer(True, decision, message=explained, code=error.status, audit=audit,
                          warnings=(_short(f"{explained}; admitted by {mode} mode, not recorded"),))
        return Answer(False, decision, message=f"{explained} ({mode} mode, not recorded)", code=error.status,
                      audit=audit)

    def approved(self, approval: ApprovalRequest, decision: Decision) -> Answer:
        """Return the admission of a re-applied request whose earlier decision an approver approved."""
        audit = (("decision-id", str(decision.id)), ("decision", "ALLOW"),
                 ("policy-version", str(decision.policy_version)),
                 ("request-fingerprint", decision.request_fingerprint),
                 ("approval-request-id", str(approval.id)),
                 ("monthly-delta-usd", str(monthly(decision.estimated_monthly_delta_usd))))
        return Answer(True, "ALLOW", warnings=(_short(f"Valdrix: admitted once by approval {approval.id}"),),
                      audit=audit)

    def answer(self, decision: Decision) -> Answer:
        """Return the API server's answer for a stored decision (the same for the first call and a retry)."""
        allowed = decision.decision in ("ALLOW", "ALLOW_WITH_CREDITS")
        delta = monthly(decision.estimated_monthly_delta_usd)
        audit = (("decision-id", str(decision.id)), ("decision", decision.decision),
                 ("policy-version", str(decision.policy_version)),
                 ("request-fingerprint", decision.request_fingerprint),
                 ("approval-request-id", str(decision.approval_request_id or "")),
                 ("monthly-delta-usd", str(delta)))
        reasons = list(decision.reason_codes)
        scope = f"project {decision.project_id}/{decision.environment}"
        warnings = self._warnings(decision, delta, scope)
        if allowed:
            return Answer(True, decision.decision, warnings=warnings, audit=audit)
        message = (f"Valdrix Gate {decision.decision} for {decision.resource_reference} (+${delta}/mo, {scope}, "
                   f"{decision.mode} mode): {', '.join(reasons) or 'no reason'}; decision {decision.id}")
        if decision.decision == "REQUIRE_APPROVAL":
            if decision.approval_request_id is not None:
                approval = decision.approval_request_id
                message += (f". Approval required: run `valdrix approve {approval}` or POST "
                            f"{APPROVE_ENDPOINT.format(id=approval)}, then re-apply")
            else:
                message += (f". Approval required: ask an approver of {scope} to approve decision {decision.id} "
                            "(GET /api/v1/enforcement/decisions/<id> shows it), then re-apply")
        return Answer(False, decision.decision, message=message, warnings=warnings, audit=audit)

    def _warnings(self, decision: Decision, delta: Decimal, scope: str) -> tuple[str, ...]:
        reasons = list(decision.reason_codes)
        out: list[str] = []
        overridden = [r for r in reasons if r.startswith("shadow_mode")]
        if overridden:
            cause = next((r for r in reasons if not r.startswith("shadow_mode")), overridden[0])
            out.append(f"Valdrix shadow: +${delta}/mo would be blocked ({cause}) for {scope}")
        if decision.fail_safe:
            out.append(f"Valdrix fail-safe ({reasons[0]}) in {decision.mode} mode")
        if decision.decision == "ALLOW_WITH_CREDITS":
            out.append(f"Valdrix: +${delta}/mo funded from credits, {scope} budget exhausted")
        context = decision.computed_context or {}
        limit, headroom = context.get("budget_limit_usd"), context.get("scope_headroom_usd")
        if limit is not None and headroom is not None and decision.decision != "DENY":
            after = Decimal(headroom) - delta
            if Decimal(limit) > 0 and after < Decimal(limit) * NEAR_BUDGET_FRACTION:
                left = max(after, Decimal(0))
                out.append(f"Valdrix: {scope} budget nearly used: ${left} of ${Decimal(limit)} left this month")
        if decision.dry_run:
            out.append("Valdrix: dry run evaluated; nothing reserved")
        return tuple(_short(w) for w in out[:MAX_WARNINGS])
