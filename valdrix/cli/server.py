"""`valdrix serve` and `valdrix migrate`."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile

import typer
from rich.console import Console
from sqlalchemy.exc import IntegrityError

from valdrix import migrate as migrations
from valdrix import serving
from valdrix.auth import service as auth
from valdrix.clock import SystemClock
from valdrix.config import Settings, get_settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.errors import Conflict
from valdrix.pricing.kubernetes import PriceBook, PricingError

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
    try:
        PriceBook.load(settings.k8s_price_book_file)
        serving.tls_settings(settings)
    except PricingError as exc:
        console.print(f"[red]VALDRIX_K8S_PRICE_BOOK_FILE is invalid, not starting:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, ssl.SSLError) as exc:
        console.print(f"[red]VALDRIX_TLS_CERT_FILE/KEY_FILE/CLIENT_CA_FILE do not load, not starting:[/red] {exc}")
        raise typer.Exit(2) from None
    if migrate_first:
        migrations.upgrade(settings.database_url)
    key = bootstrap(settings)
    if key:
        console.print(f"[bold]Created tenant {settings.bootstrap_tenant!r}. Owner API key (shown once):[/bold]")
        print(key, flush=True)
    count = workers or settings.workers
    # Metrics from several worker processes are merged through files in one shared directory.
    metrics_dir = tempfile.mkdtemp(prefix="valdrix-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Imported only now: metric families pick single- or multi-process storage when first imported.
    from valdrix.app import app_from_env

    try:
        serving.run(settings, count, app_from_env)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def bootstrap(settings: Settings) -> str | None:
    """Return the owner key of the tenant created on an empty database, or None when it was not empty."""
    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return auth.bootstrap(session, settings.bootstrap_tenant, now=SystemClock().now())
    except (IntegrityError, Conflict):
        # Another replica starting at the same moment bootstrapped the empty database: its insert collided
        # with ours (IntegrityError), or committed between our emptiness check and our insert (Conflict).
        return None
    finally:
        engine.dispose()

