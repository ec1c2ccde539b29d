"""Imports every table module so the metadata is complete (for migrations and the test suite)."""

from __future__ import annotations

import importlib

TABLE_MODULES = (
    "valdrix.auth.models",
    "valdrix.policies.models",
    "valdrix.budgets.models",
    "valdrix.decisions.models",
    "valdrix.ledger.models",
    "valdrix.approvals.models",
    "valdrix.costs.models",
    "valdrix.reservations.models",
    "valdrix.jobs.models",
    "valdrix.notifications.models",
    "valdrix.console.models",
    "valdrix.integrations.models",
    "valdrix.audit.models",
)


def load_all() -> None:
    """Import every module that declares tables."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
