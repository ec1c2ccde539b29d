"""Budget oversubscription under real concurrency: threads against several server processes on one database."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.integration.test_gate_flow import preflight, set_mode
from tests.live import make_tenant, process_servers
from tests.pg import create_database
from valdrix.config import Settings
from valdrix.migrate import upgrade

API = "/api/v1/enforcement"


def run_budget_race(urls: list[str], database_url: str) -> None:
    tenant = make_tenant(Settings(database_url=database_url), urls[0])
    with tenant.client() as c:
        set_mode(c, "hard")
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"}]})

    # One pooled client per server, shared by the threads: the load should be on the servers, not on
    # building 64 clients.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    clients = [httpx.Client(base_url=url, timeout=60, limits=limits,
                            headers={"Authorization": f"Bearer {tenant.owner_key}"}) for url in urls]

    def call(i: int) -> dict[str, object]:
        r = clients[i % len(clients)].post(f"{API}/gate/terraform/preflight", json=preflight("60", run=f"run-{i}"))
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    try:
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(64)))
    finally:
        for client in clients:
            client.close()
    decisions = Counter(r["decision"] for r in results)
    assert decisions == {"ALLOW": 16, "DENY": 48}, decisions
    fail_safe = [r["reason_codes"] for r in results if any(str(c).startswith("gate_") for c in r["reason_codes"])]  # type: ignore[attr-defined]
    assert fail_safe == [], fail_safe
    with tenant.client() as c:
        budget = c.get(f"{API}/budgets").json()["items"][0]
        assert Decimal(budget["reserved_usd"]) == Decimal(960) <= Decimal(1000)
        items = c.get(f"{API}/decisions", params={"limit": 500}).json()["items"]
        assert sum(Decimal(i["reserved_allocation_usd"]) for i in items if i["reservation_active"]) == Decimal(960)
        assert not any(i["fail_safe"] for i in items)


@pytest.mark.slow
def test_budget_race_postgres_three_processes(pg_cluster: str) -> None:
    url = create_database(pg_cluster, "race_three_processes")
    upgrade(url)
    with process_servers(url, 3) as urls:
        run_budget_race(urls, url)


@pytest.mark.slow
def test_budget_race_sqlite_one_process(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    upgrade(url)
    with process_servers(url, 1) as urls:
        run_budget_race(urls, url)
