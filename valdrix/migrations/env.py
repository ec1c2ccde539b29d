"""Alembic environment: migrations run on the engine Valdrix itself would use."""

from __future__ import annotations

from alembic import context

from valdrix.config import Settings
from valdrix.db import Base, make_engine
from valdrix.models import load_all

load_all()
url = context.config.get_main_option("sqlalchemy.url")
engine = make_engine(Settings(database_url=url or Settings().database_url))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
