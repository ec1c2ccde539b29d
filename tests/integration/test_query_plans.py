"""The gate's lookups stay on their narrow indexes as the tables grow (PostgreSQL plans, counted by the server).

The gate's statements are prepared, and PostgreSQL may keep one generic plan for a prepared statement for
good, made while the tables were nearly empty. Written as they once were, the replay lookup (tenant, source,
idempotency key) was then planned on the (tenant, created_at) index and the budget lock on the tenant prefix
of (tenant, scope): each request read every decision and every budget of the tenant, so CPU per decision grew
with the tables. A priced admission's approval-redeem lookup is held to the same bound, and no lookup may
fall back to reading a whole table.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import settings_for
from tests.live import make_tenant
from tests.pg import create_database
from valdrix.approvals import service as approvals
from valdrix.auth.service import authenticate
from valdrix.budgets import service as budgets
from valdrix.clock import SystemClock, UuidFactory
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.decisions import engine, service
from valdrix.decisions.models import Decision
from valdrix.migrate import upgrade

GROWN = 3000
CLOCK = SystemClock()


@pytest.fixture
def database(pg_cluster: str) -> Iterator[tuple[Engine, sessionmaker[Session], str]]:
    url = create_database(pg_cluster, f"plans_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    # One pooled connection, so every decision reuses the same server-side prepared statements.
    eng = make_engine(settings_for(url, db_pool_size=1))
    yield eng, make_sessionmaker(eng), url
    eng.dispose()


def _decide(sessions: sessionmaker[Session], key: str, run: str) -> None:
    inp = engine.make_input(source="terraform", project_id="payments", environment="nonprod", action="create",
                            resource_reference=f"aws_instance.{run}", monthly_delta=Decimal("1"),
                            hourly_delta=Decimal("0"), metadata={}, dry_run=False)
    with transaction(sessions) as session:
        caller = authenticate(session, key)
        assert caller is not None
        ctx = service.GateContext(tenant_id=caller.tenant_id, actor=caller.principal_id, now=CLOCK.now(),
                                  ids=UuidFactory(), timeout_seconds=5.0, lock_timeout_seconds=2.0)
        # As a priced admission does: redeem an approved identical request first, else decide.
        assert approvals.redeem(session, tenant_id=caller.tenant_id, source=inp.source, fingerprint=inp.fingerprint,
                                actor=caller.principal_id, now=ctx.now) is None
        assert not service.decide(session, ctx, inp, f"terraform:{run}:plan").replayed


# Index entries read, per index; rows read by sequential scans of decisions and budgets; rows of
# approval_requests read by any scan.
_READS = text("SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes "
              "WHERE relname IN ('decisions', 'budgets', 'approval_requests') "
              "UNION ALL SELECT 'seq:' || relname, seq_tup_read FROM pg_stat_user_tables "
              "WHERE relname IN ('decisions', 'budgets') "
              "UNION ALL SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
              "WHERE relname = 'approval_requests'")


def _reads(eng: Engine) -> Counter[str]:
    with eng.connect() as connection:
        # Statistics are sent when a backend goes idle; make the pooled backend send them now.
        connection.execute(text("SELECT pg_stat_force_next_flush()"))
        connection.commit()
    time.sleep(0.3)
    reader = make_engine(settings_for(eng.url.render_as_string(hide_password=False)))
    try:
        with reader.connect() as connection:
            return Counter({name: int(value) for name, value in connection.execute(_READS)})
    finally:
        reader.dispose()


def test_gate_lookups_read_a_few_index_entries_however_many_decisions_and_budgets_the_tenant_has(
        database: tuple[Engine, sessionmaker[Session], str]) -> None:
    eng, sessions, url = database
    tenant = make_tenant(settings_for(url), "http://unused")
    with transaction(sessions) as session:
        budgets.put_budget(session, tenant.id, "payments", Decimal("1000000"), active=True, now=CLOCK.now())
    # Enough executions on a nearly empty table for psycopg to prepare the statements and for PostgreSQL to
    # settle on a generic plan.
    for i in range(15):
        _decide(sessions, tenant.owner_key, f"early-{i}")
    columns = [c.name for c in Decision.__table__.columns]
    copied = ", ".join("gen_random_uuid()" if c == "id" else "idempotency_key || '-' || g" if c == "idempotency_key"
                       else c for c in columns)
    with eng.begin() as connection:
        connection.execute(text(f"INSERT INTO decisions ({', '.join(columns)}) SELECT {copied} FROM decisions, "
                                f"generate_series(1, {GROWN}) AS g WHERE idempotency_key = 'terraform:early-0:plan'"))
        connection.execute(text("INSERT INTO budgets (id, tenant_id, scope_key, monthly_limit_usd, reserved_usd, "
                                "active, updated_at) SELECT gen_random_uuid(), tenant_id, 'project-' || g, "
                                f"monthly_limit_usd, 0, true, updated_at FROM budgets, generate_series(1, {GROWN}) g"))
        # Approved approvals whose tokens were used long ago stay in the table.
        connection.execute(text(
            "INSERT INTO approval_requests (id, tenant_id, decision_id, status, routing, routing_rule_id, "
            "required_permission, expires_at, approved_at, token_expires_at, token_consumed_at, created_at, "
            "updated_at) SELECT gen_random_uuid(), tenant_id, id, 'approved', '{}', 'r', 'approve:nonprod', "
            "created_at, created_at, created_at + interval '1 day', created_at, created_at, created_at "
            "FROM decisions WHERE idempotency_key LIKE 'terraform:early-0:plan-%'"))
    before = _reads(eng)
    for i in range(20):
        _decide(sessions, tenant.owner_key, f"late-{i}")
    reads = _reads(eng)
    reads.subtract(before)
    # A lookup filtering the tenant's decisions, budgets or approvals would read 20 x 3000 entries of one.
    assert max(reads.values()) < GROWN, reads
