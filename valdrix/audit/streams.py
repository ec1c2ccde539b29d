"""What an audit export holds: each table stream's columns and query, and how a batch of its rows becomes
CSV bytes and lineage entries (`Formatter`), in the request's process or a formatting process (`processes`).

Every stream is selected by the window's decisions (see service.py) and read with the bind parameters
`tenant_id`, `start_at` and `end_before`.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Select, String, Text, and_, any_, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import Uuid

from valdrix.approvals.models import ApprovalRequest
from valdrix.audit.formats import (
    Column,
    CsvEncoder,
    Finish,
    Kind,
    field,
    pack,
    packs,
    reader,
    segment,
    sql_field,
    unpack,
)
from valdrix.audit.manifest import LineagePart
from valdrix.canonical import canonical_json_and_value_of_text, canonical_json_of_text
from valdrix.db import Statement
from valdrix.decisions.lineage import Group, context_group, group_of
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry
from valdrix.policies.models import PolicyVersion

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class TableStream:
    """One table exported as one CSV member: its columns and its rows of a window, in a fixed order.

    `joins` adds the tables its columns and filter need, `where` selects the window's rows, `order` orders them,
    and `key` is the table's primary key (a UUID or an integer), by which a batch of rows is read again
    (`RecordQuery.keyed`).
    """

    file: str
    fields: tuple[tuple[str, ColumnElement[Any], Kind], ...]
    joins: Callable[[Select[Any]], Select[Any]]
    where: ColumnElement[bool]
    order: tuple[ColumnElement[Any], ...]
    key: ColumnElement[Any]

    def build(self, query: Select[Any]) -> Select[Any]:
        """Return `query` over the window's rows of this stream, in order."""
        return self.joins(query).where(self.where).order_by(*self.order)

    def keys(self) -> Select[Any]:
        """Return the query reading the window's keys of this stream as texts, in order."""
        return self.build(select(cast(self.key, Text())))

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(header, kind) for header, _, kind in self.fields)

    def index(self, header: str) -> int:
        """Return the position of the column named `header`."""
        return [h for h, _, _ in self.fields].index(header)

    def records(self, dialect: str, extras: Sequence[ColumnElement[str | int]] = (),
                apart: Collection[int] = ()) -> RecordQuery:
        """Return the query reading this stream's records on `dialect` as pieces (see formats.py), then `extras`
        (texts and integers).

        Each run of fields the database forms is one piece, joined in SQL; every other field is a piece of its
        own, read as stored and finished in Python. On SQLite the pieces the database can carry exactly travel
        in one JSON array per row (`formats.packs`), except the fields at positions `apart` (large documents,
        whose escaping would cost more than their own cells).
        """
        pieces: list[ColumnElement[Any]] = []
        kinds: list[Kind | None] = []  # what each piece holds (None: kept out of the row's array)
        layout: list[tuple[int, ...]] = []
        finishers: list[Finish | None] = []
        run: list[ColumnElement[str]] = []
        for i, (_, expr, kind) in enumerate(self.fields):
            formed = sql_field(expr, kind, dialect)
            if formed is not None:
                if not run:
                    layout.append(())
                run.append(formed)
                layout[-1] = (*layout[-1], i)
                continue
            if run:
                pieces.append(segment(run))
                kinds.append("text")
                finishers.append(None)
                run = []
            stored, finish = reader(expr, kind, dialect)
            pieces.append(stored)
            kinds.append(None if i in apart else kind)
            layout.append((i,))
            finishers.append(finish)
        if run:
            pieces.append(segment(run))
            kinds.append("text")
            finishers.append(None)
        read = [*pieces, *extras]
        # The extras are texts and integers, which an array carries as it carries text.
        kinds.extend("text" for _ in extras)
        packed = tuple(p for p, kind in enumerate(kinds) if kind is not None and packs(kind, dialect))
        own = [column for p, column in enumerate(read) if p not in packed]
        columns = [pack([read[p] for p in packed]), *own] if packed else own
        labelled = select(*(c.label(f"c{i}") for i, c in enumerate(columns)))
        keyed = None
        if dialect == "postgresql":
            # A batch's keys as `keys` reads them, joined by commas: the same rows in the same order.
            keys = cast(func.string_to_array(bindparam("keys", type_=String()), ","), ARRAY(self.key.type))
            keyed = Statement(self.joins(labelled).where(self.key == any_(keys)).order_by(*self.order))
        return RecordQuery(self.build(labelled), keyed, finishers, tuple(layout), packed)

    def count(self) -> Select[Any]:
        """Return the query counting this stream's rows (same filter, same snapshot)."""
        header, expr, _ = self.fields[0]
        return select(func.count()).select_from(self.build(select(expr.label(header))).order_by(None).subquery())


@dataclass(frozen=True)
class RecordQuery:
    """A stream's records query on one dialect: the `finishers` of its pieces (None where SQL formed the piece)
    and the `layout`, each piece's column positions; the extras follow the pieces. The query reads the pieces
    and extras at positions `packed` as one JSON array per row, its first column, and the others
    as columns of their own after it, in order."""

    select: Select[Any]
    # On PostgreSQL, the same for the rows whose keys the bind parameter `keys` lists (`TableStream.keys`): a
    # Statement, prepared once per connection (read a thousand rows at a time, a window of 100 000 would be
    # planned a hundred times) and its rows loaded by psycopg, not built as SQLAlchemy rows.
    keyed: Statement | None
    finishers: list[Finish | None]
    layout: tuple[tuple[int, ...], ...]
    packed: tuple[int, ...]

    def pieces(self, read: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """Return a batch's pieces and extras, column by column, from its columns as this query reads them."""
        if not self.packed:
            return list(read)
        pieces: list[Sequence[Any]] = list(read[1:])
        for position, column in zip(self.packed, unpack(read[0]), strict=True):
            pieces.insert(position, column)
        return pieces


def _stream(file: str, fields: list[tuple[str, Any, Kind]], *, joins: Callable[[Select[Any]], Select[Any]],
            where: ColumnElement[bool], order: tuple[Any, ...], key: Any) -> TableStream:
    # ORM attributes (fields, order, key) are column expressions at run time; their static type is not.
    return TableStream(file, tuple(fields), joins, where, order, key)


_TENANT: BindParameter[uuid.UUID] = bindparam("tenant_id", type_=Uuid())
IN_WINDOW = and_(Decision.tenant_id == _TENANT, Decision.created_at >= bindparam("start_at"),
                  Decision.created_at < bindparam("end_before"))

# The window's ledger rows by sequence number. Selecting rows `seq IN (...)` lets the database walk the
# primary key in order instead of sorting whole joined rows: 0.9 s against 1.4 s per 100 000 on SQLite.
_LEDGER_KEYS = aliased(LedgerEntry)
_WINDOW_LEDGER = select(_LEDGER_KEYS.seq).join(Decision, Decision.id == _LEDGER_KEYS.decision_id).where(IN_WINDOW)

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
], joins=lambda q: q.outerjoin(PolicyVersion, and_(PolicyVersion.tenant_id == Decision.tenant_id,
                                                   PolicyVersion.version == Decision.policy_version)),
    where=IN_WINDOW, order=(Decision.created_at, Decision.id), key=Decision.id)

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
], joins=lambda q: q, where=LedgerEntry.seq.in_(_WINDOW_LEDGER), order=(LedgerEntry.seq,), key=LedgerEntry.seq)

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
], joins=lambda q: q.join(Decision, Decision.id == ApprovalRequest.decision_id), where=IN_WINDOW,
    order=(ApprovalRequest.created_at, ApprovalRequest.id), key=ApprovalRequest.id)

# Archive member order; approvals are one more stream keyed by the window's decisions.
STREAMS: tuple[TableStream, ...] = (DECISIONS, APPROVALS, LEDGER)
# The decisions.csv columns both lineages are built from besides the context, in Lineage.add's order.
_LINEAGE_COLUMNS = ("decision_id", "policy_version", "policy_schema_version", "policy_sha256")
# A decision's stored documents, the context first (see `_documents`).
_DOCUMENTS = tuple(DECISIONS.index(h) for h in ("computed_context", "request_payload", "response_payload"))


@functools.cache
def _lineage_extras(dialect: str) -> tuple[list[ColumnElement[Any]], Finish | None]:
    """Return the lineage columns as Lineage.add takes them, the decision id read as its cell once finished by
    the step returned (if any, see `_lineage_ids`), the others as stored."""
    decision_id, version, schema, sha = (DECISIONS.fields[DECISIONS.index(h)][1] for h in _LINEAGE_COLUMNS)
    cell, finish = reader(decision_id, "uuid", dialect)
    return [cell, version, func.coalesce(schema, ""), func.coalesce(sha, "")], finish


def _lineage_ids(dialect: str, ids: Sequence[Any]) -> Sequence[Any]:
    """Return the decision ids of a batch as read by `_lineage_extras`, as their cells."""
    finish = _lineage_extras(dialect)[1]
    return finish(ids) if finish else ids


class Formatter:
    """Turns batches of one stream's rows, given column by column as its `records` query on one dialect reads
    them, into CSV bytes and, for decisions.csv, the batch's lineage. Holds no per-batch state, so threads may
    share one."""

    def __init__(self, stream: TableStream, dialect: str) -> None:
        self.lineages = stream is DECISIONS
        self._dialect = dialect
        if self.lineages:
            extras = [*_lineage_extras(dialect)[0], func.coalesce(Decision.computed_context_sha256, "")]
            self.query = stream.records(dialect, extras, _DOCUMENTS)
        else:
            self.query = stream.records(dialect)
        finishers = list(self.query.finishers)
        self._documents = [self.query.layout.index((i,)) for i in _DOCUMENTS] if self.lineages else []
        for piece in self._documents:
            finishers[piece] = _as_stored  # finished row by row in `_documents`, with the lineage
        self.encoder = CsvEncoder(stream.columns, finishers)
        self._pieces = len(finishers)

    def __call__(self, columns: Sequence[Sequence[Any]]) -> tuple[bytes, LineagePart | None]:
        """Return the records of a batch and its lineage (None for a stream other than decisions.csv)."""
        fields = self.encoder.finish(self.query.pieces(columns))
        part = None
        if self.lineages:
            cells, part = _documents(self._dialect, fields[self._pieces:], [fields[i] for i in self._documents])
            for piece, finished in zip(self._documents, cells, strict=True):
                fields[piece] = finished
        return self.encoder.encode(fields[:self._pieces]), part


@functools.cache
def formatter(file: str, dialect: str) -> Formatter:
    """Return the (shared) Formatter of stream `file` on `dialect`."""
    return Formatter(next(s for s in STREAMS if s.file == file), dialect)


def _as_stored(values: Sequence[Any]) -> Sequence[Any]:
    return values


def lineage_query(dialect: str) -> Select[Any]:
    """Return the query of the window's decisions reading only their lineage entries as they were written
    (`decisions.lineage`), then each decision's number of approval requests and of ledger rows (parity)."""
    approvals = select(func.count()).where(ApprovalRequest.decision_id == Decision.id).scalar_subquery()
    ledger = select(func.count()).where(LedgerEntry.decision_id == Decision.id).scalar_subquery()
    return DECISIONS.build(select(*_lineage_extras(dialect)[0], Decision.context_lineage_group,
                                  Decision.computed_context_sha256, approvals, ledger))


def lineage_of(dialect: str, columns: Sequence[Sequence[Any]]) -> LineagePart:
    """Return the lineage of a batch of `lineage_query` rows given column by column."""
    ids, versions, schemas, shas, groups, digests = columns[:6]
    part = LineagePart()
    # A batch has a handful of groups: each stored text is parsed once.
    add, known = part.add_entry, dict[str, Group]()
    for decision_id, version, schema, sha, group, digest in zip(_lineage_ids(dialect, ids), versions, schemas, shas,
                                                                 groups, digests, strict=True):
        add(decision_id, version, schema, sha, known.get(group) or known.setdefault(group, group_of(group)), digest)
    return part


def _documents(dialect: str, extras: Sequence[Sequence[Any]], stored: Sequence[Sequence[Any]]) -> tuple[
        list[list[str]], LineagePart]:
    """Return the cells of a batch's stored documents (`_DOCUMENTS`, column by column) and the batch's lineage,
    given the lineage extras as read and then each decision's stored context digest.

    The gate stores a decision's documents as their canonical JSON text (`jsonio.dumps_stored`), and with them
    the SHA-256 of the context's canonical JSON (`lineage.seal`). A stored context that hashes to that digest
    is therefore its canonical text, and the row's documents are copied as they are stored: the hash is the one
    the lineage needs anyway. Any other row (written before documents were stored canonical, or by something
    other than Valdrix, or a context changed since) has each document canonicalised, and its lineage computed
    from the cells, as the verifier computes it.
    """
    ids, versions, schemas, shas, digests = extras[:5]
    contexts = stored[0]
    if None in contexts:
        raise ValueError("a decision has no computed_context")
    part = LineagePart()
    add, cells = part.add_entry, [list[str]() for _ in stored]
    appends = [cells_of.append for cells_of in cells]
    for decision_id, version, schema, sha, digest, *texts in zip(_lineage_ids(dialect, ids), versions, schemas,
                                                                 shas, digests, *stored, strict=True):
        context_sha256 = _sha256(texts[0].encode("utf-8")).hexdigest()
        if context_sha256 == digest:
            context = orjson.loads(texts[0])
        else:
            texts[0], context = canonical_json_and_value_of_text(texts[0])
            texts[1:] = ["" if text is None else canonical_json_of_text(text) for text in texts[1:]]
            context_sha256 = _sha256(texts[0].encode("utf-8")).hexdigest()
        add(decision_id, version, schema, sha, context_group(texts[0], context), context_sha256)
        for append, text in zip(appends, texts, strict=True):
            append("" if text is None else field(text))
    return cells, part
