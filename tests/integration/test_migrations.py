"""The migrations build exactly the schema the models declare, on both engines."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import valdrix.app  # noqa: F401  (imports every model onto the metadata)
from tests.pg import create_database
from valdrix.db import Base
from valdrix.migrate import upgrade


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrated_schema_matches_the_models(backend: str, pg_cluster: str, tmp_path: object) -> None:
    url = (create_database(pg_cluster, f"schema_{uuid.uuid4().hex[:8]}") if backend == "postgresql"
           else f"sqlite:///{tmp_path}/schema.db")
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
