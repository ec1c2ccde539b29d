"""Operations: metrics merged across worker processes, readiness, pagination, and the admin CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import settings_for
from tests.integration.test_gate_flow import preflight
from tests.live import LiveServer, Tenant, make_tenant, post, process_servers, thread_server
from valdrix.config import Settings
from valdrix.migrate import upgrade

API = "/api/v1/enforcement"


def counter(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_metrics_are_merged_across_worker_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/metrics.db"
    upgrade(url)
    with process_servers(url, 1, workers=2) as urls:
        tenant = make_tenant(Settings(database_url=url), urls[0])
        with tenant.client() as c:
            for i in range(40):  # new connections each time spread requests over both workers
                with httpx.Client(base_url=urls[0], headers=dict(c.headers)) as fresh:
                    assert post(fresh, "/gate/terraform/preflight", preflight("1", run=f"m{i}")).status_code == 200
        total = counter(urls[0], "valdrix_ops_enforcement_gate_decisions_total", source="terraform")
        assert total == 40
        buckets = counter(urls[0], "valdrix_ops_enforcement_gate_latency_seconds_count", source="terraform")
        assert buckets == 40


def test_readyz_checks_database_and_revision(server: LiveServer, tmp_path: Path) -> None:
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # A database that was never migrated is reachable but not ready.
    with thread_server(settings_for(f"sqlite:///{tmp_path}/empty.db"), "sqlite") as empty:
        r = httpx.get(empty.url + "/readyz")
        assert (r.status_code, r.json()["code"]) == (503, "not_ready")
        assert httpx.get(empty.url + "/healthz").status_code == 200


def test_decision_filters_and_cursor_pagination(tenant: Tenant) -> None:
    with tenant.client() as c:
        ids = [post(c, "/gate/terraform/preflight", {**preflight("1", run=f"p{i}"),
                                                      "environment": "prod" if i % 2 else "dev"}).json()["decision_id"]
               for i in range(7)]
        seen, cursor = [], None
        while True:
            page = c.get(f"{API}/decisions", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            seen += [d["decision_id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 7
        prod = c.get(f"{API}/decisions", params={"environment": "production"}).json()["items"]
        assert len(prod) == 3 and {d["environment"] for d in prod} == {"prod"}
        ledger, cursor = [], None
        while True:
            page = c.get(f"{API}/ledger", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            ledger += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [e["decision_id"] for e in ledger] == ids


def test_admin_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "VALDRIX_DATABASE_URL": url}

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "valdrix", *args], env=env, capture_output=True, text=True)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    cli("migrate")
    owner_key = cli("tenant", "create", "acme").stdout.strip()
    assert owner_key.startswith("vxk_")
    assert "tenant_exists" in cli("tenant", "create", "acme", ok=False).stderr
    ci_key = cli("key", "create", "--tenant", "acme", "--name", "ci").stdout.strip()
    listing = cli("key", "list", "--tenant", "acme").stdout
    assert "owner" in listing and "ci" in listing and ci_key[:12] in listing and ci_key not in listing
    assert "invalid_role" in cli("key", "create", "--tenant", "acme", "--name", "x", "--role", "god", ok=False).stderr
    with thread_server(settings_for(url), "sqlite") as live:
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {ci_key}"}) as c:
            assert c.get(f"{API}/budgets").status_code == 200
        from valdrix.auth import service as auth
        from valdrix.db import make_engine, make_sessionmaker, transaction

        engine = make_engine(settings_for(url))
        with transaction(make_sessionmaker(engine)) as session:
            key_id = next(str(k.id) for k, p in auth.list_keys(session, auth.get_tenant(session, "acme").id)
                          if p.name == "ci")
        engine.dispose()
        cli("key", "revoke", key_id)
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {ci_key}"}) as c:
            assert c.get(f"{API}/budgets").status_code == 401
