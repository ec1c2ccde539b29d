"""Replicas starting together on an empty database: exactly one bootstraps the tenant, none fails to start."""

from __future__ import annotations

import threading

from tests.conftest import settings_for
from tests.pg import create_database
from valdrix.cli.server import bootstrap
from valdrix.config import Settings
from valdrix.migrate import upgrade

REPLICAS = 6


def start_together(settings: Settings) -> tuple[list[str | None], list[BaseException]]:
    """Return what `bootstrap` returned in each of REPLICAS threads released at once, and what they raised."""
    start = threading.Barrier(REPLICAS)
    keys: list[str | None] = []
    errors: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            keys.append(bootstrap(settings))
        except BaseException as exc:  # any failure to start is what this test catches
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return keys, errors


def test_concurrent_bootstrap_creates_one_tenant(pg_cluster: str) -> None:
    for round_ in range(6):
        url = create_database(pg_cluster, f"bootstrap_race_{round_}")
        upgrade(url)
        settings = settings_for(url)
        keys, errors = start_together(settings)
        assert errors == []
        assert len([k for k in keys if k]) == 1, keys
        assert bootstrap(settings) is None  # a later start finds the tenant
