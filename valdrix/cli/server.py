"""`valdrix serve` and `valdrix migrate`."""

from __future__ import annotations

import os
import shutil
import tempfile

import typer
import uvicorn
from rich.console import Console
from sqlalchemy.exc import IntegrityError

from valdrix import migrate as migrations
from valdrix.auth import service as auth
from valdrix.clock import SystemClock
from valdrix.config import get_settings
from valdrix.db import make_engine, make_sessionmaker, transaction

console = Console(stderr=True)


def migrate() -> None:
    """Migrate the configured database to the newest schema."""
    settings = get_settings()
    migrations.upgrade(settings.database_url)
    console.print(f"database migrated to {migrations.head_revision()}")


def serve(
    migrate_first: bool = typer.Option(True, "--migrate/--no-migrate", help="Migrate before serving."),
    workers: int | None = typer.Option(None, help="Worker processes (default VALDRIX_WORKERS)."),
) -> None:
    """Serve the API; on an empty database create the default tenant and print its owner key once."""
    settings = get_settings()
    if migrate_first:
        migrations.upgrade(settings.database_url)
    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            key = auth.bootstrap(session, settings.bootstrap_tenant, now=SystemClock().now())
    except IntegrityError:
        key = None  # another replica starting at the same moment bootstrapped the empty database
    engine.dispose()
    if key:
        console.print(f"[bold]Created tenant {settings.bootstrap_tenant!r}. Owner API key (shown once):[/bold]")
        print(key, flush=True)
    count = workers or settings.workers
    # Metrics from several worker processes are merged through files in one shared directory.
    metrics_dir = tempfile.mkdtemp(prefix="valdrix-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("valdrix.app:app_from_env", factory=True, host=settings.host, port=settings.port,
                    workers=count, log_level=settings.log_level, access_log=settings.access_log,
                    timeout_graceful_shutdown=10)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add the server commands to the top-level app."""
    app.command("serve")(serve)
    app.command("migrate")(migrate)
