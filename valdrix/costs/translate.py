"""FOCUS (FinOps Open Cost & Usage Specification 1.x) CSV exports into daily costs per scope.

Columns read: ChargePeriodStart (the day a charge belongs to), BilledCost or EffectiveCost (the amount),
BillingCurrency (must be USD), BillingPeriodStart (the billing period a re-import replaces; the charge's month
when absent) and the scope column: a plain column such as SubAccountName, or `Tags.<key>` for a key of the
`Tags` JSON object. Every row is validated before anything is returned, so a bad file imports nothing.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from valdrix.budgets.service import normalise_scope
from valdrix.costs.service import CURRENCY, DailyCost
from valdrix.money import ZERO, parse_amount

COST_COLUMNS = ("BilledCost", "EffectiveCost")
MAX_ERRORS = 50


@dataclass(frozen=True)
class RowError:
    line: int
    message: str


@dataclass(frozen=True)
class Translation:
    days: list[DailyCost]
    rows: int
    errors: list[RowError]


def _day(raw: str) -> date:
    value = raw.strip()
    if not value:
        raise ValueError("empty")
    # FOCUS datetimes are ISO 8601 in UTC ("2026-02-01T00:00:00Z"); a bare date is accepted too.
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).date()


def _scope(row: dict[str, str], scope_column: str) -> str:
    if scope_column.startswith("Tags."):
        raw = (row.get("Tags") or "").strip()
        if not raw:
            return ""
        tags = json.loads(raw)
        if not isinstance(tags, dict):
            raise ValueError("Tags is not a JSON object")
        return str(tags.get(scope_column.removeprefix("Tags."), "") or "")
    return row.get(scope_column) or ""


def translate(lines: Iterable[str], *, cost_column: str, scope_column: str, unscoped: str | None) -> Translation:
    """Return the file's daily totals per (billing period, scope, day), or every row error found (1-based lines).

    Rows without a scope value go to `unscoped` (an error when it is None).
    """
    if cost_column not in COST_COLUMNS:
        raise ValueError(f"cost column must be one of {COST_COLUMNS}")
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    needed = ["ChargePeriodStart", cost_column, "BillingCurrency"]
    needed.append("Tags" if scope_column.startswith("Tags.") else scope_column)
    missing = [c for c in needed if c not in header]
    if missing:
        return Translation(days=[], rows=0, errors=[RowError(1, f"missing column(s): {', '.join(missing)}")])
    totals: dict[tuple[str, str, date], Decimal] = defaultdict(lambda: ZERO)
    errors: list[RowError] = []
    rows = 0
    for row in reader:
        rows += 1
        line = reader.line_num
        try:
            if None in row:
                raise ValueError("more fields than the header")
            day = _day(row["ChargePeriodStart"])
            amount = parse_amount(row[cost_column])
            currency = (row["BillingCurrency"] or "").strip().upper()
            if currency != CURRENCY:
                raise ValueError(f"BillingCurrency {currency or '(empty)'!r} is not USD (no conversion is configured)")
            period_raw = (row.get("BillingPeriodStart") or "").strip()
            period = (_day(period_raw) if period_raw else day.replace(day=1)).isoformat()
            scope = _scope(row, scope_column).strip()
            if not scope:
                if unscoped is None:
                    raise ValueError(f"no value for scope column {scope_column}")
                scope = unscoped
            if len(scope) > 128:
                raise ValueError("scope value longer than 128 characters")
        except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
            errors.append(RowError(line, str(exc) or type(exc).__name__))
            if len(errors) >= MAX_ERRORS:
                break
            continue
        totals[(period, normalise_scope(scope), day)] += amount
    days = [DailyCost(scope_key=scope, cost_date=day, amount=amount, period_key=period)
            for (period, scope, day), amount in sorted(totals.items())]
    return Translation(days=days if not errors else [], rows=rows, errors=errors)
