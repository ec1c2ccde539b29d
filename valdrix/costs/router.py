"""POST /costs (daily actual cost per scope) and GET /costs/summary (what the gate sees for a scope)."""

from __future__ import annotations

from fastapi import APIRouter

from valdrix.budgets.service import normalise_scope
from valdrix.costs import service
from valdrix.costs.schemas import CostBatchIn
from valdrix.deps import DB, Admin, ClockDep, Member, SettingsDep, WritingRoute
from valdrix.jsonio import JSONResponse

router = APIRouter(prefix="/api/v1/enforcement", tags=["costs"], route_class=WritingRoute)


@router.post("/costs")
def put_costs(body: CostBatchIn, db: DB, caller: Admin, clock: ClockDep) -> JSONResponse:
    """Store daily costs; each replaces the stored row of the same (source, scope, day). 422 for non-USD."""
    for record in body.records:
        service.check_currency(record.currency)
    days = [service.DailyCost(scope_key=r.scope_key, cost_date=r.date, amount=r.amount_usd,
                              period_key=r.date.replace(day=1).isoformat()) for r in body.records]
    result = service.put_days(db, caller.tenant_id, body.source, days, now=clock.now())
    return JSONResponse({"batch_id": str(result.batch_id), "source": result.source, "rows": result.rows,
                         "replaced": result.replaced, "total_usd": str(result.total_usd)})


@router.get("/costs/summary")
def cost_summary(scope_key: str, db: DB, caller: Member, clock: ClockDep, settings: SettingsDep) -> JSONResponse:
    """Return a scope's month-to-date spend, burn rate, forecast and anomaly signal as the gate computes them."""
    spend = service.read_spend(db, caller.tenant_id, normalise_scope(scope_key), clock.now(),
                               max_age_days=settings.cost_data_max_age_days)
    return JSONResponse(spend.as_json())
