"""Running Alembic migrations from code (the CLI, the server's startup and the test suite share it)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """Return an Alembic config pointing at the packaged migrations and `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Migrate the database at `database_url` to the newest revision."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str | None:
    """Return the newest revision id the code knows."""
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
