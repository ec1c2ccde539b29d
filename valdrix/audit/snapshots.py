"""Read snapshots: one consistent view of the database for a whole export, shared with other processes on PostgreSQL.

`snapshot` opens the view on a connection of its own. On PostgreSQL, `share` names it (`pg_export_snapshot()`)
so that a formatting process can read rows of the very same view through its own connection (`joined`: a
`REPEATABLE READ READ ONLY` transaction that begins with `SET TRANSACTION SNAPSHOT`), as pg_dump's parallel
workers do; the name is valid while the sharing transaction lasts. SQLite has no such thing: there, only the
connection that opened the view reads from it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from valdrix.config import Settings
from valdrix.db import make_engine

# What pg_export_snapshot() returns (hexadecimal parts joined by hyphens): checked before it is spliced into
# SET TRANSACTION SNAPSHOT, which takes no bind parameter.
_SNAPSHOT_NAME = re.compile(r"[0-9A-F]+(?:-[0-9A-F]+)+")


@dataclass(frozen=True)
class Shared:
    """A PostgreSQL snapshot another process can read from: the database URL (with its password) and its name."""

    url: str
    name: str


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """Yield a connection inside one read-only transaction that sees a single consistent database snapshot."""
    with engine.connect() as conn:
        postgresql = conn.dialect.name == "postgresql"
        if postgresql:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(valdrix_read_snapshot=True)
        with conn.begin():
            if postgresql:
                _without_jit(conn)
            yield conn


def share(conn: Connection) -> Shared | None:
    """Return the name other processes can read `snapshot`'s view by, or None where there is none (SQLite)."""
    if conn.dialect.name != "postgresql":
        return None
    name = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
    return Shared(conn.engine.url.render_as_string(hide_password=False), name)


@contextmanager
def joined(shared: Shared, engine: Engine | None = None) -> Iterator[Connection]:
    """Yield a connection of `engine` (by default this process's own for `shared`'s database) reading `shared`'s
    view, in a transaction of its own."""
    if not _SNAPSHOT_NAME.fullmatch(shared.name):
        raise ValueError(f"not a snapshot name: {shared.name!r}")
    with (engine or _engine(shared.url)).connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{shared.name}'")
            _without_jit(conn)
            yield conn


@functools.cache
def _engine(url: str) -> Engine:
    # One connection per formatting process, kept between batches and exports.
    return make_engine(Settings(database_url=url, db_pool_size=1))


def _without_jit(conn: Connection) -> None:
    # A window's per-decision counts cost the planner past the JIT thresholds, and compiling them costs more than
    # it saves: parity's read of 100 000 decisions took 2.1-2.4 s with JIT, 1.45 s without. For this transaction
    # only.
    conn.exec_driver_sql("SET LOCAL jit = off")
