"""Export metrics (runbook family `valdrix_ops_enforcement_*`)."""

from __future__ import annotations

from prometheus_client import Counter

EXPORT_EVENTS = Counter("valdrix_ops_enforcement_export_events_total",
                        "Audit export requests by artifact (parity|archive) and outcome "
                        "(success|rejected_limit|error).", ["artifact", "outcome"])
