"""The invariant checker finds what it promises to: a clean run passes, and each kind of damage is reported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.live import LiveServer, thread_server
from tests.reliability import invariants, scenarios
from tests.reliability.load import APPROVAL_SCOPE, LIMITED_SCOPE, Client, Consume, Observations
from valdrix.approvals.models import ApprovalRequest
from valdrix.budgets.models import Budget
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.decisions.models import Decision
from valdrix.ledger import service as ledger
from valdrix.migrate import upgrade


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("invariants")
    env = scenarios.signing_env(root / "keys")
    url = f"sqlite:///{root}/invariants.db"
    upgrade(url)
    settings = Settings(database_url=url, signing_keys_dir=Path(env["VALDRIX_SIGNING_KEYS_DIR"]),
                        signing_active_kid=env["VALDRIX_SIGNING_ACTIVE_KID"])
    with thread_server(settings, "sqlite") as server:
        yield server


def _run(live: LiveServer) -> tuple[scenarios.Target, Observations]:
    """A tenant with a few of each operation, all answered."""
    target = scenarios.prepare(live.settings.database_url, [live.url], "600")
    obs = Observations()
    client = Client(0, target.urls, target.keys, obs, seed=7)
    try:
        for _ in range(3):
            client.preflight()
            client.admission()
            client.approval_continuation()
            client.read()
    finally:
        client.close()
    assert obs.failures == [] and len(obs.consumes) == 3 and all(c.delivered for c in obs.consumes.values())
    return target, obs


def _retrieved(_: Consume) -> bool:
    return True


def _check(target: scenarios.Target, obs: Observations, retrieve: invariants.Retrieve | None = _retrieved
           ) -> list[str]:
    return [f"{f.kind}: {f.detail}" for f in invariants.check(target.database_url, target.tenant_id, obs, retrieve)]


def _write(target: scenarios.Target, statement: object) -> None:
    engine = make_engine(Settings(database_url=target.database_url))
    try:
        with transaction(make_sessionmaker(engine)) as session:
            session.execute(statement)  # type: ignore[call-overload]
    finally:
        engine.dispose()


def test_a_clean_run_holds_every_invariant(live: LiveServer) -> None:
    target, obs = _run(live)
    assert _check(target, obs) == []


def test_decisions_a_client_received_must_be_stored_once_per_key(live: LiveServer) -> None:
    target, obs = _run(live)
    (source, key), ids = next(iter(obs.decisions.items()))
    stray = str(uuid.uuid4())
    obs.decisions[(source, key)] = {*ids, stray}
    found = _check(target, obs)
    assert any("answered with 2 decisions" in f for f in found), found
    assert any(f"decision {stray} ({source}:{key}) reached a client but is not stored" in f for f in found), found


def test_reservations_must_match_the_budget_and_stay_within_its_limit(live: LiveServer) -> None:
    target, obs = _run(live)
    _write(target, update(Budget).where(Budget.tenant_id == target.tenant_id, Budget.scope_key == APPROVAL_SCOPE)
           .values(reserved_usd=Budget.reserved_usd + 1))
    _write(target, update(Budget).where(Budget.tenant_id == target.tenant_id, Budget.scope_key == LIMITED_SCOPE)
           .values(monthly_limit_usd=0))
    found = _check(target, obs)
    assert any(f.startswith(f"invariant: budget {APPROVAL_SCOPE}: reserved_usd") and "active reservations" in f
               for f in found), found
    assert any(f"budget {LIMITED_SCOPE}" in f and "over its hard limit 0" in f for f in found), found


def test_a_token_consumed_twice_or_answered_but_not_committed_is_reported(live: LiveServer) -> None:
    target, obs = _run(live)
    first, second = list(obs.consumes.values())[:2]
    engine = make_engine(Settings(database_url=target.database_url))
    try:
        with transaction(make_sessionmaker(engine)) as session:
            decision = session.scalars(select(Decision).where(Decision.id == uuid.UUID(first.decision_id))).one()
            ledger.append(session, decision, event="token_consumed", actor=None, now=datetime.now(UTC))
    finally:
        engine.dispose()
    _write(target, update(ApprovalRequest).where(ApprovalRequest.id == uuid.UUID(second.approval_id))
           .values(token_consumed_at=None))
    found = _check(target, obs)
    assert any(f"approval {first.approval_id}: token consumed 2 times" in f for f in found), found
    assert any(f"approval {second.approval_id}: consume answered 200 but the database has no consumption" in f
               for f in found), found


def test_a_committed_consume_must_be_delivered_or_retrievable(live: LiveServer) -> None:
    target, obs = _run(live)
    lost = next(iter(obs.consumes.values()))
    lost.delivered = False
    found = _check(target, obs, retrieve=lambda consume: consume is not lost)
    assert found == [f"consume_not_retrievable: approval {lost.approval_id}: committed consume (never delivered to "
                     f"its caller) not returned for its idempotency key (answers: {lost.answers})"], found
    assert len(_check(target, obs, retrieve=None)) == 3  # the lost one and the delivered ones sampled
