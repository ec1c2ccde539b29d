"""Sending due deliveries: fan out new events, claim due deliveries under their lease, post each one outside any
transaction, record the outcome. Run by `valdrix worker` on every replica; the database decides who sends what."""

from __future__ import annotations

import logging
import random

import httpx
from sqlalchemy.orm import Session, sessionmaker

from valdrix.clock import Clock
from valdrix.config import Settings
from valdrix.db import transaction
from valdrix.notifications import engine, service, translate
from valdrix.notifications.metrics import DELIVERIES

log = logging.getLogger("valdrix.notifications")

# Claimed together under one lease, then sent one after another: the lease must outlast BATCH timeouts.
BATCH = 5


def backoff(settings: Settings) -> engine.Backoff:
    """Return the retry schedule the settings describe."""
    return engine.Backoff(settings.notification_backoff_seconds, settings.notification_backoff_cap_seconds,
                          settings.notification_max_attempts)


def request(claimed: service.Claimed, public_url: str) -> translate.Request:
    """Return the HTTP request for one claimed delivery."""
    if claimed.target_kind == "slack":
        return translate.slack(claimed.payload, public_url)
    return translate.webhook(str(claimed.event_id), claimed.created_at, claimed.payload, claimed.target_secret)


def attempt(client: httpx.Client, claimed: service.Claimed, public_url: str) -> tuple[str | None, int | None]:
    """Post one delivery; return (error or None, HTTP status or None). Any 2xx is success."""
    prepared = request(claimed, public_url)
    try:
        response = client.post(claimed.target_url, content=prepared.body, headers=prepared.headers)
    except httpx.HTTPError as exc:
        # The exception text can carry the URL, and a Slack URL is a credential: name the error kind only.
        return f"transport error: {type(exc).__name__}", None
    if 200 <= response.status_code < 300:
        return None, response.status_code
    return f"HTTP {response.status_code}", response.status_code


def run_once(factory: sessionmaker[Session], settings: Settings, clock: Clock, holder: str,
             client: httpx.Client) -> int:
    """Fan out new events and send every delivery due now; return how many attempts were made."""
    with transaction(factory) as session:
        service.dispatch(session, now=clock.now(), limit=500)
    made = 0
    while True:
        with transaction(factory) as session:
            batch = service.claim(session, holder, now=clock.now(),
                                  lease_seconds=settings.notification_lease_seconds, limit=BATCH)
        for claimed in batch:
            error, status_code = attempt(client, claimed, settings.public_url)
            with transaction(factory) as session:
                outcome = service.record(session, claimed, holder, now=clock.now(), error=error,
                                         status_code=status_code, backoff=backoff(settings), jitter=random.random())
            DELIVERIES.labels(claimed.target_kind, outcome).inc()
            if outcome != "delivered":
                log.warning("notification %s to a %s target: %s (%s)", claimed.event_id, claimed.target_kind,
                            error, outcome)
            made += 1
        if len(batch) < BATCH:
            return made


def client(settings: Settings) -> httpx.Client:
    """Return the HTTP client deliveries are sent with (no redirects: a target answers itself)."""
    # httpx logs every request's URL at INFO, and a Slack URL is a credential.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.Client(timeout=settings.notification_timeout_seconds, follow_redirects=False)
