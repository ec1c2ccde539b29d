"""Approval metrics: token events counted as they happen, the review backlog read from the database per scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from valdrix.approvals.models import ApprovalRequest
from valdrix.clock import Clock

log = logging.getLogger("valdrix.approvals")

TOKEN_EVENTS = Counter("valdrix_ops_enforcement_approval_token_events_total",
                       "Approval token events: issued, picked_up, consumed, and each refusal by its code.", ["event"])

BACKLOG_NAME = "valdrix_ops_enforcement_approval_queue_backlog"
BACKLOG_HELP = "Pending, unexpired approval requests across all tenants, by required permission."
AGE_NAME = "valdrix_ops_enforcement_approval_oldest_pending_age_seconds"
AGE_HELP = "Age of the oldest pending, unexpired approval request, by required permission (0 when none)."


class QueueBacklogCollector(Collector):
    """Counts pending, unexpired approvals and the oldest one's age in the database at scrape time, so every
    replica reports the same."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Describing without samples keeps registration from running the query.
        return [GaugeMetricFamily(BACKLOG_NAME, BACKLOG_HELP, labels=["required_permission"]),
                GaugeMetricFamily(AGE_NAME, AGE_HELP, labels=["required_permission"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(BACKLOG_NAME, BACKLOG_HELP, labels=["required_permission"])
        age = GaugeMetricFamily(AGE_NAME, AGE_HELP, labels=["required_permission"])
        counts = {"approve:prod": 0, "approve:nonprod": 0}
        ages = dict.fromkeys(counts, 0.0)
        now = self._clock.now()
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(ApprovalRequest.required_permission, func.count(), func.min(ApprovalRequest.created_at))
                    .where(ApprovalRequest.status == "pending", ApprovalRequest.expires_at > now)
                    .group_by(ApprovalRequest.required_permission)).all()
        except SQLAlchemyError as exc:
            # A scrape during a database outage reports no backlog sample rather than a wrong zero.
            log.warning("approval backlog not collected: %s", type(exc).__name__)
            return
        for permission, count, oldest in rows:
            counts[permission] = int(count)
            if oldest is not None:
                # SQLite returns naive datetimes; every stored time is UTC.
                ages[permission] = max(0.0, (now - oldest.replace(tzinfo=now.tzinfo)).total_seconds())
        for permission, count in sorted(counts.items()):
            family.add_metric([permission], count)
            age.add_metric([permission], ages[permission])
        yield family
        yield age
