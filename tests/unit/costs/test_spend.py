"""Spend arithmetic (pure) and FOCUS translation: totals, forecast, anomaly, validation with line numbers."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from valdrix.costs import engine, translate

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "focus" / "focus_1_0_sample.csv"
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)
D = Decimal


def feb(day: int) -> date:
    return date(2026, 2, day)


def test_month_to_date_trailing_burn_and_forecast() -> None:
    daily = {feb(d): D(100) for d in range(1, 20)}
    spend = engine.summarise("p", daily, feb(19), NOW, max_age_days=3)
    assert spend.status == "fresh" and spend.usable
    assert spend.month_to_date == D("1900.0000")
    assert spend.burn_rate_daily == D("100.0000")
    assert spend.forecast_eom == D("2800.0000")  # 1900 + 100 x 9 remaining days
    assert spend.anomaly_kind is None
    assert spend.committed == D("2800.0000")


def test_spike_and_new_spend_signals() -> None:
    daily = {feb(d): D(100) for d in range(1, 19)} | {feb(19): D(300)}
    spike = engine.summarise("p", daily, feb(19), NOW, max_age_days=3)
    assert (spike.anomaly_kind, spike.anomaly_delta, spike.anomaly_percent) == ("spike", D("200.0000"), D("200.00"))
    fresh = engine.summarise("p", {feb(19): D(150)}, feb(19), NOW, max_age_days=3)
    assert (fresh.anomaly_kind, fresh.anomaly_percent) == ("new_spend", None)


def test_no_data_stale_data_and_start_of_month() -> None:
    assert engine.summarise("p", {}, None, NOW, max_age_days=3).status == "none"
    assert engine.summarise("p", {feb(10): D(5)}, feb(10), NOW, max_age_days=3).status == "stale"
    # On March 2 with data through Feb 28 the month has no covered day: forecast = trailing burn x 31 days.
    march = datetime(2026, 3, 2, tzinfo=UTC)
    spend = engine.summarise("p", {feb(28) - timedelta(days=i): D(70) for i in range(7)}, feb(28), march,
                             max_age_days=3)
    assert (spend.month_to_date, spend.forecast_eom) == (D(0), D("2170.0000"))


def test_focus_sample_translates_to_daily_totals_per_scope() -> None:
    with SAMPLE.open(newline="") as handle:
        result = translate.translate(handle, cost_column="BilledCost", scope_column="Tags.project", unscoped="default")
    assert result.errors == [] and result.rows == 59
    by = {(d.scope_key, d.cost_date): d.amount for d in result.days}
    assert by[("payments", feb(1))] == D(40) and by[("payments", feb(10))] == D(38)
    assert by[("default", feb(1))] == D(3) and by[("search", feb(19))] == D("5.25")
    assert {d.period_key for d in result.days} == {"2026-02-01"}
    assert sum(d.amount for d in result.days if d.scope_key == "payments") == D(758)
    with SAMPLE.open(newline="") as handle:
        effective = translate.translate(handle, cost_column="EffectiveCost", scope_column="SubAccountName",
                                        unscoped=None)
    assert {d.scope_key for d in effective.days} == {"payments-prod", "search-prod"}
    # 37.5 x 19 days - 2 credit + 3 support
    assert sum(d.amount for d in effective.days if d.scope_key == "payments-prod") == D("713.5")


def test_bad_rows_are_all_reported_with_line_numbers_and_nothing_is_returned() -> None:
    text = SAMPLE.read_text().splitlines(keepends=True)
    bad = [text[0], text[1], text[2].replace(",USD,", ",EUR,"), text[3].replace("5.2500", "five"),
           text[4].replace("2026-02-03T00:00:00Z,2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z,yesterday")]
    result = translate.translate(io.StringIO("".join(bad)), cost_column="BilledCost", scope_column="Tags.project",
                                 unscoped="default")
    assert [e.line for e in result.errors] == [3, 4, 5]
    assert "EUR" in result.errors[0].message
    assert result.days == []
    missing = translate.translate(io.StringIO("BilledCost,BillingCurrency\n1,USD\n"), cost_column="BilledCost",
                                  scope_column="Tags.project", unscoped="default")
    assert missing.errors[0].line == 1 and "ChargePeriodStart" in missing.errors[0].message
