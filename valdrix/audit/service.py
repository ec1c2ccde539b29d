"""Audit exports: every table stream of a window read from ONE database snapshot, hashed while written.

Window: the decisions created in [start 00:00 UTC, end + 1 day 00:00 UTC). Each stream is selected by those
decisions — decisions.csv the rows themselves, approvals.csv their approval requests, ledger.csv their full
ledger history — so an archive is the complete record of the decisions it covers. Approval and ledger rows
are reached only through the tenant's decisions (they always carry their decision's tenant).

Snapshot: counts and rows come from one read-only transaction on a dedicated connection (PostgreSQL
REPEATABLE READ READ ONLY; SQLite a deferred BEGIN, which under WAL reads one snapshot from its first read
until it ends). The request's own transaction cannot serve: it already ran the authentication query, and a
REPEATABLE READ snapshot must be chosen before the first statement. Because the counts and the rows see the
same snapshot, concurrent gate writes can neither add nor hide rows between them, so parity cannot drift.

Limits: a window longer than MAX_WINDOW_DAYS or a stream with more rows than `max_rows` is refused with 422
before anything is written — an export is complete or absent, never truncated.

Also here: `record`, which appends to the audit trail (`audit_events`) of tenant actions that change no
decision, such as a policy simulation.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Any

from sqlalchemy import Connection, Engine, Select, and_, bindparam, func, select
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import Uuid

from valdrix.approvals.models import ApprovalRequest
from valdrix.approvals.tokens import KeyRing
from valdrix.audit import manifest as manifests
from valdrix.audit.formats import DIALECT, Column, CsvEncoder, Kind
from valdrix.audit.models import AuditEvent
from valdrix.canonical import canonical_json, sha256_bytes
from valdrix.decisions.models import Decision
from valdrix.errors import InvalidInput, Unavailable
from valdrix.ledger.models import LedgerEntry
from valdrix.policies.models import PolicyVersion

MAX_WINDOW_DAYS = 366
DEFAULT_WINDOW_DAYS = 30
# Rows fetched (server-side cursor) and encoded per batch: the unit of memory an export holds at once.
BATCH_ROWS = 500
# The archive is assembled in memory up to this size, then on disk, so a large window keeps memory bounded.
SPOOL_BYTES = 8 * 1024 * 1024
# Fixed member timestamp and attributes make the ZIP bytes themselves deterministic.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


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
        return datetime.combine(self.end + timedelta(days=1), time(0), UTC)

    def as_json(self) -> dict[str, str]:
        """Return the manifest form of the window."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "created_at_from": self.start_at.isoformat(), "created_at_before": self.end_before.isoformat()}


def window(start: date | None, end: date | None, today: date) -> Window:
    """Return the window (default: the 30 days ending today); raise InvalidInput if reversed or too long."""
    end = end or today
    start = start or end - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    if start > end:
        raise InvalidInput("start must be on or before end", code="invalid_export_window",
                           start=start.isoformat(), end=end.isoformat())
    days = (end - start).days + 1
    if days > MAX_WINDOW_DAYS:
        raise InvalidInput(f"export window of {days} days exceeds the limit of {MAX_WINDOW_DAYS} days",
                           code="export_window_too_large", days=days, max_days=MAX_WINDOW_DAYS)
    return Window(start, end)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """Yield a connection inside one read-only transaction that sees a single consistent database snapshot."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(valdrix_read_snapshot=True)
        with conn.begin():
            yield conn


@dataclass(frozen=True)
class TableStream:
    """One table exported as one CSV member: its columns and its rows of a window, in a fixed order."""

    file: str
    columns: tuple[Column, ...]
    query: Select[Any]

    def count(self) -> Select[Any]:
        """Return the query counting this stream's rows (same filter, same snapshot)."""
        return select(func.count()).select_from(self.query.order_by(None).subquery())


def _stream(file: str, fields: list[tuple[str, QueryableAttribute[Any], Kind]],
            build: Callable[[Select[Any]], Select[Any]]) -> TableStream:
    columns = tuple(Column(header, kind) for header, _, kind in fields)
    return TableStream(file, columns, build(select(*(expr.label(header) for header, expr, _ in fields))))


_TENANT: BindParameter[uuid.UUID] = bindparam("tenant_id", type_=Uuid())
_IN_WINDOW = and_(Decision.tenant_id == _TENANT, Decision.created_at >= bindparam("start_at"),
                  Decision.created_at < bindparam("end_before"))

DECISIONS = _stream("decisions.csv", [
    ("decision_id", Decision.id, "uuid"),
    ("created_at", Decision.created_at, "datetime"),
    ("updated_at", Decision.updated_at, "datetime"),
    ("source", Decision.source, "text"),
    ("environment", Decision.environment, "text"),
    ("project_id", Decision.project_id, "text"),
    ("action", Decision.action, "text"),
    ("resource_reference", Decision.resource_reference, "text"),
    ("decision", Decision.decision, "text"),
    ("reason_codes", Decision.reason_codes, "json"),
    ("mode", Decision.mode, "text"),
    ("fail_safe", Decision.fail_safe, "bool"),
    ("dry_run", Decision.dry_run, "bool"),
    ("policy_version", Decision.policy_version, "int"),
    ("policy_schema_version", PolicyVersion.schema_version, "text"),
    ("policy_sha256", Decision.policy_sha256, "text"),
    ("request_fingerprint", Decision.request_fingerprint, "text"),
    ("idempotency_key", Decision.idempotency_key, "text"),
    ("estimated_monthly_delta_usd", Decision.estimated_monthly_delta_usd, "decimal"),
    ("estimated_hourly_delta_usd", Decision.estimated_hourly_delta_usd, "decimal"),
    ("budget_scope", Decision.budget_scope, "text"),
    ("reserved_allocation_usd", Decision.reserved_allocation_usd, "decimal"),
    ("reserved_credit_usd", Decision.reserved_credit_usd, "decimal"),
    ("reservation_active", Decision.reservation_active, "bool"),
    ("approval_request_id", Decision.approval_request_id, "uuid"),
    ("created_by", Decision.created_by, "uuid"),
    ("computed_context", Decision.computed_context, "json"),
    ("request_payload", Decision.request_payload, "json"),
    ("response_payload", Decision.response_payload, "json"),
], lambda q: q.outerjoin(PolicyVersion, and_(PolicyVersion.tenant_id == Decision.tenant_id,
                                             PolicyVersion.version == Decision.policy_version))
    .where(_IN_WINDOW).order_by(Decision.created_at, Decision.id))

LEDGER = _stream("ledger.csv", [
    ("seq", LedgerEntry.seq, "int"),
    ("ledger_id", LedgerEntry.id, "uuid"),
    ("decision_id", LedgerEntry.decision_id, "uuid"),
    ("event", LedgerEntry.event, "text"),
    ("recorded_at", LedgerEntry.recorded_at, "datetime"),
    ("source", LedgerEntry.source, "text"),
    ("environment", LedgerEntry.environment, "text"),
    ("project_id", LedgerEntry.project_id, "text"),
    ("decision", LedgerEntry.decision, "text"),
    ("reason_codes", LedgerEntry.reason_codes, "json"),
    ("policy_version", LedgerEntry.policy_version, "int"),
    ("policy_sha256", LedgerEntry.policy_sha256, "text"),
    ("request_fingerprint", LedgerEntry.request_fingerprint, "text"),
    ("estimated_monthly_delta_usd", LedgerEntry.estimated_monthly_delta_usd, "decimal"),
    ("estimated_hourly_delta_usd", LedgerEntry.estimated_hourly_delta_usd, "decimal"),
    ("reserved_total_usd", LedgerEntry.reserved_total_usd, "decimal"),
    ("reservation_active", LedgerEntry.reservation_active, "bool"),
    ("approval_request_id", LedgerEntry.approval_request_id, "uuid"),
    ("request_payload_sha256", LedgerEntry.request_payload_sha256, "text"),
    ("response_payload_sha256", LedgerEntry.response_payload_sha256, "text"),
    ("details", LedgerEntry.details, "json"),
    ("actor", LedgerEntry.actor, "uuid"),
], lambda q: q.join(Decision, Decision.id == LedgerEntry.decision_id)
    .where(_IN_WINDOW).order_by(LedgerEntry.seq))

APPROVALS = _stream("approvals.csv", [
    ("approval_id", ApprovalRequest.id, "uuid"),
    ("decision_id", ApprovalRequest.decision_id, "uuid"),
    ("status", ApprovalRequest.status, "text"),
    ("requested_by", ApprovalRequest.requested_by, "uuid"),
    ("reviewed_by", ApprovalRequest.reviewed_by, "uuid"),
    ("review_notes", ApprovalRequest.review_notes, "text"),
    ("routing_rule_id", ApprovalRequest.routing_rule_id, "text"),
    ("required_permission", ApprovalRequest.required_permission, "text"),
    ("routing", ApprovalRequest.routing, "json"),
    ("expires_at", ApprovalRequest.expires_at, "datetime"),
    ("approved_at", ApprovalRequest.approved_at, "datetime"),
    ("denied_at", ApprovalRequest.denied_at, "datetime"),
    ("expired_at", ApprovalRequest.expired_at, "datetime"),
    # The token's jti and lifecycle are audit facts; its hash and sealed form are credentials and stay out.
    ("token_jti", ApprovalRequest.token_jti, "text"),
    ("token_expires_at", ApprovalRequest.token_expires_at, "datetime"),
    ("token_picked_up_at", ApprovalRequest.token_picked_up_at, "datetime"),
    ("token_consumed_at", ApprovalRequest.token_consumed_at, "datetime"),
    ("token_consumed_by", ApprovalRequest.token_consumed_by, "uuid"),
    ("created_at", ApprovalRequest.created_at, "datetime"),
    ("updated_at", ApprovalRequest.updated_at, "datetime"),
], lambda q: q.join(Decision, Decision.id == ApprovalRequest.decision_id)
    .where(_IN_WINDOW).order_by(ApprovalRequest.created_at, ApprovalRequest.id))

# Archive member order; approvals are one more stream keyed by the window's decisions.
STREAMS: tuple[TableStream, ...] = (DECISIONS, APPROVALS, LEDGER)


@dataclass(frozen=True)
class Export:
    """A built export: the manifest, its signed bytes and the detached signature."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes

    @property
    def manifest_sha256(self) -> str:
        return sha256_bytes(self.manifest_bytes)

    @property
    def signature_b64(self) -> str:
        return base64.b64encode(self.signature).decode("ascii")


class _Member:
    """One archive member being written: hashed and sized as it goes, stored only when there is an archive."""

    def __init__(self, archive: zipfile.ZipFile | None, name: str) -> None:
        self.name = name
        self._digest = hashlib.sha256()
        self.size = 0
        self._out: IO[bytes] | None = None
        if archive is not None:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            self._out = archive.open(info, "w", force_zip64=True)

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self.size += len(data)
        if self._out is not None:
            self._out.write(data)

    def close(self, rows: int) -> manifests.FileDigest:
        if self._out is not None:
            self._out.close()
        return manifests.FileDigest(self.name, self._digest.hexdigest(), self.size, rows)


def export(conn: Connection, tenant_id: uuid.UUID, win: Window, *, max_rows: int, signer: KeyRing,
           archive: zipfile.ZipFile | None) -> Export:
    """Write every stream of the window (into `archive` when given) and return the signed manifest.

    Raise InvalidInput (export_too_many_rows) before writing when a stream exceeds `max_rows`, and
    Unavailable when the key ring is not Ed25519 (an HS256 deployment has no publishable key).
    """
    if signer.algorithm != "EdDSA":
        raise Unavailable("audit exports are signed with Ed25519, not a shared secret: configure Ed25519 keys in "
                          "VALDRIX_SIGNING_KEYS_DIR", code="export_signing_unavailable")
    params = {"tenant_id": tenant_id, "start_at": win.start_at, "end_before": win.end_before}
    database = {s.file: int(conn.execute(s.count(), params).scalar_one()) for s in STREAMS}
    for file, rows in database.items():
        if rows > max_rows:
            raise InvalidInput(f"{file} would hold {rows} rows, more than the export limit of {max_rows}; "
                               "narrow the window", code="export_too_many_rows", file=file, rows=rows,
                               max_rows=max_rows)
    lineage = manifests.Lineage()
    files = [_write_stream(conn, stream, params, archive, lineage if stream is DECISIONS else None)
             for stream in STREAMS]
    files.append(_write_policies(conn, tenant_id, lineage.referenced_policies(), archive))
    counts = {f.name.removesuffix(".csv"): {"database": database[f.name], "exported": f.rows}
              for f in files if f.name in database}
    manifest = manifests.build(tenant_id=tenant_id, window=win.as_json(), files=files, counts=counts,
                               lineage=lineage, kid=signer.active_kid, csv_dialect=DIALECT)
    data = manifests.encode(manifest)
    _, signature = signer.sign_bytes(data)
    result = Export(manifest, data, signature)
    if archive is not None:
        for name, content in (("manifest.json", data), ("manifest.sig", result.signature_b64.encode("ascii"))):
            member = _Member(archive, name)
            member.write(content)
            member.close(1)
    return result


def _write_stream(conn: Connection, stream: TableStream, params: dict[str, Any], archive: zipfile.ZipFile | None,
                  lineage: manifests.Lineage | None) -> manifests.FileDigest:
    encoder = CsvEncoder(stream.columns)
    member = _Member(archive, stream.file)
    member.write(encoder.header())
    rows = 0
    result = conn.execute(stream.query.execution_options(yield_per=BATCH_ROWS), params)
    for batch in result.partitions():
        member.write(encoder.rows(batch))
        rows += len(batch)
        if lineage is not None:
            for row in batch:
                values = row._mapping
                lineage.add(values["decision_id"], values["policy_version"], values["policy_schema_version"] or "",
                            values["policy_sha256"], values["computed_context"])
    return member.close(rows)


def _write_policies(conn: Connection, tenant_id: uuid.UUID, cited: list[tuple[int, str]],
                    archive: zipfile.ZipFile | None) -> manifests.FileDigest:
    versions = sorted({version for version, _ in cited})
    rows = conn.execute(select(PolicyVersion.version, PolicyVersion.schema_version, PolicyVersion.sha256,
                               PolicyVersion.document)
                        .where(PolicyVersion.tenant_id == tenant_id, PolicyVersion.version.in_(versions))
                        .order_by(PolicyVersion.version)).all() if versions else []
    document = [{"version": r.version, "schema_version": r.schema_version, "sha256": r.sha256,
                 "document": r.document} for r in rows]
    member = _Member(archive, "policies.json")
    member.write(canonical_json(document).encode("ascii"))
    return member.close(len(document))


def archive(engine: Engine, tenant_id: uuid.UUID, win: Window, *, max_rows: int,
            signer: KeyRing) -> tuple[Export, IO[bytes]]:
    """Return the export and its ZIP, spooled to disk beyond SPOOL_BYTES and rewound; the caller closes it."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned to caller
    try:
        with snapshot(engine) as conn, zipfile.ZipFile(spool, "w") as zipped:
            result = export(conn, tenant_id, win, max_rows=max_rows, signer=signer, archive=zipped)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return result, spool


def parity(engine: Engine, tenant_id: uuid.UUID, win: Window, *, max_rows: int, signer: KeyRing) -> Export:
    """Return the export of the window computed without storing it (the same manifest the archive carries)."""
    with snapshot(engine) as conn:
        return export(conn, tenant_id, win, max_rows=max_rows, signer=signer, archive=None)


def record(session: Session, tenant_id: uuid.UUID, event: str, *, actor: uuid.UUID | None, now: datetime,
           details: dict[str, Any]) -> AuditEvent:
    """Append one audit-trail row for a tenant action that changes no decision, in the caller's transaction."""
    row = AuditEvent(id=uuid.uuid4(), tenant_id=tenant_id, event=event, actor=actor, details=details, recorded_at=now)
    session.add(row)
    return row
