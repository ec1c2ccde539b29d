"""Budget gauges per scope, read from the database at scrape time, with a bounded number of series.

At most `VALDRIX_METRICS_BUDGET_SCOPES` active scopes (default 50) are exported, the most utilised first;
`valdrix_ops_enforcement_budget_scopes_omitted` counts the active scopes left out, so a dashboard can say
that the table is partial. Every exported scope yields one series per gauge, labelled `tenant` (the tenant's
name) and `scope` (the budget's scope key):

- `valdrix_ops_enforcement_budget_limit_usd`: the monthly limit;
- `valdrix_ops_enforcement_budget_reserved_usd`: active reservations held against it;
- `valdrix_ops_enforcement_budget_spend_mtd_usd`: actual spend imported for the current UTC month;
- `valdrix_ops_enforcement_budget_utilisation_ratio`: reserved / limit, what the gate compares under the
  default `reservations` budget basis (absent for a zero limit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from valdrix.auth.models import Tenant
from valdrix.budgets.models import Budget
from valdrix.clock import Clock
from valdrix.costs.models import CostRecord

log = logging.getLogger("valdrix.budgets")

PREFIX = "valdrix_ops_enforcement_budget_"
LABELS = ["tenant", "scope"]
GAUGES = {
    "limit_usd": "Monthly budget limit per scope.",
    "reserved_usd": "Active reservations held against the budget per scope.",
    "spend_mtd_usd": "Actual spend imported for the current UTC month per scope.",
    "utilisation_ratio": "Reserved / limit per scope (the gate's default reservations basis).",
}
OMITTED = PREFIX + "scopes_omitted"


def _rank(limit: Decimal, reserved: Decimal) -> Decimal:
    if limit > 0:
        return reserved / limit
    return Decimal("Infinity") if reserved > 0 else Decimal(0)


class BudgetCollector(Collector):
    """Reports the most utilised active budgets (at most `max_scopes`) at scrape time."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, max_scopes: int) -> None:
        self._sessions = sessions
        self._clock = clock
        self._max = max_scopes

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {name: GaugeMetricFamily(PREFIX + name, text, labels=LABELS) for name, text in GAUGES.items()}

    def describe(self) -> list[Metric]:
        return [*self._families().values(), GaugeMetricFamily(OMITTED, "Active budget scopes not exported.")]

    def collect(self) -> Iterator[Metric]:
        today = self._clock.now().date()
        try:
            with self._sessions() as session:
                budgets = session.execute(
                    select(Budget.tenant_id, Tenant.name, Budget.scope_key, Budget.monthly_limit_usd,
                           Budget.reserved_usd)
                    .join(Tenant, Tenant.id == Budget.tenant_id).where(Budget.active.is_(True))).all()
                ranked = sorted(budgets, key=lambda b: (-_rank(Decimal(b[3]), Decimal(b[4])), b[1], b[2]))
                shown = ranked[: self._max]
                spend: dict[tuple[object, str], Decimal] = {}
                if shown:
                    rows = session.execute(
                        select(CostRecord.tenant_id, CostRecord.scope_key, func.sum(CostRecord.amount_usd))
                        .where(CostRecord.tenant_id.in_({b[0] for b in shown}),
                               CostRecord.cost_date >= today.replace(day=1), CostRecord.cost_date <= today)
                        .group_by(CostRecord.tenant_id, CostRecord.scope_key)).all()
                    spend = {(tenant, scope): Decimal(total or 0) for tenant, scope, total in rows}
        except SQLAlchemyError as exc:
            # A scrape during a database outage reports no budget samples rather than wrong zeros.
            log.warning("budget gauges not collected: %s", type(exc).__name__)
            return
        families = self._families()
        for tenant_id, tenant, scope, limit, reserved in shown:
            labels = [tenant, scope]
            limit, reserved = Decimal(limit), Decimal(reserved)
            families["limit_usd"].add_metric(labels, float(limit))
            families["reserved_usd"].add_metric(labels, float(reserved))
            families["spend_mtd_usd"].add_metric(labels, float(spend.get((tenant_id, scope), Decimal(0))))
            if limit > 0:
                families["utilisation_ratio"].add_metric(labels, float(reserved / limit))
        yield from families.values()
        omitted = GaugeMetricFamily(OMITTED, "Active budget scopes not exported.")
        omitted.add_metric([], len(budgets) - len(shown))
        yield omitted
