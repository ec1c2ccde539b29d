"""Engine, declarative base and the per-request transaction boundary."""

from __future__ import annotations

import itertools
import re
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar

import psycopg
from psycopg import generators, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.json import Json, Jsonb
from sqlalchemy import (
    JSON,
    Connection,
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
from sqlalchemy.dialects.postgresql import JSON as PostgresJSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator, Uuid

from valdrix import jsonio
from valdrix.canonical import loads_stored
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
# A document stored as the exact text written (`jsonio.dumps_stored`: its canonical JSON), which an audit export
# copies as its cell: PostgreSQL's json, not jsonb, which reorders object members.
DocumentType = JSON().with_variant(PostgresJSON(), "postgresql")
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
                               pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                               # Documents are stored as their RFC 8785 text, which prints a float beyond 2**53 as
                               # an integer literal (-5.762416730791998e16 as -57624167307919980): read as the float.
                               json_serializer=jsonio.dumps_stored, json_deserializer=loads_stored)
        busy = settings.sqlite_busy_timeout_ms
        mmap_bytes = settings.sqlite_mmap_mb * 1024 * 1024

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Pages read in place from the OS cache rather than copied by a read() call each: an export or a
            # parity check reads the whole window (measured: a third of a window's read time was system time).
            cur.execute(f"PRAGMA mmap_size={mmap_bytes}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A read takes no lock: under WAL a deferred transaction reads one snapshot throughout, and
            # writers never wait for it. A write takes the database's one write lock up front (IMMEDIATE),
            # so it cannot fail at its first write because another connection wrote since its snapshot; it
            # waits for the lock at most `valdrix_lock_wait_ms` (a gate's remaining deadline), else the busy
            # timeout. In this process every write runs on one thread (`writes_executor`), so that wait is
            # only ever for another process (the CLI, the worker, other server workers).
            options = conn.get_execution_options()
            if options.get(READ_SNAPSHOT, False):
                conn.exec_driver_sql("BEGIN")
                return
            wait = int(options.get(LOCK_WAIT_MS, busy))
            conn.exec_driver_sql(f"PRAGMA busy_timeout={max(0, wait)}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    _resolve_lazy_dumpers()
    # psycopg prepares nothing by itself: once it has prepared statements of its own on a connection, it
    # deallocates every prepared statement there whenever it rolls a transaction back, `Statement`'s with them.
    return create_engine(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                         pool_recycle=1800, connect_args={"prepare_threshold": None},
                         # As on SQLite; jsonb too prints a stored float beyond 2**53 as an integer literal.
                         json_serializer=jsonio.dumps_stored, json_deserializer=loads_stored)


# Execution options: a transaction that only reads (on SQLite: a deferred BEGIN, no lock), and how long a
# write transaction may wait for SQLite's write lock.
READ_SNAPSHOT = "valdrix_read_snapshot"
LOCK_WAIT_MS = "valdrix_lock_wait_ms"


# Types psycopg registers by class name; the gate binds all of them.
LAZY_DUMPER_TYPES = (uuid.UUID, Decimal, datetime, date, time, timedelta)


def _resolve_lazy_dumpers() -> None:
    # psycopg registers these dumpers by name and swaps the class in on first use, in a map every connection
    # shares; the swap is not thread-safe (psycopg issue #1230): request threads dumping their first UUID at
    # the same moment fail with "cannot adapt type 'UUID'". Resolved here, before any request thread runs.
    for cls in LAZY_DUMPER_TYPES:
        for fmt in PyFormat:
            psycopg.adapters.get_dumper(cls, fmt)


# In each pooled PostgreSQL connection's `info`: the name under which it prepared each (Statement, parameter
# types). The dictionary follows the driver connection, and is dropped with it.
_PREPARED = "valdrix_prepared"
_PREPARED_NAMES = itertools.count()
_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s|%%")


@dataclass(frozen=True)
class _Query:
    """A statement compiled for PostgreSQL: SQL with numbered parameters, and how to bind them."""

    sql: bytes
    names: tuple[str, ...]  # the parameter bound to $1, $2, ...
    defaults: dict[str, Any]
    json: tuple[tuple[int, Callable[[Any], Any]], ...]  # positions of JSON parameters, and how each is bound
    formats: tuple[PyFormat, ...]


class Statement:
    """A Core statement for the gate's hot path: on PostgreSQL compiled once and run straight on libpq.

    A gate decision runs a handful of small statements, and SQLAlchemy's per-execution machinery (execution
    context, parameter and result processing) costs more CPU than sending them; so does psycopg's cursor
    (placeholder conversion, its prepared-statement bookkeeping), about 30 us a statement. On PostgreSQL the
    statement is compiled once to numbered placeholders, and each execution dumps its parameters with psycopg's
    adapters, sends them to a statement prepared on that connection, and loads the rows with psycopg's loaders,
    inside the session's transaction (begun here when the statement is its first). Driver errors are raised
    as the same SQLAlchemy exceptions a normal execution raises. Other dialects execute it through SQLAlchemy.

    Statements are prepared on the server, so PostgreSQL may keep one generic plan for each, made while the
    tables were nearly empty. Each is therefore written so that its narrow index is its only plausible plan
    (`tests/integration/test_query_plans.py`): parsing and planning them on every execution took a third of
    the database's CPU per decision.
    """

    def __init__(self, statement: Select[Any] | Insert | Update) -> None:
        self.statement = statement
        self._query: _Query | None = None
        # The statement's row class, made from its first result with columns.
        self._make_row: Callable[[Sequence[Any]], Any] | None = None

    def _compile(self, dialect: Dialect) -> _Query:
        compiled = self.statement.compile(dialect=dialect)
        unescaped = {escaped: name for name, escaped in (compiled.escaped_bind_names or {}).items()}
        numbers: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%"
            name = unescaped.get(match.group(1), match.group(1))
            return f"${numbers.setdefault(name, len(numbers) + 1)}"

        sql = _PLACEHOLDER.sub(number, str(compiled))
        json_names = {name: _json_binding(impl) for bind, name in compiled.bind_names.items()
                      if isinstance(impl := bind.type.dialect_impl(dialect), JSON)}
        names = tuple(numbers)
        self._query = _Query(sql=sql.encode(), names=names, defaults=dict(compiled.params),
                             json=tuple((i, json_names[name]) for i, name in enumerate(names) if name in json_names),
                             formats=(PyFormat.AUTO,) * len(names))
        return self._query

    def run(self, session: Session, params: dict[str, Any]) -> list[Any]:
        """Return the rows (attribute access by column label; empty for DML) of one execution in `session`."""
        return self.run_on(session.connection(), params)

    def run_on(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        """Return the rows of one execution on `connection`, in its transaction (see `run`)."""
        if connection.dialect.name != "postgresql":
            result = connection.execute(self.statement, params)
            return list(result) if result.returns_rows else []
        query = self._query or self._compile(connection.dialect)
        values = [params[name] if name in params else query.defaults[name] for name in query.names]
        for position, bind in query.json:
            values[position] = bind(values[position])
        pooled = connection.connection
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.Connection)
        prepared: dict[tuple[Statement, tuple[int, ...] | None], bytes] = pooled.info.setdefault(_PREPARED, {})
        pgconn = driver.pgconn
        try:
            # What the execution needs sent first (BEGIN, PREPARE) goes in the same round trip.
            sends: list[Callable[[], None]] = []
            if pgconn.transaction_status == pq.TransactionStatus.IDLE and not driver.autocommit:
                sends.append(partial(pgconn.send_query_params, _begin_command(driver), None))
            adapt = Transformer(driver)
            dumped = adapt.dump_sequence(values, query.formats)
            key = (self, adapt.types)
            name = known = prepared.get(key)
            if name is None:
                name = b"valdrix_%d" % next(_PREPARED_NAMES)
                sends.append(partial(pgconn.send_prepare, name, query.sql, param_types=adapt.types))
            sends.append(partial(pgconn.send_query_prepared, name, dumped, param_formats=adapt.formats))
            rows = _outcome(driver, sends)
            if known is None:
                prepared[key] = name
        except psycopg.Error as exc:
            if exc.sqlstate == "26000":  # a prepared statement was deallocated behind our back: prepare anew
                prepared.clear()
            raise DBAPIError.instance(query.sql.decode(), values, exc, psycopg.Error) from exc
        if rows.status != pq.ExecStatus.TUPLES_OK:
            return []
        make_row = self._make_row
        if make_row is None:
            columns = [(rows.fname(i) or b"").decode() for i in range(rows.nfields)]
            row: Any = namedtuple("Row", columns, rename=True)  # type: ignore[misc]  # columns known at run time
            make_row = self._make_row = row._make
        adapt.set_pgresult(rows)
        return adapt.load_rows(0, rows.ntuples, make_row)


def _json_binding(impl: JSON) -> Callable[[Any], Any]:
    """Return how a parameter of JSON type `impl` is bound: a json document as its stored text, a jsonb one as
    the fastest compact JSON (jsonb keeps no text)."""
    if isinstance(impl, JSONB):
        return partial(Jsonb, dumps=jsonio.dumps)
    return partial(Json, dumps=jsonio.dumps_stored)


def _begin_command(driver: psycopg.Connection[Any]) -> bytes:
    """Return the BEGIN psycopg itself would send for the connection's transaction characteristics."""
    words = ["BEGIN"]
    if driver.isolation_level is not None:
        words += ["ISOLATION LEVEL", psycopg.IsolationLevel(driver.isolation_level).name.replace("_", " ")]
    if driver.read_only is not None:
        words.append("READ ONLY" if driver.read_only else "READ WRITE")
    if driver.deferrable is not None:
        words.append("DEFERRABLE" if driver.deferrable else "NOT DEFERRABLE")
    return " ".join(words).encode()


def _outcome(driver: psycopg.Connection[Any], sends: list[Callable[[], None]]) -> pq.abc.PGresult:
    """Run the `sends` in one round trip; return the last one's result, or raise the first error as psycopg does.

    Several are pipelined: they run in order, and after a failure the rest are skipped.
    """
    pgconn = driver.pgconn
    if len(sends) == 1:
        sends[0]()
        results: list[pq.abc.PGresult] = driver.wait(generators.execute(pgconn))
    else:
        pgconn.enter_pipeline_mode()
        try:
            for send in sends:
                send()
            pgconn.pipeline_sync()
            driver.wait(generators.send(pgconn))
            results = []
            while not results or results[-1].status != pq.ExecStatus.PIPELINE_SYNC:
                results += driver.wait(generators.fetch_many(pgconn))
            results.pop()
        except BaseException:
            driver.close()  # mid-pipeline, the connection's state is unknown: the pool replaces it
            raise
        pgconn.exit_pipeline_mode()
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=driver.info.encoding)
    return results[-1]


def make_sessionmaker(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Return a session factory: for write transactions, or with `read_only` for transactions that only read."""
    bind = engine.execution_options(**{READ_SNAPSHOT: True}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: Callable[[], Session]) -> Iterator[Session]:
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
