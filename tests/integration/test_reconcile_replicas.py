"""PostgreSQL, two `valdrix serve` processes on one database: reconciliations and sweeps settle each once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select, text

from tests.integration.test_gate_flow import preflight
from tests.live import make_tenant, post, process_servers
from tests.pg import create_database
from valdrix.budgets.models import Budget, CreditGrant
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.jobs import service as leases
from valdrix.ledger.models import LedgerEntry
from valdrix.migrate import upgrade
from valdrix.reservations.models import Reconciliation

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
T = TypeVar("T")
R = "/api/v1/enforcement/reservations"


@pytest.fixture(scope="module")
def fresh_url(pg_cluster: str) -> str:
    url = create_database(pg_cluster, f"rec_{uuid.uuid4().hex[:10]}")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def replicas(fresh_url: str) -> Iterator[list[str]]:
    # A tenant before the replicas start: they find a non-empty database and do not race to bootstrap one.
    make_tenant(Settings(database_url=fresh_url), "")
    with process_servers(fresh_url, 2) as urls:
        yield urls


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def seed(url: str, c: httpx.Client, count: int) -> list[str]:
    assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
        {"scope_key": "payments", "monthly_limit_usd": "300"}]}).status_code == 200
    assert post(c, "/credits", {"pool": "reserved", "scope_key": "payments", "amount_usd": "2000"}).status_code == 201
    ids = []
    for i in range(count):
        r = post(c, "/gate/terraform/preflight", preflight("50", run=f"run-{i}"))
        assert r.status_code == 200 and r.json()["reservation_active"], r.text
        ids.append(r.json()["decision_id"])
    return ids


def totals(url: str, tenant_id: uuid.UUID, event: str) -> dict[str, Any]:
    engine = make_engine(Settings(database_url=url))
    try:
        with transaction(make_sessionmaker(engine)) as s:
            return {
                "budget_reserved": s.scalar(select(Budget.reserved_usd).where(Budget.tenant_id == tenant_id)),
                "grant_remaining": s.scalar(select(CreditGrant.remaining_usd)
                                            .where(CreditGrant.tenant_id == tenant_id)),
                "ledger": s.scalar(select(func.count()).select_from(LedgerEntry).where(
                    LedgerEntry.tenant_id == tenant_id, LedgerEntry.event == event)),
                "rows": s.scalar(select(func.count()).select_from(Reconciliation).where(
                    Reconciliation.tenant_id == tenant_id)),
            }
    finally:
        engine.dispose()


def test_two_replicas_reconciling_with_the_same_key_settle_once(fresh_url: str, replicas: list[str]) -> None:
    tenant = make_tenant(Settings(database_url=fresh_url), replicas[0])
    clients = [httpx.Client(base_url=u, headers={"Authorization": f"Bearer {tenant.owner_key}"}, timeout=30)
               for u in replicas]
    ids = seed(fresh_url, clients[0], 12)  # 6 on the budget, 6 on credit
    for i, decision_id in enumerate(ids):
        def call(c: httpx.Client, d: str = decision_id, k: str = f"key-{i}") -> httpx.Response:
            return c.post(f"{R}/{d}/reconcile", json={"actual_monthly_delta_usd": "40"},
                          headers={"Idempotency-Key": k})
        a, b = at_once([lambda: call(clients[0]), lambda: call(clients[1])])
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        assert sorted([a.json()["replayed"], b.json()["replayed"]]) == [False, True]
        assert {**a.json(), "replayed": None} == {**b.json(), "replayed": None}
    seen = totals(fresh_url, tenant.id, "reservation_reconciled")
    # Each budget-funded reservation consumed 40 of 50; each credit-funded one consumed 40 and refunded 10.
    assert seen == {"budget_reserved": Decimal(0), "grant_remaining": Decimal(2000 - 6 * 40), "ledger": 12,
                    "rows": 12}
    for c in clients:
        c.close()


def test_two_sweeps_at_once_release_each_reservation_once(fresh_url: str, replicas: list[str]) -> None:
    tenant = make_tenant(Settings(database_url=fresh_url), replicas[0])
    clients = [httpx.Client(base_url=u, headers={"Authorization": f"Bearer {tenant.owner_key}"}, timeout=30)
               for u in replicas]
    ids = seed(fresh_url, clients[0], 30)
    engine = make_engine(Settings(database_url=fresh_url))
    with transaction(make_sessionmaker(engine)) as s:
        # The replicas run on the wall clock, so the reservations are made old instead.
        s.execute(text("UPDATE decisions SET created_at = created_at - interval '2 days' WHERE tenant_id = :t"),
                  {"t": tenant.id})
    engine.dispose()
    released: list[str] = []

    def sweep(c: httpx.Client) -> list[str]:
        mine: list[str] = []
        while True:
            r = post(c, "/reservations/reconcile-overdue", {"limit": 3})
            assert r.status_code == 200, r.text
            if not r.json()["decision_ids"]:
                return mine
            mine.extend(r.json()["decision_ids"])

    for part in at_once([lambda: sweep(clients[0]), lambda: sweep(clients[1])]):
        released.extend(part)
    assert sorted(released) == sorted(ids) and len(set(released)) == len(released)
    assert totals(fresh_url, tenant.id, "reservation_auto_released") == {
        "budget_reserved": Decimal(0), "grant_remaining": Decimal(2000), "ledger": 30, "rows": 30}
    for c in clients:
        c.close()


def test_job_lease_is_taken_by_exactly_one_of_many_racers(fresh_url: str) -> None:
    engine = make_engine(Settings(database_url=fresh_url))
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)

    def take(holder: str, when: datetime) -> bool:
        with transaction(factory) as s:
            return leases.acquire(s, "sweep", holder, now=when, ttl_seconds=60, respect_schedule=True)

    for round_ in range(5):
        when = now + timedelta(minutes=2 * round_)
        wins = at_once([lambda h=f"r{round_}-{i}", w=when: take(h, w) for i in range(8)])
        assert wins.count(True) == 1, wins
    with transaction(factory) as s:
        leases.finish(s, "sweep", "nobody", now=now, status="success", next_run_at=now)  # not the holder: no-op
    assert not take("late", now + timedelta(minutes=8, seconds=30))  # round 4's lease still runs
    with transaction(factory) as s:
        holder = s.execute(text("SELECT holder FROM job_leases WHERE name = 'sweep'")).scalar_one()
        leases.finish(s, "sweep", holder, now=now + timedelta(minutes=9), status="success",
                      next_run_at=now + timedelta(minutes=20))
    assert not take("early", now + timedelta(minutes=10))  # released, but not due before next_run_at
    assert take("due", now + timedelta(minutes=20))
    engine.dispose()
