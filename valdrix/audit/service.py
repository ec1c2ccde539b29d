"""Audit exports: every table stream of a window read from ONE database snapshot, hashed while streamed.

Window: the decisions created in [start 00:00 UTC, end + 1 day 00:00 UTC). Each stream is selected by those
decisions — decisions.csv the rows themselves, approvals.csv their approval requests, ledger.csv their full
ledger history — so an archive is the complete record of the decisions it covers. Approval and ledger rows
are reached only through the tenant's decisions (they always carry their decision's tenant).

Snapshot: counts and rows come from one read-only transaction on a dedicated connection (PostgreSQL
REPEATABLE READ READ ONLY; SQLite a deferred BEGIN, which under WAL reads one snapshot from its first read
until it ends). The request's own transaction cannot serve: it already ran the authentication query, and a
REPEATABLE READ snapshot must be chosen before the first statement. Because the counts and the rows see the
same snapshot, concurrent gate writes can neither add nor hide rows between them, so parity cannot drift.

Streaming: the archive is produced as the rows are read — each batch is formatted (partly by the database,
see formats.py), hashed, deflated and handed to the response — and the manifest, over the digests and
lineages computed on the way and the database's counts taken after the rows (same snapshot), is written last,
then its signature and the ZIP's central directory. Before the first byte only the window's decisions are
counted, from the index on (tenant, created_at): that query fixes the snapshot and checks the row limit, so
the first bytes leave at once whatever the window. On SQLite a thread of this process reads the rows for
whoever formats them; on PostgreSQL that thread reads only the streams' keys, from a second connection to the
snapshot, and whoever formats a batch reads its rows by their keys from the same snapshot (`snapshots.share`),
a formatting process through its own connection. Memory holds a few batches; an interrupted download has no
manifest and no central directory, so it cannot verify. Parity is one pass over the same snapshot reading
only what the counts and lineages need.

Limits: a window longer than MAX_WINDOW_DAYS or more decisions than `max_rows` is refused with 422 before
anything is sent. Approval and ledger rows are counted as they stream: a stream passing `max_rows` (a window
whose decisions fit but whose ledger does not) ends the export with an error before its manifest, so the
client sees a failed download that cannot verify — an export is complete or absent, never truncated.

Also here: `record`, which appends to the audit trail (`audit_events`) of tenant actions that change no
decision, such as a policy simulation.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import takewhile
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row, func, select
from sqlalchemy.orm import Session

from valdrix.approvals.tokens import KeyRing
from valdrix.audit import manifest as manifests
from valdrix.audit.formats import DIALECT
from valdrix.audit.models import AuditEvent
from valdrix.audit.processes import ColumnBatch, FormattingPool, batch_formatter, read_batch, read_keyed
from valdrix.audit.snapshots import joined, share, snapshot
from valdrix.audit.streams import (
    APPROVALS,
    DECISIONS,
    IN_WINDOW,
    LEDGER,
    STREAMS,
    TableStream,
    formatter,
    lineage_of,
    lineage_query,
)
from valdrix.audit.zipstream import ZipStream
from valdrix.canonical import SCHEME, canonical_bytes, sha256_bytes, sha256_hex
from valdrix.decisions.models import Decision
from valdrix.errors import InvalidInput, Unavailable
from valdrix.policies.models import PolicyVersion

T = TypeVar("T")
MAX_WINDOW_DAYS = 366
DEFAULT_WINDOW_DAYS = 30
# Rows fetched (server-side cursor on PostgreSQL) and formatted per batch: the unit of memory an export holds
# (a few batches are in flight at once; 2000 made the RSS growth of a 1 000 000-decision archive 105 MiB).
BATCH_ROWS = 1000
# Batches fetched ahead of the one being formatted: two keep the database busy while this thread formats one.
READ_AHEAD = 2
# On PostgreSQL, batches' keys read ahead of the batch being formatted (about 37 kB each): enough for the next
# stream's keys to be read while this stream's last batches are formatted.
KEYS_AHEAD = 32
# The archive is handed to the response in pieces of about this size (deflated bytes).
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Window:
    """An export window of whole UTC days, both ends inclusive."""

    start: date
    end: date

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), UTC)

    @property
    def end_before(self) -> datetime:
        if self.end == date.max:  # the next day does not exist; the last instant of this one is as good
            return datetime.combine(self.end, time.max, UTC)
        return datetime.combine(self.end + timedelta(days=1), time(0), UTC)

    def as_json(self) -> dict[str, str]:
        """Return the manifest form of the window."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "created_at_from": self.start_at.isoformat(), "created_at_before": self.end_before.isoformat()}


def window(start: date | None, end: date | None, today: date) -> Window:
    """Return the window (default: the 30 days ending today); raise InvalidInput if reversed or too long."""
    end = end or today
    # Any calendar date is a valid bound: the default start saturates at the first date instead of overflowing.
    start = start or end - timedelta(days=min(DEFAULT_WINDOW_DAYS - 1, (end - date.min).days))
    if start > end:
        raise InvalidInput("start must be on or before end", code="invalid_export_window",
                           start=start.isoformat(), end=end.isoformat())
    days = (end - start).days + 1
    if days > MAX_WINDOW_DAYS:
        raise InvalidInput(f"export window of {days} days exceeds the limit of {MAX_WINDOW_DAYS} days",
                           code="export_window_too_large", days=days, max_days=MAX_WINDOW_DAYS)
    return Window(start, end)


def _require_ed25519(signer: KeyRing) -> None:
    if signer.algorithm != "EdDSA":
        raise Unavailable("audit exports are signed with Ed25519, not a shared secret: configure Ed25519 keys in "
                          "VALDRIX_SIGNING_KEYS_DIR", code="export_signing_unavailable")


def _params(tenant_id: uuid.UUID, win: Window) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "start_at": win.start_at, "end_before": win.end_before}


def _too_many(file: str, rows: int, max_rows: int) -> InvalidInput:
    return InvalidInput(f"{file} would hold {rows} rows, more than the export limit of {max_rows}; narrow the "
                        "window", code="export_too_many_rows", file=file, rows=rows, max_rows=max_rows)


def _decision_count(conn: Connection, params: dict[str, Any]) -> int:
    """Return the number of the window's decisions, read from the (tenant, created_at) index alone."""
    return int(conn.execute(select(func.count()).select_from(Decision).where(IN_WINDOW), params).scalar_one())


def _counts(conn: Connection, params: dict[str, Any], max_rows: int,
            chosen: Sequence[TableStream] = STREAMS) -> dict[str, int]:
    """Return each `chosen` stream's row count; raise InvalidInput (export_too_many_rows) past `max_rows`."""
    # The policy join of decisions.csv matches at most one version ((tenant, version) is unique), so the index
    # count of the window's decisions is that stream's count.
    database = {s.file: _decision_count(conn, params) if s is DECISIONS else int(conn.execute(s.count(), params)
                                                                                   .scalar_one()) for s in chosen}
    for file, rows in database.items():
        if rows > max_rows:
            raise _too_many(file, rows, max_rows)
    return database


def _sign(signer: KeyRing, data: bytes) -> bytes:
    _, signature = signer.sign_bytes(data)
    return signature


def archive(engine: Engine, tenant_id: uuid.UUID, win: Window, *, max_rows: int, signer: KeyRing,
            pool: FormattingPool) -> Iterator[bytes]:
    """Return the window's archive as an iterator of ZIP bytes, read from one snapshot as it is consumed.

    The snapshot is opened and the decisions counted now, so InvalidInput (export_too_many_rows for
    decisions.csv) and Unavailable (no Ed25519 key ring) are raised before any byte; an approval or ledger
    stream past `max_rows` raises InvalidInput from the iterator, before the manifest. The iterator closes the
    snapshot and its worker threads when it ends or is closed. Batches are formatted on `pool`.
    """
    _require_ed25519(signer)
    stack = ExitStack()
    try:
        conn = stack.enter_context(snapshot(engine))
        params = _params(tenant_id, win)
        decisions = _counts(conn, params, max_rows, (DECISIONS,))
    except BaseException:
        stack.close()
        raise
    return _archive_bytes(stack, conn, params, max_rows, decisions, tenant_id, win, signer, pool)


def _archive_bytes(stack: ExitStack, conn: Connection, params: dict[str, Any], max_rows: int,
                   decisions: dict[str, int], tenant_id: uuid.UUID, win: Window, signer: KeyRing,
                   pool: FormattingPool) -> Iterator[bytes]:
    with stack:
        # On PostgreSQL, the streams' keys are read on a second connection to the snapshot (closed after the
        # thread reading them has stopped).
        shared = share(conn)
        keys_conn = stack.enter_context(joined(shared, conn.engine)) if shared is not None else None
        # The stages overlap on the host's cores: a thread reads the next batch (the database driver releases
        # the GIL), formatting processes and this thread format batches, and another thread hashes and deflates
        # (hashlib and ISA-L release the GIL).
        fetcher = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-export-read"))
        worker = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-export"))
        zipped = ZipStream()
        lineage = manifests.Lineage()
        files = []
        dialect = conn.dialect.name
        if keys_conn is not None:
            # Batch by batch, read ahead: the next stream's keys are read while this one's last batches are
            # formatted.
            keys = _read_ahead(fetcher, _batch_keys(keys_conn, params), KEYS_AHEAD)
        for stream in STREAMS:
            zipped.start(stream.file)
            digest = _MemberDigest(stream.file, zipped, worker)
            formatted = formatter(stream.file, dialect)
            digest.write(formatted.encoder.header())
            digest.wait()
            yield zipped.take()
            if shared is None:
                results = pool.ordered(batch_formatter(stream.file, dialect), _columns(_read_ahead(
                    fetcher, conn.execute(formatted.query.select.execution_options(yield_per=BATCH_ROWS),
                                          params).partitions())))
            else:
                # Each batch is read from the shared snapshot by whoever formats it: the server process then
                # neither decodes nor sends the rows a formatting process formats.
                results = pool.ordered(functools.partial(read_batch, shared, stream.file), takewhile(bool, keys),
                                       functools.partial(read_keyed, conn, stream.file))
            rows = 0
            for data, part, count in results:
                rows += count
                if rows > max_rows:
                    raise _too_many(stream.file, rows, max_rows)
                if part is not None:
                    lineage.merge(part)
                digest.wait()
                chunk = zipped.take() if zipped.pending >= CHUNK_BYTES else b""
                digest.write(data)
                if chunk:
                    yield chunk
            files.append(digest.finish(rows))
        # The database's own counts of the other streams, after the rows and from their snapshot (the decisions
        # were counted before the first byte): the manifest's parity cross-check.
        database = {**decisions, **_counts(conn, params, max_rows, (APPROVALS, LEDGER))}
        policies = _policies(conn, tenant_id, lineage.referenced_policies())
        zipped.start("policies.json")
        digest = _MemberDigest("policies.json", zipped, worker)
        digest.write(canonical_bytes(policies))
        files.append(digest.finish(len(policies)))
        counts = {f.name.removesuffix(".csv"): {"database": database[f.name], "exported": f.rows}
                  for f in files if f.name in database}
        manifest = manifests.build(tenant_id=tenant_id, window=win.as_json(), files=files, counts=counts,
                                   lineage=lineage, kid=signer.active_kid, csv_dialect=DIALECT)
        data = manifests.encode(manifest)
        for name, content in (("manifest.json", data),
                              ("manifest.sig", base64.b64encode(_sign(signer, data)))):
            zipped.start(name)
            zipped.write(content)
            zipped.finish()
        zipped.close()
        yield zipped.take()


def _read_ahead(fetcher: ThreadPoolExecutor, batches: Iterator[T], ahead_count: int = READ_AHEAD) -> Iterator[T]:
    """Yield `batches`, up to `ahead_count` more fetched on `fetcher` (one thread, so in order) while the caller
    works: the database keeps producing rows (PostgreSQL only while a fetch is outstanding) while this thread
    formats a batch itself."""
    ahead = deque(fetcher.submit(next, batches, None) for _ in range(ahead_count))
    try:
        while (batch := ahead.popleft().result()) is not None:
            ahead.append(fetcher.submit(next, batches, None))
            yield batch
    finally:
        for future in ahead:
            future.cancel()


def _batch_keys(conn: Connection, params: dict[str, Any]) -> Iterator[str]:
    """Yield each stream's keys (`STREAMS` order) in batches of BATCH_ROWS, each batch's joined by commas, and an
    empty text after each stream's last batch."""
    for stream in STREAMS:
        for keys in conn.execute(stream.keys().execution_options(yield_per=BATCH_ROWS), params).scalars().partitions():
            yield ",".join(keys)
        yield ""


def _columns(batches: Iterable[Sequence[Row[Any]]]) -> Iterator[ColumnBatch]:
    """Yield each batch column by column, as plain tuples of the driver's values (what a process is sent)."""
    for batch in batches:
        yield ColumnBatch(zip(*batch, strict=True))


class _MemberDigest:
    """Hashes, sizes and deflates one member's bytes into the ZIP stream on the export's worker thread.

    One write is in flight at a time, so bytes enter the member in order; hashlib and zlib release the GIL on
    large buffers, so that work overlaps the formatting of the next batch on another core.
    """

    def __init__(self, name: str, zipped: ZipStream, worker: ThreadPoolExecutor) -> None:
        self.name = name
        self._zipped = zipped
        self._worker = worker
        self._pending: Future[None] | None = None
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        """Queue `data` behind the previous write."""
        self.wait()
        self._pending = self._worker.submit(self._write, data)

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._size += len(data)
        self._zipped.write(data)

    def wait(self) -> None:
        """Return when every queued write is in the ZIP stream (raising what a write raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self, rows: int) -> manifests.FileDigest:
        self.wait()
        self._zipped.finish()
        return manifests.FileDigest(self.name, self._digest.hexdigest(), self._size, rows)


def _policies(conn: Connection, tenant_id: uuid.UUID, cited: list[tuple[int, str]]) -> list[dict[str, Any]]:
    versions = sorted({version for version, _ in cited})
    rows = conn.execute(select(PolicyVersion.version, PolicyVersion.schema_version, PolicyVersion.sha256,
                               PolicyVersion.document)
                        .where(PolicyVersion.tenant_id == tenant_id, PolicyVersion.version.in_(versions))
                        .order_by(PolicyVersion.version)).all() if versions else []
    return [{"version": r.version, "schema_version": r.schema_version, "sha256": r.sha256, "document": r.document}
            for r in rows]


@dataclass(frozen=True)
class Parity:
    """The signed parity summary of a window: counts, both lineages, and the signature over the summary."""

    summary: dict[str, Any]
    signature: bytes

    @property
    def summary_sha256(self) -> str:
        return sha256_bytes(canonical_bytes(self.summary))

    @property
    def signature_b64(self) -> str:
        return base64.b64encode(self.signature).decode("ascii")


def parity(engine: Engine, tenant_id: uuid.UUID, win: Window, *, max_rows: int, signer: KeyRing) -> Parity:
    """Return the window's counts (database and exported, one snapshot) and both lineages, signed.

    One pass: the decisions are read for their lineage entries only (written with each decision, see
    `decisions.lineage`), with the number of approval requests and ledger rows each has: the exported counts,
    found through the decisions read, against the database's counts of the archive's own stream queries. The
    lineages equal the archive manifest's, which computes them from the cells it writes: a context changed
    after its decision was written makes them differ.
    """
    _require_ed25519(signer)
    with snapshot(engine) as conn, ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-parity") as fetcher:
        params = _params(tenant_id, win)
        database = _counts(conn, params, max_rows)
        lineage = manifests.Lineage()
        dialect = conn.dialect.name
        # The counts above, from this snapshot, already refused a window past `max_rows`.
        batches = _read_ahead(fetcher, conn.execute(lineage_query(dialect).execution_options(
            yield_per=BATCH_ROWS), params).partitions())
        exported = {DECISIONS.file: 0, APPROVALS.file: 0, LEDGER.file: 0}
        for columns in _columns(batches):
            lineage.merge(lineage_of(dialect, columns))
            exported[DECISIONS.file] += len(columns[0])
            exported[APPROVALS.file] += sum(columns[-2])
            exported[LEDGER.file] += sum(columns[-1])
    policy_lineage, context_lineage = lineage.policy_lineage(), lineage.context_lineage()
    summary: dict[str, Any] = {"tenant_id": str(tenant_id), "window": win.as_json(), "canonicalization": SCHEME}
    for stream, noun in ((DECISIONS, "decision"), (APPROVALS, "approval"), (LEDGER, "ledger")):
        summary[f"{noun}_count_db"] = database[stream.file]
        summary[f"{noun}_count_exported"] = exported[stream.file]
    summary.update(policy_lineage=policy_lineage, policy_lineage_sha256=sha256_hex(policy_lineage),
                   computed_context_lineage=context_lineage,
                   computed_context_lineage_sha256=sha256_hex(context_lineage),
                   parity_ok=all(database[f] == exported[f] for f in database),
                   signature_algorithm=manifests.SIGNATURE_ALGORITHM, signature_kid=signer.active_kid)
    return Parity(summary, _sign(signer, canonical_bytes(summary)))


def record(session: Session, tenant_id: uuid.UUID, event: str, *, actor: uuid.UUID | None, now: datetime,
           details: dict[str, Any]) -> AuditEvent:
    """Append one audit-trail row for a tenant action that changes no decision, in the caller's transaction."""
    row = AuditEvent(id=uuid.uuid4(), tenant_id=tenant_id, event=event, actor=actor, details=details, recorded_at=now)
    session.add(row)
    return row
