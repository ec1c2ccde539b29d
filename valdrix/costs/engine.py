"""Pure spend arithmetic: daily totals of one scope in, month-to-date, burn, forecast and anomaly out."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from valdrix.money import ZERO, monthly

# How many days before the latest cost date the burn rate and the anomaly baseline average over.
TRAILING_DAYS = 7
# A day is an anomaly when it exceeds the trailing average by both this much and this share.
ANOMALY_MIN_DELTA_USD = Decimal("100")
ANOMALY_MIN_PERCENT = Decimal("30")
# Rows older than this before the month start are never needed (trailing window of the month's first day).
LOOKBACK_DAYS = 2 * TRAILING_DAYS

DataStatus = Literal["fresh", "stale", "none", "unavailable"]


@dataclass(frozen=True)
class Spend:
    """Actual spend of one scope as seen by the gate at `now`."""

    scope_key: str
    status: DataStatus
    data_through: date | None
    month_to_date: Decimal
    burn_rate_daily: Decimal
    forecast_eom: Decimal
    anomaly_delta: Decimal
    anomaly_percent: Decimal | None
    anomaly_kind: str | None
    unreflected_reserved: Decimal = ZERO

    @property
    def usable(self) -> bool:
        """Return whether the figures can be trusted for a decision (fresh data was read)."""
        return self.status == "fresh"

    @property
    def committed(self) -> Decimal:
        """Return what the month is expected to cost: max(month-to-date, forecast) + unreflected reservations."""
        return monthly(max(self.month_to_date, self.forecast_eom) + self.unreflected_reserved)

    def as_json(self) -> dict[str, Any]:
        """Return the figures as the `spend` block of the computed context."""
        return {
            "scope_key": self.scope_key, "data_status": self.status,
            "data_through": self.data_through.isoformat() if self.data_through else None,
            "mtd_spend_usd": str(self.month_to_date), "burn_rate_daily_usd": str(self.burn_rate_daily),
            "forecast_eom_usd": str(self.forecast_eom), "unreflected_reserved_usd": str(self.unreflected_reserved),
            "committed_usd": str(self.committed),
            "anomaly_signal": self.anomaly_kind is not None, "anomaly_kind": self.anomaly_kind,
            "anomaly_delta_usd": str(self.anomaly_delta),
            "anomaly_percent": None if self.anomaly_percent is None else str(self.anomaly_percent),
        }


def window_start(now: datetime) -> date:
    """Return the first cost date a summary at `now` needs (the trailing window before the month start)."""
    return now.date().replace(day=1) - timedelta(days=LOOKBACK_DAYS)


def unavailable(scope_key: str, status: DataStatus) -> Spend:
    """Return an all-zero summary for a scope whose data could not be read or is missing."""
    return Spend(scope_key=scope_key, status=status, data_through=None, month_to_date=ZERO, burn_rate_daily=ZERO,
                 forecast_eom=ZERO, anomaly_delta=ZERO, anomaly_percent=None, anomaly_kind=None)


def summarise(scope_key: str, daily: Mapping[date, Decimal], data_through: date | None, now: datetime, *,
              max_age_days: int) -> Spend:
    """Return the spend summary of one scope from its daily totals and the tenant's latest cost date.

    `data_through` is the newest date the tenant has any cost for: cost exports are complete up to it, so a
    scope without a row on a covered day spent nothing that day. Data is stale when `data_through` is more
    than `max_age_days` before today.
    """
    if data_through is None:
        return unavailable(scope_key, "none")
    today = now.date()
    through = min(data_through, today)
    month_start = today.replace(day=1)
    month_end = month_start.replace(day=calendar.monthrange(today.year, today.month)[1])
    mtd = sum((v for d, v in daily.items() if month_start <= d <= through), ZERO)
    trailing = [daily.get(through - timedelta(days=i), ZERO) for i in range(TRAILING_DAYS)]
    burn = sum(trailing, ZERO) / TRAILING_DAYS
    # The month's remaining days are those after the covered ones (all of them if none is covered yet).
    remaining = (month_end - max(through, month_start - timedelta(days=1))).days
    forecast = mtd + burn * remaining
    latest = daily.get(through, ZERO)
    baseline = sum((daily.get(through - timedelta(days=i), ZERO) for i in range(1, TRAILING_DAYS + 1)), ZERO)
    baseline /= TRAILING_DAYS
    delta = latest - baseline
    percent = None if baseline <= 0 else (delta / baseline * 100).quantize(Decimal("0.01"))
    kind = None
    if baseline <= 0 and latest >= ANOMALY_MIN_DELTA_USD:
        kind = "new_spend"
    elif percent is not None and delta >= ANOMALY_MIN_DELTA_USD and percent >= ANOMALY_MIN_PERCENT:
        kind = "spike"
    status: DataStatus = "fresh" if (today - data_through).days <= max_age_days else "stale"
    return Spend(scope_key=scope_key, status=status, data_through=data_through, month_to_date=monthly(mtd),
                 burn_rate_daily=monthly(burn), forecast_eom=monthly(forecast), anomaly_delta=monthly(delta),
                 anomaly_percent=percent, anomaly_kind=kind)
