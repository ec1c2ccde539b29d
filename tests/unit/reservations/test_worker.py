"""The worker's jobs on SQLite: `valdrix reconcile --once` releases overdue reservations; the schedule is shared."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from valdrix.auth import service as auth
from valdrix.budgets import service as budgets
from valdrix.budgets.models import Budget
from valdrix.clock import UuidFactory
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.decisions import engine, service
from valdrix.decisions.models import Decision
from valdrix.jobs import runner as worker
from valdrix.migrate import upgrade


def test_reconcile_once_and_worker_schedule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    settings = Settings(database_url=url)
    eng = make_engine(settings)
    factory = make_sessionmaker(eng)
    old = datetime.now(UTC) - timedelta(days=2)
    with transaction(factory) as s:
        tenant = auth.create_tenant(s, "w", now=old)
        budgets.put_budget(s, tenant.id, "payments", Decimal(1000), active=True, now=old)
        for i in range(3):
            ctx = service.GateContext(tenant_id=tenant.id, actor=None, now=old + timedelta(hours=i * 20),
                                      ids=UuidFactory(), timeout_seconds=30, lock_timeout_seconds=5)
            service.decide(s, ctx, engine.make_input(
                source="terraform", project_id="payments", environment="nonprod", action="create",
                resource_reference=f"r{i}", monthly_delta=Decimal(100), hourly_delta=Decimal(0)), None)
    env = {**os.environ, "VALDRIX_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "valdrix", "reconcile", "--once"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "success" in done.stderr, done.stderr
    with transaction(factory) as s:
        active = s.scalar(select(func.count()).select_from(Decision).where(Decision.reservation_active.is_(True)))
        assert active == 1  # the one made 8 h ago is not overdue yet
        assert s.scalar(select(Budget.reserved_usd)) == Decimal(100)
    job = worker.Job("test.job", 3600, lambda _s, _now, _settings: "ran")
    assert worker.run_job(factory, settings, job, "replica-a", respect_schedule=True) == "success"
    assert worker.run_job(factory, settings, job, "replica-b", respect_schedule=True) is None  # not due
    assert worker.run_job(factory, settings, job, f"cron-{uuid.uuid4()}", respect_schedule=False) == "success"
    with transaction(factory) as s:
        # A prod change needs approval; nobody reviews it within the 900 s TTL.
        ctx = service.GateContext(tenant_id=tenant.id, actor=None, now=datetime.now(UTC) - timedelta(hours=1),
                                  ids=UuidFactory(), timeout_seconds=30, lock_timeout_seconds=5)
        pending = service.decide(s, ctx, engine.make_input(
            source="terraform", project_id="payments", environment="prod", action="create", resource_reference="p",
            monthly_delta=Decimal(50), hourly_delta=Decimal(0)), None).decision
        assert pending.decision == "REQUIRE_APPROVAL" and pending.reservation_active
    expiry = next(j for j in worker.jobs(settings) if j.name == worker.EXPIRE_APPROVALS)
    assert worker.run_job(factory, settings, expiry, "replica-a", respect_schedule=True) == "success"
    with transaction(factory) as s:
        assert s.get(Decision, pending.id).reservation_active is False  # type: ignore[union-attr]
        assert s.scalar(select(Budget.reserved_usd)) == Decimal(100)
    failing = worker.Job("test.failing", 3600, lambda _s, _now, _settings: str(1 / 0))
    assert worker.run_job(factory, settings, failing, "replica-a", respect_schedule=True) == "failure"
    eng.dispose()


def test_the_cli_creates_no_metrics_before_serve_sets_the_multiprocess_directory() -> None:
    code = "import sys, valdrix.cli; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
