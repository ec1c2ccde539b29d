"""`valdrix worker` (every periodic job, on a schedule) and `valdrix reconcile` (the overdue sweep alone)."""

from __future__ import annotations

import logging
import os
import socket

import typer
from rich.console import Console

from valdrix.config import get_settings
from valdrix.db import make_engine, make_sessionmaker

console = Console(stderr=True)


def worker() -> None:
    """Run the periodic jobs, send notifications and work run tasks until stopped; safe on many replicas.

    Stops on SIGTERM/SIGINT. Every replica may run it: database leases decide who does what.
    """
    # Imported on use: the jobs create Prometheus metrics, and `valdrix serve` must not create any before it
    # has pointed PROMETHEUS_MULTIPROC_DIR at its shared directory.
    from valdrix.jobs import runner

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    runner.loop(settings, runner.jobs(settings), queues=True)


def reconcile(once: bool = typer.Option(False, "--once", help="Run one sweep now and exit (Kubernetes CronJob).")
              ) -> None:
    """Release overdue reservations: once (exit 1 on failure), or on the worker schedule until stopped."""
    from valdrix.jobs import runner  # imported on use, see worker()

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    job = next(j for j in runner.jobs(settings) if j.name == runner.RELEASE_OVERDUE)
    if not once:
        runner.loop(settings, (job,))
        return
    engine = make_engine(settings)
    try:
        status = runner.run_job(make_sessionmaker(engine), settings, job,
                                f"once:{socket.gethostname()}:{os.getpid()}", respect_schedule=False)
    finally:
        engine.dispose()
    console.print(f"{runner.RELEASE_OVERDUE}: {status or 'skipped (another replica holds the lease)'}")
    if status == "failure":
        raise typer.Exit(1)

