"""Gate metrics (runbook family `valdrix_ops_enforcement_*`)."""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

GATE_DECISIONS = Counter("valdrix_ops_enforcement_gate_decisions_total", "Gate decisions returned.",
                         ["source", "decision", "path"])
GATE_DECISION_REASONS = Counter("valdrix_ops_enforcement_gate_decision_reasons_total",
                                "Reason codes attached to gate decisions.", ["source", "reason"])
GATE_LATENCY = Histogram("valdrix_ops_enforcement_gate_latency_seconds", "Gate evaluation wall time.",
                         ["source", "path"], buckets=LATENCY_BUCKETS)
GATE_FAILURES = Counter("valdrix_ops_enforcement_gate_failures_total",
                        "Gate evaluations that failed and were answered by the fail-safe path.",
                        ["source", "failure_type"])
LOCK_EVENTS = Counter("valdrix_ops_enforcement_gate_lock_events_total", "Gate lock outcomes.", ["source", "event"])
LOCK_WAIT = Histogram("valdrix_ops_enforcement_gate_lock_wait_seconds", "Time spent acquiring gate locks.",
                      ["source", "outcome"], buckets=LATENCY_BUCKETS)

_UNSAFE = re.compile(r"[^a-z0-9_.-]")


def observe_decision(source: str, decision: str, reasons: list[str], path: str, seconds: float) -> None:
    """Record one gate answer: its decision, reasons and latency."""
    GATE_DECISIONS.labels(source, decision, path).inc()
    for reason in reasons:
        GATE_DECISION_REASONS.labels(source, _UNSAFE.sub("_", reason.lower())[:64] or "unknown").inc()
    GATE_LATENCY.labels(source, path).observe(seconds)


FAILURE_TYPES = {"gate_timeout": "timeout", "gate_lock_timeout": "lock_timeout"}


def observe_fail_safe(source: str, decision: str, reasons: list[str], trigger: str, seconds: float) -> None:
    """Record one fail-safe answer (recorded or not): its failure, decision, reasons and latency, once each."""
    GATE_FAILURES.labels(source, FAILURE_TYPES.get(trigger, "evaluation_error")).inc()
    observe_decision(source, decision, reasons, "failsafe", seconds)
