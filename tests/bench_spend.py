"""Gate cost of reading spend: decide() latency on PostgreSQL, budget_basis reservations vs forecast.

Run: PYTHONPATH=$PWD .venv/bin/python -m tests.bench_spend [decisions-per-basis]
Seeds one tenant with 200 scopes x 45 days of cost records, then times decide() in-process (no HTTP).
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from tests.pg import create_database, postgres_cluster
from valdrix.auth import service as auth
from valdrix.budgets import service as budgets
from valdrix.clock import UuidFactory
from valdrix.config import Settings
from valdrix.costs import service as costs
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.decisions import engine, service
from valdrix.migrate import upgrade
from valdrix.policies import service as policies

NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)


def main(count: int) -> None:
    with postgres_cluster() as base:
        url = create_database(base, "bench")
        upgrade(url)
        eng = make_engine(Settings(database_url=url))
        factory = make_sessionmaker(eng)
        with transaction(factory) as s:
            tenant = auth.create_tenant(s, "bench", now=NOW)
            budgets.put_budget(s, tenant.id, "payments", Decimal(10**9), active=True, now=NOW)
            days = [costs.DailyCost(scope_key=f"scope-{i}" if i else "payments", cost_date=NOW.date() - timedelta(d),
                                    amount=Decimal("12.5"), period_key="bench")
                    for i in range(200) for d in range(1, 46)]
            costs.replace_periods(s, tenant.id, "focus", days, now=NOW)
        with transaction(factory) as s:
            s.execute(text("ANALYZE"))
            plan = s.execute(text(
                "EXPLAIN SELECT cost_date, sum(amount_usd) FROM cost_records WHERE tenant_id = :t AND "
                "scope_key = 'payments' AND cost_date >= '2026-01-18' AND cost_date <= '2026-02-20' "
                "GROUP BY cost_date"), {"t": tenant.id}).scalars().all()
        print("plan:", " | ".join(p.strip() for p in plan[:3]))
        for basis in ("reservations", "forecast"):
            with transaction(factory) as s:
                doc = policies.current(s, tenant.id).document.model_copy(update={"budget_basis": basis})
                policies.put(s, tenant.id, doc, actor=None, now=NOW)
            timings = []
            for _ in range(count):
                ctx = service.GateContext(tenant_id=tenant.id, actor=None, now=NOW, ids=UuidFactory(),
                                          timeout_seconds=5, lock_timeout_seconds=2)
                inp = engine.make_input(source="terraform", project_id="payments", environment="nonprod",
                                        action="create", resource_reference=uuid.uuid4().hex,
                                        monthly_delta=Decimal(1), hourly_delta=Decimal(0))
                started = time.perf_counter()
                with transaction(factory) as s:
                    decision = service.decide(s, ctx, inp, None).decision
                timings.append((time.perf_counter() - started) * 1000)
            assert decision.computed_context["budget_basis"] == basis
            timings.sort()
            print(f"{basis:12s} n={count} p50={statistics.median(timings):.2f} ms "
                  f"p95={timings[int(0.95 * len(timings)) - 1]:.2f} ms mean={statistics.fmean(timings):.2f} ms")
        eng.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
