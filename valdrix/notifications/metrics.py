"""Notification metrics: deliveries counted by the worker as they happen, the queue's age read per scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from valdrix.clock import Clock
from valdrix.notifications import service

log = logging.getLogger("valdrix.notifications")

DELIVERIES = Counter("valdrix_ops_enforcement_notification_deliveries_total",
                     "Notification delivery attempts by target kind and outcome (delivered, retry, dead).",
                     ["target_kind", "outcome"])

QUEUE_AGE_NAME = "valdrix_ops_enforcement_notification_queue_age_seconds"
QUEUE_AGE_HELP = "Age of the oldest notification event not yet delivered (0 when none waits)."


class QueueAgeCollector(Collector):
    """Reads the age of the oldest waiting event at scrape time, so every replica reports the same."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(QUEUE_AGE_NAME, QUEUE_AGE_HELP)]

    def collect(self) -> Iterator[Metric]:
        try:
            with self._sessions() as session:
                oldest = service.oldest_pending(session)
        except SQLAlchemyError as exc:
            log.warning("notification queue age not collected: %s", type(exc).__name__)
            return
        age = 0.0 if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds())
        yield GaugeMetricFamily(QUEUE_AGE_NAME, QUEUE_AGE_HELP, value=age)
