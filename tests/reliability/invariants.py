"""What must hold after any run, whatever faults it survived: read from the database and the clients' records.

`check` returns the violations (empty when everything holds). It is shared by `tests/reliability` and
`bench/faults.py`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select

from tests.reliability.load import Consume, Failure, Observations
from valdrix.approvals.models import ApprovalRequest
from valdrix.budgets.models import Budget
from valdrix.config import Settings
from valdrix.db import make_engine
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry

# Retrieves a committed consume by its idempotency key after the run: True when the server returns its result.
Retrieve = Callable[[Consume], bool]
# Delivered consumes also retrieved by their key after each run: the promise holds for every committed consume,
# and a lost response is too rare an event under load to be the only test of it.
DELIVERED_RETRIEVED = 3


def check(database_url: str, tenant_id: uuid.UUID, obs: Observations,
          retrieve: Retrieve | None = None) -> list[Failure]:
    engine = make_engine(Settings(database_url=database_url))
    try:
        with engine.connect() as db:
            decisions = {str(row.id): row for row in db.execute(
                select(Decision.id, Decision.source, Decision.idempotency_key, Decision.budget_scope,
                       Decision.reserved_allocation_usd, Decision.reservation_active)
                .where(Decision.tenant_id == tenant_id))}
            ledger = Counter((str(row.decision_id), row.event) for row in db.execute(
                select(LedgerEntry.decision_id, LedgerEntry.event).where(LedgerEntry.tenant_id == tenant_id)))
            budgets = list(db.execute(select(Budget.scope_key, Budget.monthly_limit_usd, Budget.reserved_usd)
                                      .where(Budget.tenant_id == tenant_id)))
            held: dict[str | None, Decimal] = {}
            for scope, amount in db.execute(select(Decision.budget_scope, Decision.reserved_allocation_usd)
                                            .where(Decision.tenant_id == tenant_id,
                                                   Decision.reservation_active.is_(True))):
                held[scope] = held.get(scope, Decimal(0)) + amount
            consumed = {str(row.id): row for row in db.execute(
                select(ApprovalRequest.id, ApprovalRequest.decision_id, ApprovalRequest.status,
                       ApprovalRequest.token_consumed_at)
                .where(ApprovalRequest.tenant_id == tenant_id))}
    finally:
        engine.dispose()
    broken = [Failure("invariant", text) for text in
              (*_decisions(obs, decisions, ledger), *_budgets(budgets, held), *_tokens(obs, consumed, ledger))]
    return broken + _retrievable(obs, consumed, retrieve)


def _decisions(obs: Observations, decisions: Mapping[str, Row[Any]], ledger: Counter[tuple[str, str]]) -> list[str]:
    out = []
    by_key = {(row.source, row.idempotency_key): decision_id
              for decision_id, row in decisions.items()}
    for (source, key), received in obs.decisions.items():
        if len(received) > 1:
            out.append(f"idempotency key {source}:{key} answered with {len(received)} decisions: {sorted(received)}")
        stored = by_key.get((source, key))
        for decision_id in received:
            if decision_id not in decisions:
                out.append(f"decision {decision_id} ({source}:{key}) reached a client but is not stored")
            elif stored != decision_id:
                out.append(f"decision {decision_id} reached a client for {source}:{key}, stored under it: {stored}")
    for decision_id in decisions:
        created = ledger[(decision_id, "decision_created")]
        if created != 1:
            out.append(f"decision {decision_id} has {created} decision_created ledger rows")
    return out


def _budgets(budgets: list[Row[Any]], held: dict[str | None, Decimal]) -> list[str]:
    out = []
    for scope, limit, reserved in budgets:
        active = Decimal(held.get(scope, 0))
        if reserved != active:
            out.append(f"budget {scope}: reserved_usd {reserved} but active reservations hold {active}")
        if reserved > limit:
            out.append(f"budget {scope}: reserved_usd {reserved} over its hard limit {limit}")
    return out


def _tokens(obs: Observations, approvals: Mapping[str, Row[Any]], ledger: Counter[tuple[str, str]]) -> list[str]:
    out = []
    for approval_id, row in approvals.items():
        decision_id = str(row.decision_id)
        burns = ledger[(decision_id, "token_consumed")]
        committed = row.token_consumed_at is not None
        if burns > 1:
            out.append(f"approval {approval_id}: token consumed {burns} times")
        approved = ledger[(decision_id, "approval_approved")]
        if approved > 1 or (row.status == "approved" and approved != 1):
            out.append(f"approval {approval_id}: status {row.status} with {approved} approval_approved ledger rows")
        if committed != (burns == 1):
            out.append(f"approval {approval_id}: token_consumed_at {row.token_consumed_at} "
                       f"but {burns} token_consumed ledger rows")
        consume = obs.consumes.get(approval_id)
        if consume is not None and consume.delivered and not committed:
            out.append(f"approval {approval_id}: consume answered 200 but the database has no consumption")
    return out


def _retrievable(obs: Observations, approvals: Mapping[str, Row[Any]], retrieve: Retrieve | None) -> list[Failure]:
    """Every committed consume whose caller never got the result, and a few that did: returned again by key."""
    committed = [consume for approval_id, consume in sorted(obs.consumes.items())
                 if approvals[approval_id].token_consumed_at is not None]
    lost = [consume for consume in committed if not consume.delivered]
    sample = [consume for consume in committed if consume.delivered][:DELIVERED_RETRIEVED]
    out = []
    for consume in [*lost, *sample]:
        if retrieve is None or not retrieve(consume):
            what = "delivered" if consume.delivered else "never delivered to its caller"
            out.append(Failure("consume_not_retrievable", f"approval {consume.approval_id}: committed consume "
                               f"({what}) not returned for its idempotency key (answers: {consume.answers})"))
    return out
