"""Engine, declarative base and the per-request transaction boundary."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import psycopg
from psycopg.adapt import PyFormat
from psycopg.rows import namedtuple_row, tuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    Insert,
    MetaData,
    Numeric,
    Select,
    String,
    Update,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator, Uuid

from valdrix import jsonio
from valdrix.config import Settings
from valdrix.errors import ValdrixError

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
Money = Numeric(18, 4)
HourlyMoney = Numeric(18, 6)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:

            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        uuid.UUID: Uuid(),
        datetime: UTCDateTime(),
        Decimal: Money,
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        str: String(),
    }


def make_engine(settings: Settings) -> Engine:
    """Return an engine for the configured URL; SQLite runs in WAL with immediate write transactions."""
    if settings.is_sqlite:
        engine = create_engine(settings.database_url, connect_args={"check_same_thread": False,
                                                                    "isolation_level": None},
                               pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size)
        busy = settings.sqlite_busy_timeout_ms
        # SQLite has one writer. Threads of this process queue for it on a fair lock instead of SQLite's busy
        # handler, which sleeps in growing steps and turns contention into second-long tails. Other processes
        # (CLI, extra workers) still meet the busy timeout at BEGIN IMMEDIATE.
        writer = threading.Lock()

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Immediate transactions take the write lock up front, so concurrent gate evaluations
            # serialise on it instead of failing with SQLITE_BUSY at commit time. A read snapshot (audit
            # export) takes no write lock: under WAL a deferred transaction reads one snapshot throughout.
            read_only = conn.get_execution_options().get("valdrix_read_snapshot", False)
            if read_only:
                conn.exec_driver_sql("BEGIN")
                return
            if not writer.acquire(timeout=busy / 1000):
                raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                writer.release()
                raise
            conn.info["valdrix_writer"] = True

        def _finish(conn: Any, end: str) -> None:
            # These events fire before SQLAlchemy ends the transaction; end it here so the next writer never
            # finds the file still locked (SQLAlchemy's own COMMIT/ROLLBACK then has nothing left to do).
            if conn.info.pop("valdrix_writer", False):
                try:
                    getattr(conn.connection.dbapi_connection, end)()
                finally:
                    writer.release()

        event.listen(engine, "commit", lambda conn: _finish(conn, "commit"))
        event.listen(engine, "rollback", lambda conn: _finish(conn, "rollback"))

        return engine
    _resolve_lazy_dumpers()
    return create_engine(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                         pool_recycle=1800)


# Types psycopg registers by class name; the gate binds all of them.
LAZY_DUMPER_TYPES = (uuid.UUID, Decimal, datetime, date, time, timedelta)


def _resolve_lazy_dumpers() -> None:
    # psycopg registers these dumpers by name and swaps the class in on first use, in a map every connection
    # shares; the swap is not thread-safe (psycopg issue #1230): request threads dumping their first UUID at
    # the same moment fail with "cannot adapt type 'UUID'". Resolved here, before any request thread runs.
    for cls in LAZY_DUMPER_TYPES:
        for fmt in PyFormat:
            psycopg.adapters.get_dumper(cls, fmt)


class Statement:
    """A Core statement for the gate's hot path: on PostgreSQL compiled once and run straight on psycopg.

    A gate decision runs a handful of small statements, and SQLAlchemy's per-execution machinery (execution
    context, parameter and result processing) costs more CPU than psycopg sending them. On PostgreSQL the
    statement is compiled once and executed on the session's own psycopg connection, inside the same
    transaction; psycopg adapts every parameter natively except JSON, wrapped here. Driver errors are raised
    as the same SQLAlchemy exceptions a normal execution raises. Other dialects execute it through SQLAlchemy.

    Statements are prepared on the server, so PostgreSQL may keep one generic plan for each, made while the
    tables were nearly empty. Each is therefore written so that its narrow index is its only plausible plan
    (`tests/integration/test_query_plans.py`): parsing and planning them on every execution took a third of
    the database's CPU per decision.
    """

    def __init__(self, statement: Select[Any] | Insert | Update) -> None:
        self.statement = statement
        self._compiled: tuple[str, dict[str, Any], frozenset[str]] | None = None
        # The statement's row class (None for DML without RETURNING), taken from its first execution: psycopg
        # would otherwise describe the result's columns anew for every execution.
        self._make_row: Callable[[Sequence[Any]], Any] | None = None
        self._described = False

    def _compile(self, dialect: Dialect) -> tuple[str, dict[str, Any], frozenset[str]]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            json_names = frozenset(name for bind, name in compiled.bind_names.items()
                                   if isinstance(bind.type.dialect_impl(dialect), JSON))
            self._compiled = (str(compiled), dict(compiled.params), json_names)
        return self._compiled

    def run(self, session: Session, params: dict[str, Any]) -> list[Any]:
        """Return the rows (attribute access by column label; empty for DML) of one execution in `session`."""
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            result = connection.execute(self.statement, params)
            return list(result) if result.returns_rows else []
        sql, defaults, json_names = self._compile(connection.dialect)
        values = {**defaults, **params}
        for name in json_names:
            values[name] = Jsonb(values[name], dumps=jsonio.dumps)
        driver = connection.connection.driver_connection
        assert driver is not None
        try:
            with driver.cursor(row_factory=tuple_row) as cursor:
                cursor.execute(sql, values, prepare=True)
                if not self._described:
                    self._make_row = namedtuple_row(cursor) if cursor.description is not None else None
                    self._described = True
                make_row = self._make_row
                return [make_row(row) for row in cursor.fetchall()] if make_row is not None else []
        except psycopg.Error as exc:
            raise DBAPIError.instance(sql, values, exc, psycopg.Error) from exc


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory used for every request."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session whose work commits on normal exit and rolls back on any exception.

    A ValdrixError raised with `commit=True` (a refusal whose state change must persist, such as an
    approval found expired while being reviewed) commits before it propagates.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except ValdrixError as exc:
        if exc.commit:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
