"""Deciding a gate request: replay or lock → evaluate → persist decision, reservations and ledger row together."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import FromClause, and_, bindparam, func, insert, literal, or_, select, true
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from valdrix.approvals import service as approvals
from valdrix.auth import service as auth
from valdrix.auth.models import Tenant
from valdrix.budgets import service as budgets
from valdrix.canonical import Document
from valdrix.clock import IdFactory
from valdrix.costs import engine as spend_engine
from valdrix.costs import service as costs
from valdrix.db import Statement
from valdrix.decisions import engine, lineage
from valdrix.decisions.metrics import LOCK_EVENTS, LOCK_WAIT, observe_decision, observe_fail_safe
from valdrix.decisions.models import Decision
from valdrix.environments import environment_class, normalise_environment
from valdrix.errors import Conflict, NotFound, Unauthenticated, Unavailable
from valdrix.ledger import service as ledger_service
from valdrix.money import ZERO
from valdrix.notifications import service as notifications
from valdrix.policies import service as policies

log = logging.getLogger("valdrix.gate")

# A lock wait longer than this is reported as contention even though it succeeded.
CONTENDED_AFTER_SECONDS = 0.010

__all__ = ["GateContext", "ModeMemory", "Outcome", "decide", "get", "trigger_of", "unrecorded"]


@dataclass(frozen=True)
class GateContext:
    """Who asks, when, and how long the gate may take."""

    tenant_id: uuid.UUID
    actor: uuid.UUID | None
    now: datetime
    ids: IdFactory
    timeout_seconds: float
    lock_timeout_seconds: float
    cost_context: str = "off"
    cost_data_max_age_days: int = 3
    # The API key the caller authenticated with. The gate's first statement re-checks that it is not revoked,
    # so the caller may have been remembered from an earlier request (`auth.service.KeyOwners`).
    api_key_hash: str | None = None
    # Budget utilisation percentages whose crossing raises a `budget.threshold_crossed` event.
    budget_alert_thresholds: tuple[int, ...] = (80, 100)


@dataclass(frozen=True)
class Outcome:
    """A gate decision and how it came about; `observe` counts it once it is the caller's answer."""

    decision: Decision
    replayed: bool
    started: float  # time.monotonic() when the gate began
    trigger: str | None = None  # why a new decision is a fail-safe one

    def observe(self) -> None:
        """Count this answer in the gate's metrics (call once, after its transaction committed)."""
        d = self.decision
        seconds = time.monotonic() - self.started
        if self.trigger is not None:
            observe_fail_safe(d.source, d.decision, list(d.reason_codes), self.trigger, seconds)
        else:
            observe_decision(d.source, d.decision, [] if self.replayed else list(d.reason_codes),
                             "failsafe" if d.fail_safe else "normal", seconds)


class ModeMemory:
    """The mode each tenant's policy last gave per source and environment class, in this worker process.

    Never shared, never authoritative: read only to answer when the database cannot be (a tenant not seen
    yet gets the safest mode, `hard`).
    """

    def __init__(self) -> None:
        self._modes: dict[tuple[uuid.UUID, str, str], str] = {}

    def remember(self, decision: Decision) -> None:
        self._modes[(decision.tenant_id, decision.source, environment_class(decision.environment))] = \
            decision.mode

    def mode(self, tenant_id: uuid.UUID | None, source: str, environment: str) -> str:
        if tenant_id is None:
            return "hard"
        return self._modes.get((tenant_id, source, environment_class(environment)), "hard")


def unrecorded(modes: ModeMemory, tenant_id: uuid.UUID | None, source: str, environment: str, trigger: str,
               started: float) -> engine.Unrecorded:
    """Return (and count, and log) the fail-safe answer for a gate request the database could not record.

    `tenant_id` is None when the caller could not be verified: the answer is then `hard` mode's.
    """
    mode = modes.mode(tenant_id, source, environment)
    reasons = engine.fail_safe_reasons(mode, trigger)
    if tenant_id is None:
        reasons.append("caller_unverified")
    answer = engine.Unrecorded(engine.violation_decision(mode), tuple(reasons), mode, reasons[0])
    observe_fail_safe(source, answer.decision, reasons, answer.trigger, time.monotonic() - started)
    log.warning("gate answered fail-safe without a record", extra={
        "source": source, "tenant_id": str(tenant_id) if tenant_id else None, "trigger": answer.trigger,
        "decision": answer.decision, "mode": mode, "recorded": False})
    return answer


# The gate's statements, built once per process.
# The policy in force, any decision already stored under the key, and whether the caller's API key is still
# unrevoked, read in one round trip.
# The replay lookup must stay on the (key, source, tenant) unique index in the plan PostgreSQL keeps for the
# prepared statement, even one made while the table held a few rows. Tested as `IS TRUE`, the tenant condition
# cannot serve the indexes led by the tenant, which tie on cost with it while the table is small and would then
# read every decision of the tenant on each request once it has grown. The price: a key that several tenants
# use is read once per such tenant.
_STORED_ID = select(Decision.id).where(
    Decision.idempotency_key == bindparam("key"), Decision.source == bindparam("source"),
    (Decision.tenant_id == bindparam("tenant_id")).is_(true())).scalar_subquery().label("stored_id")
_KEY_UNREVOKED = auth.key_unrevoked().label("key_unrevoked")
_POLICY_AND_STORED = Statement(policies.latest_query(_STORED_ID, _KEY_UNREVOKED))


def _opening(postgresql: bool) -> Statement:
    """Return the gate's first statement: `_POLICY_AND_STORED` with the governing budget alongside.

    The governing budget is the project's own, else `default`; only it is locked, or every decision of a tenant
    with a default budget would queue on that one row. On PostgreSQL the same round trip also bounds the rest
    of the transaction (SET LOCAL): a lock wait past the lock timeout or a statement past the gate deadline
    fails fast into a fail-safe decision. The budget lock is requested after the bounds are set and only for a
    new decision: the budgets are read in lateral joins on the policy row, under conditions on its replay
    check and set lock timeout, and `default` only when the project has no budget (or had one deactivated
    while the lock was awaited). SQLite has no lateral joins, and needs no row lock: its transaction holds the
    database's write lock.
    """
    bounds = ([func.set_config("lock_timeout", bindparam("lock_timeout"), True).label("lock_timeout"),
               func.set_config("statement_timeout", bindparam("statement_timeout"), True).label("statement_timeout")]
              if postgresql else [])
    policy = policies.latest_query(_STORED_ID, _KEY_UNREVOKED, *bounds).subquery("policy")
    own: FromClause
    shared: FromClause
    if postgresql:
        new = (policy.c.stored_id.is_(None), policy.c.lock_timeout.is_not(None))
        own = budgets.lock_query(bindparam("project_id"), *new).lateral("own")
        shared = budgets.lock_query(literal("default"), own.c.id.is_(None), *new).lateral("shared")
    else:
        own = budgets.lock_query(bindparam("project_id")).subquery("own")
        shared = budgets.lock_query(literal("default")).subquery("shared")
    return Statement(select(policy.c.version, policy.c.sha256, policy.c.stored_id, policy.c.key_unrevoked,
                            *(func.coalesce(own.c[name], shared.c[name]).label("budget_" + name)
                              for name in ("id", "scope_key", "monthly_limit_usd", "reserved_usd")))
                     .select_from(policy.outerjoin(own, true()).outerjoin(shared, true())))


_OPENING = {False: _opening(postgresql=False), True: _opening(postgresql=True)}
# Tenant-wide ceilings need a tenant-wide lock; tenants without ceilings never take it. NO KEY UPDATE: decision
# inserts referencing the tenant (foreign key checks) must not queue behind it.
_LOCK_TENANT = Statement(select(Tenant.id).where(Tenant.id == bindparam("tenant_id")).with_for_update(key_share=True))
_INSERT_DECISION = Statement(insert(Decision))
_DECISION_CLASS = Decision.__mapper__.class_manager
# PostgreSQL writes the decision, its budget hold and its ledger row (a copy of the stored decision row) in
# one statement: one round trip, and the budget row lock taken before the evaluation is held that much
# shorter. SQLite cannot write in a WITH clause; it runs three statements.
_RECORD = Statement(ledger_service.insert_from(
    insert(Decision).values({column.key: bindparam("d_" + column.key) for column in Decision.__table__.columns})
    .returning(*Decision.__table__.columns).cte("decided"), "l_").add_cte(budgets.hold_statement("b_").cte("held")))


class _Deadline(Exception):
    """The evaluation ran past the gate deadline."""


def decide(session: Session, ctx: GateContext, inp: engine.DecisionInput, idempotency_key: str | None,
           expected_fingerprint: str | None = None) -> Outcome:
    """Return the stored decision for a repeated key, else evaluate and persist a new one (fail-safe on failure).

    Raise Conflict, before anything is written, when `expected_fingerprint` differs from the request's, or
    when the key was already used for a different request. The decision must be the transaction's first
    write: a failed evaluation rolls the transaction back before the fail-safe decision is recorded.
    """
    started = time.monotonic()
    fingerprint = inp.fingerprint
    if expected_fingerprint is not None and not inp.has_fingerprint(expected_fingerprint):
        raise Conflict("request fingerprint differs from expected_request_fingerprint: the planned change is not "
                       "the one previously evaluated", code="request_fingerprint_mismatch",
                       request_fingerprint=fingerprint, expected_request_fingerprint=expected_fingerprint.lower())
    key = (idempotency_key or "").strip()[:128] or fingerprint
    # A dry run lives in its own key space so it can never be replayed as the real decision.
    stored_key = f"dry_run:{key}" if inp.dry_run else key
    postgresql = session.get_bind().dialect.name == "postgresql"
    params = _opening_params(ctx, inp, stored_key, started, postgresql=postgresql)
    waited = time.monotonic()
    failed: Exception | None = None
    try:
        rows = _OPENING[postgresql].run(session, params)
    except DBAPIError as exc:
        # A budget row locked past the lock timeout (PostgreSQL) gets a fail-safe decision; anything else the
        # database says (down, SQLite's whole file locked past the deadline) leaves nothing to record it in.
        if trigger_of(exc) != "gate_lock_timeout" or not postgresql:
            raise
        failed = exc
    except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
        # A stored row the gate cannot read (a corrupted budget): fail-safe, like a failed evaluation.
        failed = exc
    if failed is not None:
        # The policy and the replay check are read again, without the budget.
        session.rollback()
        rows = _POLICY_AND_STORED.run(session, params)
    budget_wait = time.monotonic() - waited
    row = rows[0] if rows else None
    if ctx.api_key_hash is not None and row is not None and not row.key_unrevoked:
        raise Unauthenticated("unknown or revoked API key", code="invalid_credentials")
    policy = policies.active(session, ctx.tenant_id, row)
    if row is not None and row.stored_id is not None:
        return _replayed(session.get_one(Decision, row.stored_id), inp, started)
    if failed is not None:
        if isinstance(failed, DBAPIError):
            _observe_lock(inp.source, "timeout", budget_wait)
        return _fail_safe(session, ctx, inp, policy, fingerprint, stored_key, started, failed)
    budget = (budgets.LockedBudget(row.budget_id, row.budget_scope_key, row.budget_monthly_limit_usd,
                                   row.budget_reserved_usd) if row is not None and row.budget_id is not None else None)
    # The evaluation is the transaction's first write. When it fails, rolling the whole transaction back (its
    # timeouts with it) leaves a clean one for the fail-safe decision, at no cost to the normal path.
    try:
        decision = _evaluate_and_persist(session, ctx, inp, policy, fingerprint, stored_key, started, budget,
                                         budget_wait)
    except IntegrityError:
        session.rollback()
        return _after_race(session, ctx, inp, stored_key, started)
    except (SQLAlchemyError, _Deadline, ArithmeticError, ValueError, TypeError, LookupError) as exc:
        return _fail_safe(session, ctx, inp, policy, fingerprint, stored_key, started, exc)
    return Outcome(decision=decision, replayed=False, started=started)


def _fail_safe(session: Session, ctx: GateContext, inp: engine.DecisionInput, policy: policies.ActivePolicy,
               fingerprint: str, key: str, started: float, exc: BaseException) -> Outcome:
    """Return the fail-safe decision for an evaluation that failed with `exc`, recorded in a clean transaction.

    Raise Unavailable when even that cannot be recorded.
    """
    session.rollback()
    trigger = trigger_of(exc)
    log.warning("gate failed, answering fail-safe", extra={"trigger": trigger, "error": type(exc).__name__},
                exc_info=trigger == "gate_evaluation_error")
    try:
        decision = _persist_fail_safe(session, ctx, inp, policy, fingerprint, key, trigger)
    except IntegrityError:
        session.rollback()
        return _after_race(session, ctx, inp, key, started)
    except SQLAlchemyError as second:
        raise Unavailable("the gate could not evaluate or record a fail-safe decision",
                          code="gate_unavailable") from second
    return Outcome(decision=decision, replayed=False, started=started, trigger=trigger)


def get(session: Session, tenant_id: uuid.UUID, decision_id: uuid.UUID) -> Decision:
    """Return one of the tenant's decisions; raise NotFound otherwise."""
    row = session.scalars(select(Decision).where(Decision.id == decision_id, Decision.tenant_id == tenant_id)).first()
    if row is None:
        raise NotFound("decision not found", code="decision_not_found")
    return row


def search(session: Session, tenant_id: uuid.UUID, *, source: str | None = None, decision: str | None = None,
           project_id: str | None = None, environment: str | None = None, since: datetime | None = None,
           until: datetime | None = None, after: tuple[datetime, uuid.UUID] | None = None, limit: int = 100
           ) -> tuple[list[Decision], tuple[datetime, uuid.UUID] | None]:
    """Return the tenant's decisions matching the filters, newest first, and the next page's position."""
    query = select(Decision).where(Decision.tenant_id == tenant_id)
    for column, value in ((Decision.source, source), (Decision.decision, decision),
                          (Decision.project_id, project_id),
                          (Decision.environment, normalise_environment(environment) if environment else None)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(Decision.created_at >= since)
    if until is not None:
        query = query.where(Decision.created_at < until)
    if after is not None:
        at, row_id = after
        query = query.where(or_(Decision.created_at < at, and_(Decision.created_at == at, Decision.id < row_id)))
    rows = list(session.scalars(query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].created_at, rows[-1].id) if more else None)


def _find(session: Session, tenant_id: uuid.UUID, source: str, key: str) -> Decision | None:
    return session.scalars(select(Decision).where(Decision.tenant_id == tenant_id, Decision.source == source,
                                                  Decision.idempotency_key == key)).first()


def _replayed(existing: Decision, inp: engine.DecisionInput, started: float) -> Outcome:
    if not inp.has_fingerprint(existing.request_fingerprint):
        raise Conflict("idempotency key was already used for a different request",
                       code="idempotency_key_reused", stored_request_fingerprint=existing.request_fingerprint,
                       request_fingerprint=inp.fingerprint)
    return Outcome(decision=existing, replayed=True, started=started)


def _after_race(session: Session, ctx: GateContext, inp: engine.DecisionInput, key: str,
                started: float) -> Outcome:
    # A concurrent request with the same key committed first; its decision is the answer.
    winner = _find(session, ctx.tenant_id, inp.source, key)
    if winner is None:
        raise Unavailable("idempotency race could not be resolved", code="gate_unavailable")
    return _replayed(winner, inp, started)


def trigger_of(exc: BaseException) -> str:
    """Return the fail-safe trigger an error of the gate stands for."""
    if isinstance(exc, _Deadline):
        return "gate_timeout"
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate == "55P03":
            return "gate_lock_timeout"
        if sqlstate == "57014":
            return "gate_timeout"
        if "database is locked" in str(exc.orig):
            return "gate_lock_timeout"
    return "gate_evaluation_error"


def _opening_params(ctx: GateContext, inp: engine.DecisionInput, key: str, started: float, *,
                    postgresql: bool) -> dict[str, Any]:
    """Return the parameters of the gate's first statement (`_opening`)."""
    params: dict[str, Any] = {"tenant_id": ctx.tenant_id, "source": inp.source, "key": key,
                              "key_hash": ctx.api_key_hash, "project_id": inp.project_id}
    if postgresql:
        remaining = max(0.001, ctx.timeout_seconds - (time.monotonic() - started))
        lock_ms = max(1, int(min(ctx.lock_timeout_seconds, remaining) * 1000))
        params.update(lock_timeout=f"{lock_ms}ms", statement_timeout=f"{max(1, int(remaining * 1000))}ms")
    return params


def _observe_lock(source: str, outcome: str, wait: float) -> None:
    LOCK_WAIT.labels(source, outcome).observe(wait)
    LOCK_EVENTS.labels(source, outcome).inc()
    if outcome == "timeout" or wait >= CONTENDED_AFTER_SECONDS:
        LOCK_EVENTS.labels(source, "contended").inc()


def _lock_funding(session: Session, ctx: GateContext, inp: engine.DecisionInput,
                  policy: policies.ActivePolicy, budget: budgets.LockedBudget | None, budget_wait: float
                  ) -> tuple[engine.Funding, budgets.Grants | None, bool]:
    """Return the funding read under lock, the locked grants, and whether spend was unavailable.

    `budget` is the governing budget, locked by the first statement, which took `budget_wait` seconds (counted
    as lock wait). The tenant and grant locks come after it, in this order, in every decision.
    """
    entitlements = policy.document.entitlements
    forecast = policy.document.budget_basis == "forecast"
    waited = time.monotonic() - budget_wait
    reading = 0.0  # time spent reading spend, which is not lock wait
    outcome = "acquired"
    try:
        tenant_total = ZERO
        if entitlements.plan_monthly_ceiling_usd or entitlements.enterprise_monthly_ceiling_usd:
            _LOCK_TENANT.run(session, {"tenant_id": ctx.tenant_id})
            tenant_total = budgets.tenant_reserved_total(session, ctx.tenant_id)
        spend = None
        if budget is not None and (forecast or ctx.cost_context != "off"):
            started = time.monotonic()
            spend = _read_spend(session, ctx, budget, forecast=forecast)
            reading = time.monotonic() - started
        unavailable = spend is not None and not spend.usable and (forecast or ctx.cost_context == "required")
        state = None
        if budget is not None:
            committed = spend.committed if forecast and spend is not None and spend.usable else None
            state = engine.BudgetState(budget.scope_key, budget.monthly_limit_usd, budget.reserved_usd, committed)
        has_budgets = (budget is None and entitlements.unbudgeted_projects != "allow" and inp.monthly_delta > 0
                       and budgets.tenant_has_budgets(session, ctx.tenant_id))
        grants = None
        if not unavailable and engine.needs_credits(inp, state):
            grants = budgets.lock_grants(session, ctx.tenant_id, inp.project_id, ctx.now)
    except DBAPIError as exc:
        outcome = "timeout" if trigger_of(exc) == "gate_lock_timeout" else "error"
        raise
    finally:
        _observe_lock(inp.source, outcome, time.monotonic() - waited - reading)
    funding = engine.Funding(budget=state,
                             reserved_credits=grants.reserved_headroom if grants else ZERO,
                             emergency_credits=grants.emergency_headroom if grants else ZERO,
                             tenant_reserved_total=tenant_total, spend=spend, tenant_has_budgets=has_budgets)
    return funding, grants, unavailable


def _read_spend(session: Session, ctx: GateContext, budget: budgets.LockedBudget, *,
                forecast: bool) -> spend_engine.Spend:
    """Return the budget scope's spend; a failed read yields status `unavailable` instead of failing the gate."""
    try:
        # A savepoint of its own, so a failed read leaves the gate's transaction usable.
        with session.begin_nested():
            spend = costs.read_spend(session, ctx.tenant_id, budget.scope_key, ctx.now,
                                     max_age_days=ctx.cost_data_max_age_days)
            if forecast and spend.usable and budget.reserved_usd > 0:
                spend = replace(spend, unreflected_reserved=costs.unreflected_reserved(
                    session, ctx.tenant_id, budget.scope_key, spend.data_through))
    except SQLAlchemyError as exc:
        log.warning("spend unavailable for the gate", extra={"error": type(exc).__name__})
        return spend_engine.unavailable(budget.scope_key, "unavailable")
    return spend


def _evaluate_and_persist(session: Session, ctx: GateContext, inp: engine.DecisionInput,
                          policy: policies.ActivePolicy, fingerprint: str, key: str, started: float,
                          budget: budgets.LockedBudget | None, budget_wait: float) -> Decision:
    funding, grants, unavailable = _lock_funding(session, ctx, inp, policy, budget, budget_wait)
    evaluation = engine.evaluate(inp, policy.document, policy.version, funding, ctx.now,
                                 context_unavailable=unavailable)
    draws = (budgets.draw_credits(grants, reserved_credits=evaluation.reserve_reserved_credits,
                                  emergency_credits=evaluation.reserve_emergency_credits)
             if evaluation.reservation_active else [])
    row = _decision_row(ctx, inp, policy, fingerprint, key, evaluation,
                        budget_scope=budget.scope_key if budget is not None else None, draws=draws)
    decision = _record(session, row, budgets.hold(budget, evaluation.reserve_allocation), ctx, details=None)
    budgets.draw(session, decision, draws, now=ctx.now)
    if budget is not None and evaluation.reserve_allocation > 0:
        # What counts against the limit, as the engine counts it: reservations, or committed spend (forecast).
        state = funding.budget
        used = state.committed if state is not None and state.committed is not None else budget.reserved_usd
        notifications.budget_thresholds(session, tenant_id=ctx.tenant_id, scope_key=budget.scope_key,
                                        limit=budget.monthly_limit_usd, used_before=used,
                                        used_after=used + evaluation.reserve_allocation,
                                        thresholds=ctx.budget_alert_thresholds, now=ctx.now,
                                        decision_id=decision.id, ids=ctx.ids)
    _open_approval(session, ctx, decision, policy)
    session.flush()
    if time.monotonic() - started > ctx.timeout_seconds:
        raise _Deadline()
    return decision


def _persist_fail_safe(session: Session, ctx: GateContext, inp: engine.DecisionInput,
                       policy: policies.ActivePolicy, fingerprint: str, key: str, trigger: str) -> Decision:
    evaluation = engine.fail_safe(inp, policy.document, policy.version, trigger, ctx.now)
    row = _decision_row(ctx, inp, policy, fingerprint, key, evaluation, budget_scope=None, draws=[])
    decision = _record(session, row, None, ctx, details={"fail_safe_trigger": trigger})
    _open_approval(session, ctx, decision, policy)
    session.flush()
    return decision


def _open_approval(session: Session, ctx: GateContext, decision: Decision, policy: policies.ActivePolicy) -> None:
    """Open the pending approval whose id the decision was given.

    The `decision_created` ledger row written next records its `approval_request_id`, so opening needs no
    row of its own; every later review writes one.
    """
    if decision.approval_request_id is not None:
        approvals.open_for_decision(session, decision, policy, requested_by=ctx.actor, now=ctx.now,
                                    approval_id=decision.approval_request_id)


def _record(session: Session, row: dict[str, Any], hold: dict[str, Any] | None, ctx: GateContext, *,
            details: dict[str, Any] | None) -> Decision:
    """Write a new decision row, its budget hold (if any) and its `decision_created` ledger row.

    Return the decision as written, an instance not attached to the session: nothing later in the transaction
    changes it, and constructing and tracking an ORM instance cost more CPU than the statement writing it.
    """
    decision: Decision = _DECISION_CLASS.new_instance()
    decision.__dict__.update(row)  # the instance's attribute state, filled as a load would, without events
    if session.get_bind().dialect.name == "postgresql":
        event = ledger_service.event_values(decision, event="decision_created", actor=ctx.actor, now=ctx.now,
                                            details=details)
        _RECORD.run(session, {**{"d_" + k: v for k, v in row.items()}, **{"l_" + k: v for k, v in event.items()},
                              **{"b_" + k: v for k, v in (hold or budgets.NO_HOLD).items()}})
    else:
        _INSERT_DECISION.run(session, row)
        if hold is not None:
            budgets.write_hold(session, hold)
        ledger_service.append(session, decision, event="decision_created", actor=ctx.actor, now=ctx.now,
                              details=details)
    if decision.decision == "DENY" and not decision.dry_run:
        notifications.decision_denied(session, decision, now=ctx.now, event_id=ctx.ids.new())
    return decision


def _decision_row(ctx: GateContext, inp: engine.DecisionInput, policy: policies.ActivePolicy, fingerprint: str,
                  key: str, ev: engine.Evaluation, *, budget_scope: str | None,
                  draws: list[budgets.Draw]) -> dict[str, Any]:
    """Return the column values of the decision an evaluation makes."""
    metadata = {**inp.metadata, "computed_risk_class": ev.risk.level, "computed_risk_score": ev.risk.score}
    metadata.setdefault("risk_level", ev.risk.level)
    response: dict[str, Any] = {
        "mode": ev.mode, "mode_scope": ev.mode_scope,
        "ttl_seconds": policy.document.execution.default_ttl_seconds,
        "entitlement_waterfall": [stage.as_json() for stage in ev.waterfall],
        "reserved_credit_split_usd": {"reserved": str(ev.reserve_reserved_credits),
                                      "emergency": str(ev.reserve_emergency_credits)},
        "fail_safe_trigger": ev.fail_safe_trigger,
    }
    if draws:
        response["credit_reservations"] = [draw.as_json() for draw in draws]
    # A real REQUIRE_APPROVAL decision (soft fail-safe ones included) gets its approval's id up front, so the
    # row is written once with it.
    needs_approval = ev.decision == "REQUIRE_APPROVAL" and not inp.dry_run and ev.mode != "shadow"
    context = Document(ev.computed_context)
    values: dict[str, Any] = {
        "id": ctx.ids.new(), "tenant_id": ctx.tenant_id, "source": inp.source, "environment": inp.environment,
        "project_id": inp.project_id, "action": inp.action, "resource_reference": inp.resource_reference,
        "decision": ev.decision, "reason_codes": list(ev.reasons), "mode": ev.mode,
        "fail_safe": ev.fail_safe_trigger is not None, "dry_run": inp.dry_run, "policy_version": policy.version,
        "policy_sha256": policy.sha256, "request_fingerprint": fingerprint, "idempotency_key": key,
        "estimated_monthly_delta_usd": inp.monthly_delta, "estimated_hourly_delta_usd": inp.hourly_delta,
        "budget_scope": budget_scope, "reserved_allocation_usd": ev.reserve_allocation,
        "reserved_credit_usd": ev.reserve_credit, "reservation_active": ev.reservation_active,
        "approval_request_id": ctx.ids.new() if needs_approval else None,
        # Each document's canonical JSON is computed once, for its lineage entry, the ledger's digests and the
        # text stored.
        "request_payload": Document({
            "project_id": inp.project_id, "environment": inp.environment, "action": inp.action,
            "resource_reference": inp.resource_reference,
            "estimated_monthly_delta_usd": str(inp.monthly_delta),
            "estimated_hourly_delta_usd": str(inp.hourly_delta), "metadata": metadata, "dry_run": inp.dry_run,
        }),
        "response_payload": Document(response), "computed_context": context, **lineage.seal(context),
        "created_by": ctx.actor, "created_at": ctx.now, "updated_at": ctx.now,
    }
    return values
