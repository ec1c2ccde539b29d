"""A database transaction for one CLI command, with domain errors printed instead of traced."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from valdrix.config import get_settings
from valdrix.db import make_engine, make_sessionmaker, transaction
from valdrix.errors import ValdrixError


@contextmanager
def db_session() -> Iterator[Session]:
    """Yield a committed-on-success session on the configured database; exit 1 on a domain error."""
    engine = make_engine(get_settings())
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    except ValdrixError as exc:
        Console(stderr=True).print(f"[red]error[/red] {exc.code}: {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
