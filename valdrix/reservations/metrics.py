"""Reconciliation metrics (runbook family `valdrix_ops_enforcement_*`)."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILIATIONS = Counter("valdrix_ops_enforcement_reservation_reconciliations_total",
                          "Reservations settled, by trigger (manual, manual_replay, auto) and status.",
                          ["trigger", "status"])
DRIFT = Counter("valdrix_ops_enforcement_reservation_drift_usd_total",
                "Absolute USD difference between actual and reserved cost at reconciliation.", ["direction"])
SWEEP_RUNS = Counter("valdrix_ops_enforcement_reconciliation_sweep_runs_total",
                     "Overdue-release sweep runs by outcome (success, failure).", ["status"])
