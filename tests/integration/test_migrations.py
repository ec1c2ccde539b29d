"""The migrations build exactly the schema the models declare, on both engines."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Text, cast, create_engine, select
from sqlalchemy.exc import IntegrityError

import valdrix.app  # noqa: F401  (imports every model onto the metadata)
from tests.pg import create_database
from valdrix.auth import service as auth
from valdrix.budgets import service as budgets
from valdrix.budgets.models import CreditGrant, CreditReservation
from valdrix.canonical import canonical_json_of_text
from valdrix.clock import UuidFactory
from valdrix.config import Settings
from valdrix.db import Base, make_engine, make_sessionmaker
from valdrix.decisions import engine as decision_engine
from valdrix.decisions import service
from valdrix.decisions.models import Decision
from valdrix.migrate import alembic_config, upgrade


def _migrated(backend: str, pg_cluster: str, tmp_path: object, name: str) -> str:
    """Return the URL of a new database of `backend` migrated to the newest revision."""
    url = (create_database(pg_cluster, f"{name}_{uuid.uuid4().hex[:8]}") if backend == "postgresql"
           else f"sqlite:///{tmp_path}/{name}.db")
    upgrade(url)
    return url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrated_schema_matches_the_models(backend: str, pg_cluster: str, tmp_path: object) -> None:
    url = _migrated(backend, pg_cluster, tmp_path, "schema")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_settlement_is_checked_on_its_rounded_split_after_any_round_trip(backend: str, pg_cluster: str,
                                                                           tmp_path: object) -> None:
    url = _migrated(backend, pg_cluster, tmp_path, "settle")
    config = alembic_config(url)
    command.downgrade(config, "0005_idempotency_key_first")
    command.upgrade(config, "head")
    engine = make_engine(Settings(database_url=url))
    now = datetime(2026, 2, 20, 12, tzinfo=UTC)
    try:
        with make_sessionmaker(engine)() as session:
            tenant = auth.create_tenant(session, "t", now=now)
            budgets.put_budget(session, tenant.id, "p", Decimal(0), active=True, now=now)  # all of it on credit
            grant = budgets.create_grant(session, tenant.id, pool="reserved", scope_key="p", amount=Decimal("12.3456"),
                                         expires_at=None, reason=None, actor=None, now=now)
            ctx = service.GateContext(tenant_id=tenant.id, actor=None, now=now, ids=UuidFactory(),
                                      timeout_seconds=30, lock_timeout_seconds=5)
            inp = decision_engine.make_input(source="terraform", project_id="p", environment="nonprod",
                                             action="create", resource_reference="r",
                                             monthly_delta=Decimal("12.3456"), hourly_delta=Decimal(0))
            decision = service.decide(session, ctx, inp, None).decision
            assert decision.reserved_credit_usd == Decimal("12.3456")
            session.commit()
            reservation = session.scalars(select(CreditReservation)).one()
            # Over the reservation by one hundredth of a cent: refused on both engines.
            reservation.consumed_usd, reservation.released_usd = Decimal("2.2317"), Decimal("10.114")
            with pytest.raises(IntegrityError):
                session.flush()
            session.rollback()
            # Exactly the reservation, though 12.345600000000001 in SQLite's binary arithmetic: accepted.
            result = budgets.settle(session, decision, actual_monthly=Decimal("2.2316"), now=now)
            assert (result.credit_consumed, result.credit_released) == (Decimal("2.2316"), Decimal("10.1140"))
            session.commit()
            assert session.get_one(CreditGrant, grant.id).remaining_usd == Decimal("10.114")
    finally:
        engine.dispose()



@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_decisions_written_before_their_lineage_entries_get_them_on_upgrade(backend: str, pg_cluster: str,
                                                                            tmp_path: object) -> None:
    url = _migrated(backend, pg_cluster, tmp_path, "lineage")
    engine = make_engine(Settings(database_url=url))
    now = datetime(2026, 2, 20, 12, tzinfo=UTC)
    try:
        with make_sessionmaker(engine)() as session:
            tenant = auth.create_tenant(session, "t", now=now)
            budgets.put_budget(session, tenant.id, "p", Decimal(100), active=True, now=now)
            ctx = service.GateContext(tenant_id=tenant.id, actor=None, now=now, ids=UuidFactory(),
                                      timeout_seconds=30, lock_timeout_seconds=5)
            for project, delta in (("p", "12.3456"), ("q", "7")):
                inp = decision_engine.make_input(source="terraform", project_id=project, environment="nonprod",
                                                 action="create", resource_reference="r",
                                                 monthly_delta=Decimal(delta), hourly_delta=Decimal(0))
                service.decide(session, ctx, inp, None)
            session.commit()
        columns = select(Decision.id, Decision.context_lineage_group, Decision.computed_context_sha256)
        with engine.connect() as connection:
            written = set(connection.execute(columns).all())
        assert len(written) == 2 and len({group for _, group, _ in written}) == 2
        engine.dispose()
        config = alembic_config(url)
        command.downgrade(config, "0012_audit_events")
        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert set(connection.execute(columns).all()) == written
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_documents_keep_their_values_across_the_change_of_form_and_are_written_canonical_after(
        backend: str, pg_cluster: str, tmp_path: object) -> None:
    url = _migrated(backend, pg_cluster, tmp_path, "documents")
    engine = make_engine(Settings(database_url=url))
    now = datetime(2026, 2, 20, 12, tzinfo=UTC)
    names = ("request_payload", "response_payload", "computed_context")
    values = select(Decision.id, *(Decision.__table__.c[name] for name in names)).order_by(Decision.id)
    texts = select(*(cast(Decision.__table__.c[name], Text) for name in names)).order_by(Decision.id)
    metadata = ({"z": "é", "a": [2, 1]}, {"n": 1.5, "m": {"y": None, "x": True}})

    with make_sessionmaker(engine)() as session:
        tenant_id = auth.create_tenant(session, "t", now=now).id
        session.commit()

    def decide(runs: tuple[str, ...]) -> None:
        with make_sessionmaker(engine)() as session:
            ctx = service.GateContext(tenant_id=tenant_id, actor=None, now=now, ids=UuidFactory(),
                                      timeout_seconds=30, lock_timeout_seconds=5)
            for run, extra in zip(runs, metadata, strict=True):
                inp = decision_engine.make_input(source="terraform", project_id="p", environment="nonprod",
                                                 action="create", resource_reference=run, monthly_delta=Decimal(1),
                                                 hourly_delta=Decimal(0), metadata=extra)
                service.decide(session, ctx, inp, None)
            session.commit()

    try:
        decide(("a", "b"))
        with engine.connect() as connection:
            written = connection.execute(values).all()
        config = alembic_config(url)
        command.downgrade(config, "0013_context_lineage")
        with engine.connect() as connection:
            assert connection.execute(values).all() == written
        command.upgrade(config, "head")
        engine.dispose()
        decide(("c", "d"))
        with engine.connect() as connection:
            after = connection.execute(values).all()
            stored = connection.execute(texts).all()
        assert len(after) == len(stored) == 4 and all(row in after for row in written)
        # Written after the upgrade: their canonical JSON text, which an export copies.
        new = [text for row in stored if any(f'"resource_reference":"{r}"' in row[0] for r in "cd") for text in row]
        assert len(new) == 6 and all(canonical_json_of_text(text) == text for text in new), stored
    finally:
        engine.dispose()
