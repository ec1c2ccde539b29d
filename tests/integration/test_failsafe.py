"""Fail-safe decisions on PostgreSQL, with real faults: a held budget row lock, a slow statement, a failing one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import settings_for
from tests.integration.test_gate_flow import preflight, set_mode
from tests.live import LiveServer, thread_server
from valdrix.db import make_engine

API = "/api/v1/enforcement"


@pytest.fixture(scope="module")
def fast_server(pg_url: str) -> Iterator[LiveServer]:
    with thread_server(settings_for(pg_url, gate_timeout_seconds=0.5), "postgresql") as live:
        yield live


def metric(url: str, name: str, **labels: str) -> float:
    body = httpx.get(url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(("mode", "decision", "suffix"), [
    ("soft", "REQUIRE_APPROVAL", "soft_mode_fail_safe_escalation"), ("hard", "DENY", "hard_mode_fail_closed"),
    ("shadow", "ALLOW", "shadow_mode_fail_open")])
def test_lock_timeout_answers_persisted_fail_safe(fast_server: LiveServer, mode: str, decision: str,
                                                  suffix: str) -> None:
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    before = metric(fast_server.url, "valdrix_ops_enforcement_gate_lock_events_total", source="terraform",
                    event="timeout")
    with tenant.client() as c:
        set_mode(c, mode)
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"}]})
        with engine.connect() as blocker:
            blocker.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t FOR UPDATE"), {"t": tenant.id})
            r = c.post(f"{API}/gate/terraform/preflight", json=preflight("60")).json()
            blocker.rollback()
        assert (r["decision"], r["reason_codes"]) == (decision, ["gate_lock_timeout", suffix])
        assert r["reservation_active"] is False
        stored = c.get(f"{API}/decisions/{r['decision_id']}").json()
        assert stored["fail_safe"] is True
        ledger = c.get(f"{API}/ledger").json()["items"]
        assert ledger[-1]["details"] == {"fail_safe_trigger": "gate_lock_timeout"}
        # The fail-safe outcome is the stored answer for this key once the lock is free again.
        assert c.post(f"{API}/gate/terraform/preflight", json=preflight("60")).json()["decision_id"] == \
            r["decision_id"]
    engine.dispose()
    after = metric(fast_server.url, "valdrix_ops_enforcement_gate_lock_events_total", source="terraform",
                   event="timeout")
    assert after == before + 1


def test_a_decision_waiting_for_a_lock_does_not_hold_up_others(fast_server: LiveServer) -> None:
    """Decisions take turns in a worker process (valdrix/gatepool.py); one stuck on a lock passes its turn on."""
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    assert fast_server.settings.gate_concurrency == 1
    done: dict[str, tuple[float, dict[str, Any]]] = {}

    def ask(project: str) -> None:
        with tenant.client() as client:
            body = client.post(f"{API}/gate/terraform/preflight",
                               json={**preflight("60"), "run_id": f"run-{project}", "project_id": project}).json()
            done[project] = (time.monotonic(), body)

    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"},
                                                  {"scope_key": "search", "monthly_limit_usd": "1000"}]})
        with engine.connect() as blocker:
            blocker.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t AND scope_key = 'payments' FOR UPDATE"),
                            {"t": tenant.id})
            stuck = threading.Thread(target=ask, args=("payments",))
            stuck.start()
            time.sleep(0.1)  # the payments decision holds the process's one turn, waiting for the lock
            ask("search")
            stuck.join(10)
            blocker.rollback()
    engine.dispose()
    (search_done, search), (payments_done, payments) = done["search"], done["payments"]
    assert (search["decision"], search["reason_codes"]) == ("ALLOW", [])
    assert payments["reason_codes"][0] == "gate_lock_timeout"
    # Asked 0.1 s after the stuck one, answered long before its lock wait (~0.3 s) ended.
    assert search_done < payments_done - 0.1


@pytest.mark.parametrize(("body", "trigger"), [
    ("PERFORM pg_sleep(2); RETURN NEW;", "gate_timeout"),
    ("RAISE EXCEPTION 'injected fault';", "gate_evaluation_error"),
])
def test_slow_or_failing_evaluation_fails_safe(fast_server: LiveServer, body: str, trigger: str) -> None:
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    name = f"fault_{tenant.id.hex}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$"))
        conn.execute(text(f"CREATE TRIGGER {name} BEFORE UPDATE ON budgets FOR EACH ROW "
                          f"WHEN (NEW.tenant_id = '{tenant.id}') EXECUTE FUNCTION {name}()"))
    try:
        with tenant.client() as c:
            set_mode(c, "hard")
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE budgets DISABLE TRIGGER {name}"))
            c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"}]})
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE budgets ENABLE TRIGGER {name}"))
            r = c.post(f"{API}/gate/terraform/preflight", json=preflight("60"))
            assert r.status_code == 200, r.text
            assert r.json()["reason_codes"] == [trigger, "hard_mode_fail_closed"]
            assert r.json()["decision"] == "DENY"
            budgets = c.get(f"{API}/budgets").json()["items"]
            assert budgets[0]["reserved_usd"] == "0.0000"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER {name} ON budgets"))
            conn.execute(text(f"DROP FUNCTION {name}()"))
        engine.dispose()


@pytest.mark.parametrize("busy_scope", ["payments", "default"])
def test_unrelated_scopes_do_not_wait(fast_server: LiveServer, busy_scope: str) -> None:
    """A decision on a project with its own budget waits neither for another project nor for `default`."""
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"},
                                                  {"scope_key": "search", "monthly_limit_usd": "1000"},
                                                  {"scope_key": "default", "monthly_limit_usd": "1000"}]})
        with engine.connect() as blocker:
            blocker.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t AND scope_key = :s FOR UPDATE"),
                            {"t": tenant.id, "s": busy_scope})
            r = c.post(f"{API}/gate/terraform/preflight", json={**preflight("60"), "project_id": "search"}).json()
            blocker.rollback()
        assert (r["decision"], r["reason_codes"]) == ("ALLOW", [])
    engine.dispose()


def test_a_project_without_a_budget_waits_for_the_default_one(fast_server: LiveServer) -> None:
    """The first statement locks `default` when the project has no budget of its own (or only an inactive one)."""
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    with tenant.client() as c:
        set_mode(c, "hard")
        c.put(f"{API}/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": "1000", "active": False},
            {"scope_key": "default", "monthly_limit_usd": "1000"}]})
        with engine.connect() as blocker:
            blocker.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t AND scope_key = 'default' FOR UPDATE"),
                            {"t": tenant.id})
            answers = [c.post(f"{API}/gate/terraform/preflight",
                              json={**preflight("60"), "run_id": f"run-{project}", "project_id": project}).json()
                       for project in ("payments", "search")]
            blocker.rollback()
        assert [a["reason_codes"] for a in answers] == [["gate_lock_timeout", "hard_mode_fail_closed"]] * 2
        released = c.post(f"{API}/gate/terraform/preflight", json={**preflight("60"), "run_id": "run-after"}).json()
        assert (released["decision"], released["computed_context"]["budget_scope"]) == ("ALLOW", "default")
    engine.dispose()


def test_a_replay_does_not_wait_for_the_budget_lock(fast_server: LiveServer) -> None:
    tenant = fast_server.tenant()
    engine = make_engine(fast_server.settings)
    with tenant.client() as c:
        c.put(f"{API}/budgets", json={"budgets": [{"scope_key": "payments", "monthly_limit_usd": "1000"}]})
        first = c.post(f"{API}/gate/terraform/preflight", json=preflight("60")).json()
        assert first["decision"] == "ALLOW"
        with engine.connect() as blocker:
            blocker.execute(text("SELECT 1 FROM budgets WHERE tenant_id = :t FOR UPDATE"), {"t": tenant.id})
            started = time.monotonic()
            again = c.post(f"{API}/gate/terraform/preflight", json=preflight("60")).json()
            waited = time.monotonic() - started
            blocker.rollback()
        assert (again["decision_id"], again["replayed"]) == (first["decision_id"], True)
        assert waited < fast_server.settings.lock_timeout_seconds
    engine.dispose()
