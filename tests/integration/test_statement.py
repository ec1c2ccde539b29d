"""`db.Statement`: the gate's direct-to-driver statements behave like SQLAlchemy executions on both engines."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import settings_for
from valdrix.auth.models import Tenant
from valdrix.budgets import service as budgets
from valdrix.budgets.models import Budget
from valdrix.db import Statement, make_engine, make_sessionmaker, transaction
from valdrix.policies.models import PolicyVersion

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

INSERT_BUDGET = Statement(insert(Budget))
BUDGET = Statement(select(Budget.id, Budget.scope_key, Budget.monthly_limit_usd, Budget.reserved_usd, Budget.updated_at)
                   .where(Budget.tenant_id == bindparam("tenant_id"), Budget.scope_key == "default"))
SET_RESERVED = Statement(update(Budget).where(Budget.id == bindparam("budget_id"))
                         .values(reserved_usd=bindparam("held")))
INSERT_POLICY = Statement(insert(PolicyVersion))
POLICY_DOCUMENT = Statement(select(PolicyVersion.document).where(PolicyVersion.id == bindparam("id")))


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    engine = make_engine(settings_for(url))
    yield make_sessionmaker(engine)
    engine.dispose()


def _tenant(sessions: sessionmaker[Session]) -> uuid.UUID:
    with transaction(sessions) as session:
        tenant = Tenant(id=uuid.uuid4(), name=f"statement-{uuid.uuid4()}", created_at=NOW)
        session.add(tenant)
    return tenant.id


def _budget(tenant_id: uuid.UUID) -> dict[str, object]:
    return {"id": uuid.uuid4(), "tenant_id": tenant_id, "scope_key": "default", "monthly_limit_usd": Decimal("100.5"),
            "reserved_usd": Decimal("0"), "active": True, "updated_at": NOW}


def test_rows_round_trip_with_native_types(sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(sessions)
    row = _budget(tenant_id)
    with transaction(sessions) as session:
        assert INSERT_BUDGET.run(session, row) == []
        assert SET_RESERVED.run(session, {"budget_id": row["id"], "held": Decimal("12.3456")}) == []
        (read,) = BUDGET.run(session, {"tenant_id": tenant_id})
    # The same types SQLAlchemy would return: the literal "default" was bound from the compiled statement.
    assert (read.id, read.scope_key, read.monthly_limit_usd, read.reserved_usd, read.updated_at) == (
        row["id"], "default", Decimal("100.5"), Decimal("12.3456"), NOW)


def test_json_parameters_and_results(sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(sessions)
    document = {"schema_version": "x", "nested": {"list": [1, "two", None], "flag": True}}
    policy_id = uuid.uuid4()
    with transaction(sessions) as session:
        INSERT_POLICY.run(session, {"id": policy_id, "tenant_id": tenant_id, "version": 1, "schema_version": "x",
                                    "document": document, "sha256": "0" * 64, "created_by": None,
                                    "created_at": NOW})
        (read,) = POLICY_DOCUMENT.run(session, {"id": policy_id})
    assert read.document == document


def test_work_shares_the_session_transaction(sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(sessions)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        INSERT_BUDGET.run(session, _budget(tenant_id))
        raise RuntimeError("roll back")
    with transaction(sessions) as session:
        assert BUDGET.run(session, {"tenant_id": tenant_id}) == []


def test_driver_errors_are_sqlalchemy_errors(sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(sessions)
    row = _budget(tenant_id)
    with transaction(sessions) as session:
        INSERT_BUDGET.run(session, row)
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        INSERT_BUDGET.run(session, {**row, "id": uuid.uuid4()})  # same tenant and scope: unique violation
    with pytest.raises(DBAPIError), transaction(sessions) as session:
        SET_RESERVED.run(session, {"budget_id": row["id"], "held": Decimal("-1")})  # check constraint
    with transaction(sessions) as session:
        assert [r.reserved_usd for r in BUDGET.run(session, {"tenant_id": tenant_id})] == [Decimal("0")]


LAZY_DUMPERS_CHECK = """
import psycopg
from psycopg.adapt import PyFormat
from valdrix.config import Settings
from valdrix.db import LAZY_DUMPER_TYPES, make_engine

names = {cls.__module__ + "." + cls.__qualname__ for cls in LAZY_DUMPER_TYPES}
# psycopg's private map: the only place that shows whether a dumper is still registered by name.
def by_name():
    return sorted({key for fmt in PyFormat for key in psycopg.adapters._dumpers[fmt] if key in names})
before = by_name()
make_engine(Settings(database_url="postgresql+psycopg://valdrix@127.0.0.1:1/none"))
print(before, by_name())
assert before and not by_name(), (before, by_name())
"""


def test_lazy_psycopg_dumpers_are_resolved_before_request_threads() -> None:
    # psycopg swaps a by-name dumper for its class on first use in a map all connections share, and the swap
    # races (psycopg issue #1230): concurrent first UUIDs failed with "cannot adapt type 'UUID'" under load.
    # A fresh interpreter, since this test process resolved them long ago.
    subprocess.run([sys.executable, "-c", LAZY_DUMPERS_CHECK], check=True, cwd=Path(__file__).parents[2])


def test_tenant_reserved_total_reads_allocations_and_credit(sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(sessions)
    row = _budget(tenant_id)
    with transaction(sessions) as session:
        assert budgets.tenant_reserved_total(session, tenant_id) == Decimal("0")
        INSERT_BUDGET.run(session, {**row, "reserved_usd": Decimal("12.3456")})
        INSERT_BUDGET.run(session, {**row, "id": uuid.uuid4(), "scope_key": "p1", "reserved_usd": Decimal("0.5")})
        assert budgets.tenant_reserved_total(session, tenant_id) == Decimal("12.8456")


@pytest.fixture
def pg_sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings_for(pg_url, db_pool_size=1))  # one connection: every test reuses it
    yield make_sessionmaker(engine)
    engine.dispose()


def _prepared(session: Session) -> list[str]:
    return list(session.scalars(text("SELECT name FROM pg_prepared_statements ORDER BY name")))


def test_a_statement_is_prepared_once_per_connection_and_survives_rollbacks(
        pg_sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(pg_sessions)
    for _ in range(3):
        with transaction(pg_sessions) as session:
            BUDGET.run(session, {"tenant_id": tenant_id})
            prepared = _prepared(session)
    assert len([name for name in prepared if name.startswith("valdrix_")]) == 1
    # psycopg prepares a query of its own once it has run it 5 times, and would then deallocate every prepared
    # statement of the connection when a transaction rolls back.
    for _ in range(6):
        with transaction(pg_sessions) as session:
            session.scalars(select(Budget).where(Budget.tenant_id == tenant_id)).all()
    with pytest.raises(RuntimeError), transaction(pg_sessions) as session:
        BUDGET.run(session, {"tenant_id": tenant_id})
        raise RuntimeError("roll back")
    with transaction(pg_sessions) as session:
        assert BUDGET.run(session, {"tenant_id": tenant_id}) == []
        assert _prepared(session) == prepared


def test_a_deallocated_statement_fails_once_then_is_prepared_again(pg_sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(pg_sessions)
    with transaction(pg_sessions) as session:
        BUDGET.run(session, {"tenant_id": tenant_id})
        session.execute(text("DEALLOCATE ALL"))
    with pytest.raises(DBAPIError, match="does not exist"), transaction(pg_sessions) as session:
        BUDGET.run(session, {"tenant_id": tenant_id})
    with transaction(pg_sessions) as session:
        assert BUDGET.run(session, {"tenant_id": tenant_id}) == []


def test_a_percent_sign_in_the_sql_survives_the_placeholder_conversion(pg_sessions: sessionmaker[Session]) -> None:
    tenant_id = _tenant(pg_sessions)
    modulo = Statement(select((Budget.monthly_limit_usd % bindparam("by")).label("rest"))
                       .where(Budget.tenant_id == bindparam("tenant_id")))
    with transaction(pg_sessions) as session:
        INSERT_BUDGET.run(session, _budget(tenant_id))
        assert [r.rest for r in modulo.run(session, {"tenant_id": tenant_id, "by": 7})] == [Decimal("2.5")]


def test_a_connection_lost_mid_round_trip_fails_one_transaction_only(pg_sessions: sessionmaker[Session],
                                                                     pg_url: str) -> None:
    tenant_id = _tenant(pg_sessions)
    with transaction(pg_sessions) as session:
        pid = session.scalar(text("SELECT pg_backend_pid()"))
    killer = make_engine(settings_for(pg_url))
    with killer.begin() as connection:
        assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()
    with pytest.raises(DBAPIError), transaction(pg_sessions) as session:
        BUDGET.run(session, {"tenant_id": tenant_id})  # BEGIN and the statement, sent together
    with transaction(pg_sessions) as session:
        assert BUDGET.run(session, {"tenant_id": tenant_id}) == []
        assert session.scalar(text("SELECT pg_backend_pid()")) != pid


def test_a_statement_beginning_the_transaction_keeps_the_connections_isolation(pg_url: str) -> None:
    # psycopg would begin the transaction with these characteristics itself; the statement begins it instead.
    engine = make_engine(settings_for(pg_url))
    show = Statement(select(func.current_setting("transaction_isolation").label("isolation"),
                            func.current_setting("transaction_read_only").label("read_only")))
    with engine.connect() as connection:
        connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with Session(bind=connection) as session:
            assert show.run(session, {}) == [("repeatable read", "on")]
    with transaction(make_sessionmaker(engine)) as session:
        assert show.run(session, {}) == [("read committed", "off")]
    engine.dispose()
