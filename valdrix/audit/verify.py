"""Offline verification of an audit archive: needs only the ZIP and the server's public keys (a JWKS).

Nothing in the manifest is trusted that can be recomputed: every member is re-hashed and its rows counted,
both lineages are rebuilt from the rows of decisions.csv, every policy document in policies.json is re-hashed
and every decision's cited policy hash must match one of them, the signature over the exact manifest bytes is
checked with the JWKS key named by the manifest, and approval and ledger rows must belong to exported
decisions. Each discrepancy is reported naming the member, field, row or policy version concerned.

Each member is read once: its bytes are hashed and sized while the CSV reader parses them. The manifest names
its canonical-JSON scheme (`canonicalization`); a manifest without one predates RFC 8785 and is checked in the
legacy scheme, so archives made before the change still verify. Policy hashes are the ones stored when each
policy version was created, so a policy document may hash to its recorded sha256 under either scheme.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
import struct
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from isal import isal_zlib

from valdrix.audit.formats import unneutralise
from valdrix.audit.manifest import FILES, LINEAGE_FIELDS, SIGNATURE_ALGORITHM, Lineage, encode, scheme_of
from valdrix.canonical import Scheme, canonical_json, is_digest_of, sha256_hex

MEMBERS = (*FILES, "manifest.json", "manifest.sig")
# A decision_id already in the form str(uuid.UUID(...)) gives (the exporter's) needs no parsing.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# Inflated bytes read ahead of the CSV parser at a time (at most), and compressed bytes read at a time.
_PIECE = 4 << 20
_READ = 1 << 20
# A partial record carried from piece to piece beyond this size is left to csv.reader (memory stays bounded).
_CARRY_LIMIT = 2 * _PIECE
# A ZIP local file header, and the flags (encryption, patch data, strong encryption) only zipfile handles.
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50
_ZIPFILE_ONLY = 0x01 | 0x20 | 0x40
# ISA-L's error for corrupt DEFLATE data (its stub types it as an instance, not a class).
_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
# One field of the export dialect: quoted (quotes doubled inside, CR and LF allowed) or bare. Possessive, so a
# record is matched left to right in one way, as csv.reader's state machine reads it.
_FIELD = rb'(?:"[^"]*+(?:""[^"]*+)*+"|[^,"\r\n]*+)'
_HEADER = re.compile(rb"(?:" + _FIELD + rb",)*+" + _FIELD + rb"\r\n").match
_FIELD_TEXT = _FIELD.decode("ascii")
# Row-level discrepancies listed per check before the rest are summarised as a count.
MAX_LISTED = 20
_LINEAGE_COLUMNS = ("decision_id", "policy_version", "policy_schema_version", "policy_sha256", "computed_context")


@dataclass
class Check:
    """One verification step: passed when it has no problems."""

    name: str
    problems: list[str] = field(default_factory=list)
    hidden: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.hidden

    def fail(self, problem: str) -> None:
        """Record a discrepancy (beyond MAX_LISTED only counted)."""
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)
        else:
            self.hidden += 1


@dataclass
class Report:
    """The outcome of verifying one archive."""

    archive: str
    checks: list[Check] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        """Return a new named check added to the report."""
        item = Check(name)
        self.checks.append(item)
        return item

    def problems(self) -> list[str]:
        """Return every discrepancy as `check: problem`."""
        return [f"{c.name}: {p}" for c in self.checks for p in c.problems]


def verify(path: Path, jwks: dict[str, Any]) -> Report:
    """Return the verification report of the archive at `path` against the public keys in `jwks`."""
    report = Report(str(path))
    members = report.check("archive members")
    try:
        zipped = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        members.fail(f"cannot open {path} as a ZIP archive (an interrupted download has no central directory): "
                     f"{exc}")
        return report
    with zipped:
        names = set(zipped.namelist())
        for name in MEMBERS:
            if name not in names:
                members.fail(f"{name} is missing")
        for name in sorted(names - set(MEMBERS)):
            members.fail(f"unexpected member {name}")
        if "manifest.json" not in names:
            return report
        raw_manifest = zipped.read("manifest.json")
        manifest = _manifest(report, raw_manifest)
        _signature(report, raw_manifest, manifest, zipped.read("manifest.sig") if "manifest.sig" in names else None,
                   jwks)
        if manifest is None:
            return report
        report.manifest = manifest
        scheme = scheme_of(manifest)
        recorded = manifest.get("files")
        files = recorded if isinstance(recorded, dict) else {}
        rows = _Rows(report.check("approval and ledger references"))
        readers: dict[str, Callable[[Check, _Table], int]] = {
            "decisions.csv": lambda check, table: rows.decisions(check, table, scheme),
            "approvals.csv": lambda _, table: rows.references(table, "approvals.csv"),
            "ledger.csv": lambda _, table: rows.references(table, "ledger.csv"),
        }
        for name, read in readers.items():
            _csv_member(report, zipped, path, names, name, files.get(name), read)
        _policies(report, zipped, names, files.get("policies.json"), rows.cited)
        if "decisions.csv" in names:
            _lineage(report, "policy_lineage", rows.lineage.policy_lineage(), manifest, scheme)
            _lineage(report, "computed_context_lineage", rows.lineage.context_lineage(), manifest, scheme)
            _references(rows, "ledger.csv" in names)
        _parity(report, manifest)
    return report


def _manifest(report: Report, raw: bytes) -> dict[str, Any] | None:
    check = report.check("manifest.json")
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        check.fail(f"is not valid JSON: {exc}")
        return None
    if not isinstance(manifest, dict):
        check.fail("is not a JSON object")
        return None
    try:
        canonical = encode(manifest) == raw
    except (TypeError, ValueError):
        canonical = False
    if not canonical:
        check.fail(f"is not in canonical form under {scheme_of(manifest)} (the signed bytes must be the canonical "
                   "JSON)")
    fields = report.check("lineage fields (runbook checklist 6-7)")
    for name in LINEAGE_FIELDS:
        if name not in manifest:
            fields.fail(f"manifest lacks {name}")
    for name in ("files", "counts", "signature", "window", "parity_ok"):
        if name not in manifest:
            check.fail(f"lacks {name}")
    return manifest


def _signature(report: Report, raw: bytes, manifest: dict[str, Any] | None, sig_file: bytes | None,
               jwks: dict[str, Any]) -> None:
    check = report.check("signature")
    if sig_file is None:
        check.fail("manifest.sig is missing")
        return
    meta = manifest.get("signature") if manifest else None
    if not isinstance(meta, dict) or not isinstance(meta.get("kid"), str):
        check.fail("the manifest does not name the signing key (signature.kid)")
        return
    if meta.get("algorithm") != SIGNATURE_ALGORITHM:
        check.fail(f"algorithm {meta.get('algorithm')!r} is not {SIGNATURE_ALGORITHM}")
        return
    kid = meta["kid"]
    try:
        signature = base64.b64decode(sig_file.strip(), validate=True)
    except (binascii.Error, ValueError):
        check.fail("manifest.sig is not base64")
        return
    key = _jwk(jwks, kid)
    if key is None:
        known = ", ".join(sorted(str(k.get("kid")) for k in jwks.get("keys", []) if isinstance(k, dict))) or "none"
        check.fail(f"signed with key id {kid!r}, which is not an Ed25519 key in the JWKS (known: {known})")
        return
    try:
        key.verify(signature, raw)
    except InvalidSignature:
        check.fail(f"manifest.sig is not a valid Ed25519 signature of manifest.json by key {kid!r}")


def _jwk(jwks: dict[str, Any], kid: str) -> Ed25519PublicKey | None:
    for jwk in jwks.get("keys", []):
        if isinstance(jwk, dict) and jwk.get("kid") == kid and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            x = str(jwk.get("x", ""))
            try:
                return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
            except (binascii.Error, ValueError):
                return None
    return None


class _Unreadable(Exception):
    """A member whose bytes cannot be taken from the archive (the reason is a problem of its digest check)."""


class _Member:
    """One member's bytes, taken from the archive file and inflated piece by piece on a worker thread.

    The stored bytes are read past the local header and inflated with ISA-L (about 5x zlib's speed) in pieces of
    at most _PIECE bytes, each hashed, counted and CRC-checked as zipfile would, while the caller parses the one
    before: inflating and hashing release the GIL, so that work takes the other core. A member zipfile reads
    otherwise (another method, encryption, a local header not matching the directory) is read through zipfile,
    whose errors then become problems. Problems (a CRC-32 or size that is not the directory's, a truncated or
    corrupt stream) are collected in `problems`; the bytes inflated up to them are still given.
    """

    def __init__(self, zipped: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo, worker: ThreadPoolExecutor) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.problems: list[str] = []
        self._crc = 0
        self._info = info
        self._worker = worker
        self._source = self._inflated(zipped, path, info)
        self._ahead: Future[bytes] | None = worker.submit(next, self._source, b"")

    def pieces(self) -> Iterator[bytes]:
        """Yield the member's inflated bytes in order, the next piece being inflated meanwhile."""
        while self._ahead is not None:
            piece = self._ahead.result()
            self._ahead = self._worker.submit(next, self._source, b"") if piece else None
            if piece:
                yield piece

    def drain(self) -> None:
        """Take what a parse left unread, so the digest, size and CRC cover the whole member."""
        for _ in self.pieces():
            pass
        if not self.problems:
            if self.size != self._info.file_size:
                self.problems.append(f"inflates to {self.size} bytes, the ZIP directory records {self._info.file_size}")
            if self._crc != self._info.CRC:
                self.problems.append(f"CRC-32 is {self._crc:08x}, the ZIP directory records {self._info.CRC:08x}")

    def _counted(self, data: bytes) -> bytes:
        self.digest.update(data)
        self._crc = isal_zlib.crc32(data, self._crc)
        self.size += len(data)
        return data

    def _inflated(self, zipped: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo) -> Iterator[bytes]:
        try:
            with open(path, "rb") as file:
                left = _data_size(file, info)
                if left is None:
                    yield from self._through_zipfile(zipped, info)
                    return
                inflater = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
                while left:
                    chunk = file.read(min(left, _READ))
                    if not chunk:
                        raise _Unreadable(f"the archive ends {left} bytes into its compressed data")
                    left -= len(chunk)
                    if inflater is None:
                        yield self._counted(chunk)
                        continue
                    # At most _PIECE bytes per call: the rest of the chunk waits in unconsumed_tail, so memory stays
                    # bounded whatever the compression ratio.
                    while chunk and not inflater.eof:
                        data = inflater.decompress(chunk, _PIECE)
                        chunk = inflater.unconsumed_tail
                        if data:
                            yield self._counted(data)
                if inflater is not None:
                    data = inflater.flush()
                    if data:
                        yield self._counted(data)
                    if not inflater.eof:
                        raise _Unreadable("its DEFLATE stream ends before its last block")
        except (OSError, _INFLATE_ERROR, _Unreadable) as exc:
            self.problems.append(f"cannot be read: {exc}")

    def _through_zipfile(self, zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
        try:
            with zipped.open(info) as member:
                while data := member.read(_PIECE):
                    yield self._counted(data)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as exc:
            raise _Unreadable(str(exc)) from exc


def _data_size(file: IO[bytes], info: zipfile.ZipInfo) -> int | None:
    """Seek `file` to the member's stored bytes and return their size, or None when zipfile must read it."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & _ZIPFILE_ONLY:
        return None
    file.seek(info.header_offset)
    header = file.read(_LOCAL.size)
    if len(header) != _LOCAL.size:
        return None
    signature, *_, name_size, extra_size = _LOCAL.unpack(header)
    try:
        name = file.read(name_size).decode("utf-8" if info.flag_bits & 0x800 else "cp437")
    except UnicodeDecodeError:
        return None
    if signature != _LOCAL_SIGNATURE or name != info.orig_filename:
        return None
    file.seek(extra_size, io.SEEK_CUR)
    return info.compress_size


class _Chained(io.RawIOBase):
    """Bytes already taken, then the pieces still to come, as one stream (for the exact csv path)."""

    def __init__(self, head: memoryview, pieces: Iterator[bytes]) -> None:
        self._piece = head
        self._pieces = pieces

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._piece:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._piece = memoryview(piece)
        size = min(len(buffer), len(self._piece))
        buffer[:size] = self._piece[:size]
        self._piece = self._piece[size:]
        return size


class _Table:
    """The records of one CSV member, parsed as csv.reader over a UTF-8 text stream would, only faster.

    Records are matched as bytes by a regular expression of exactly the dialect's records with the header's
    number of fields (fields quoted only as formats.field quotes them, each record ended by CRLF; a quoted field
    may hold CR and LF, so a record may span lines), taking only the wanted fields; the UTF-8 of every piece is
    checked whole first. Whatever that expression does not match — a record with another number of cells, any
    laxer form csv.reader still accepts, bad UTF-8, a record longer than csv's field size limit or one spanning
    more than _CARRY_LIMIT bytes — switches the rest of the member to csv.reader over a TextIOWrapper, the exact
    former path, at that record's start (a record boundary, where csv.reader's state is fresh): so every record
    gets the cells, and every fault the error, csv.reader gives it. Memory is bounded by the pieces and the
    carried partial record, never by the member.
    """

    def __init__(self, name: str, pieces: Iterator[bytes]) -> None:
        self.name = name
        self._pieces = pieces
        self._data = b""
        self._rows: Iterator[list[str]] | None = None
        self._width = 0
        self._at: list[int] = []
        self._record: Callable[[str, int], re.Match[str] | None] | None = None
        self._order: list[int] | None = None  # the wanted cells' places among the captured (None: the same)
        self.number = 1  # the record last read, the header being record 1

    def select(self, wanted: tuple[str, ...]) -> None:
        """Read the header; raise ValueError when it is missing or lacks a wanted column."""
        header = self._header()
        if header is None:
            raise ValueError(f"{self.name} has no header row")
        missing = [w for w in wanted if w not in header]
        if missing:
            raise ValueError(f"{self.name} lacks the columns {', '.join(missing)}")
        self._width = len(header)
        self._at = [header.index(w) for w in wanted]
        if self._rows is None and self._width > 1:
            # One group per wanted column, in column order; _order puts them in `wanted` order.
            captured = sorted(set(self._at))
            fields = [f"({_FIELD_TEXT})" if i in captured else _FIELD_TEXT for i in range(self._width)]
            self._record = re.compile(",".join(fields) + "\r\n").match
            order = [captured.index(i) for i in self._at]
            self._order = None if order == list(range(len(captured))) else order
        elif self._rows is None:
            # A one-column record that is empty is an empty line, which csv.reader reads as no cells at all.
            self._rows = self._exact(memoryview(self._data))

    def _header(self) -> list[str] | None:
        limit = csv.field_size_limit()
        data = b""
        for piece in self._pieces:
            data += piece
            if b"\r\n" in data or len(data) > _CARRY_LIMIT:
                break
        match = _HEADER(data)
        try:
            header = None if match is None or match.end() > limit else match[0].decode("utf-8")
        except UnicodeDecodeError:
            header = None
        if match is None or header is None:
            self._rows = self._exact(memoryview(data))
            return next(self._rows, None)
        self._data = data[match.end():]
        return next(csv.reader(io.StringIO(header, newline="")))

    def _exact(self, head: memoryview) -> Iterator[list[str]]:
        return csv.reader(io.TextIOWrapper(io.BufferedReader(_Chained(head, self._pieces), 1 << 16),
                                           encoding="utf-8", newline=""))

    def records(self) -> Iterator[tuple[str, ...]]:
        """Yield the wanted cells of each record after the header; raise ValueError at one with another width."""
        if self._record is not None and self._rows is None:
            yield from self._matched(self._record)
        if self._rows is not None:
            width, at = self._width, self._at
            for row in self._rows:
                self.number += 1
                if len(row) != width:
                    raise ValueError(f"record {self.number} has {len(row)} cells, the header {width}")
                yield tuple(row[i] for i in at)

    def _matched(self, record: Callable[[str, int], re.Match[str] | None]) -> Iterator[tuple[str, ...]]:
        limit = csv.field_size_limit()
        order = self._order
        data, self._data = self._data, b""
        more = True
        while True:
            # Whole lines only while more pieces follow: the last CRLF is a record boundary or inside a quoted
            # field, and a record cut there does not match, so it is carried over to the next round. CRLF is
            # ASCII, so the cut never splits a UTF-8 sequence.
            cut = data.rfind(b"\r\n")
            end = len(data) if not more else cut + 2 if cut >= 0 else 0
            try:
                text = data[:end].decode("utf-8")
            except UnicodeDecodeError:
                # The exact path reads the records before the bad byte, then raises csv.reader's error.
                self._rows = self._exact(memoryview(data))
                return
            pos, exact = 0, False
            while pos < end:
                match = record(text, pos)
                if match is None:
                    break
                if match.end() - pos > limit:  # csv.reader may refuse one of its fields: let it tell
                    exact = True
                    break
                pos = match.end()
                self.number += 1
                cells = match.groups()
                if order is not None:
                    cells = tuple([cells[i] for i in order])
                yield tuple([c[1:-1].replace('""', '"') if c[:1] == '"' else c for c in cells])
            rest = data[end:] if pos == len(text) else text[pos:].encode("utf-8") + data[end:]
            if not more and not rest:
                return
            if exact or not more or (pos == 0 and len(rest) > _CARRY_LIMIT):
                self._rows = self._exact(memoryview(rest))
                return
            # The record at pos is cut by the piece's end, or malformed (the next rounds tell): carry it over.
            piece = next(self._pieces, None)
            more = piece is not None
            data = rest + piece if piece is not None else rest


def _csv_member(report: Report, zipped: zipfile.ZipFile, path: Path, names: set[str], name: str, entry: Any,
                read: Callable[[Check, _Table], int]) -> None:
    digest_check = report.check(f"{name} digest")
    rows_check = report.check(f"{name} rows")
    if not isinstance(entry, dict):
        digest_check.fail("the manifest records no digest for it")
    if name not in names:
        digest_check.fail("member missing")
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
        member = _Member(zipped, path, zipped.getinfo(name), worker)
        count: int | None = None
        try:
            count = read(rows_check, _Table(name, member.pieces()))
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            rows_check.fail(f"cannot be parsed: {exc}")
        member.drain()
    for problem in member.problems:
        digest_check.fail(problem)
    if not isinstance(entry, dict):
        return
    if member.digest.hexdigest() != entry.get("sha256"):
        digest_check.fail(f"sha256 is {member.digest.hexdigest()}, the manifest records {entry.get('sha256')}")
    if member.size != entry.get("bytes"):
        digest_check.fail(f"size is {member.size} bytes, the manifest records {entry.get('bytes')}")
    if count is None:
        digest_check.fail("cannot be parsed")
    elif count != entry.get("rows"):
        digest_check.fail(f"holds {count} rows, the manifest records {entry.get('rows')}")


@dataclass
class _Rows:
    """What the CSV members tell about each other, gathered while each is read once."""

    refs: Check
    lineage: Lineage = field(default_factory=Lineage)
    ids: set[str] = field(default_factory=set)
    logged: set[str] = field(default_factory=set)
    # (policy_version, policy_sha256) -> first decision citing it
    cited: dict[tuple[int, str], str] = field(default_factory=dict)

    def decisions(self, check: Check, table: _Table, scheme: Scheme) -> int:
        table.select(_LINEAGE_COLUMNS)
        count = 0
        add = self.lineage.add
        for count, (cell_id, cell_version, cell_schema, cell_sha, cell_context) in enumerate(table.records(), start=1):
            try:
                decision_id = cell_id if _UUID(cell_id) else str(uuid.UUID(cell_id))
                version = int(cell_version)
                sha = unneutralise(cell_sha)
                add(decision_id, version, unneutralise(cell_schema), sha, cell_context)
            except ValueError as exc:
                check.fail(f"record {count + 1}: malformed decision_id, policy_version or computed_context ({exc})")
                continue
            self.ids.add(decision_id)
            self.cited.setdefault((version, sha), decision_id)
        return count

    def references(self, table: _Table, name: str) -> int:
        table.select(("decision_id",))
        count = 0
        ledger = name == "ledger.csv"
        for count, (decision_id,) in enumerate(table.records(), start=1):
            if ledger:
                self.logged.add(decision_id)
            if decision_id not in self.ids:
                self.refs.fail(f"{name} record {count + 1} references decision {decision_id!r}, not in "
                               "decisions.csv")
        return count


def _lineage(report: Report, name: str, rebuilt: list[dict[str, Any]], manifest: dict[str, Any],
             scheme: Scheme) -> None:
    check = report.check(name)
    recorded = manifest.get(name)
    recorded_sha = manifest.get(f"{name}_sha256")
    if recorded is None or recorded_sha is None:
        check.fail(f"the manifest lacks {name} or {name}_sha256")
        return
    if sha256_hex(recorded, scheme) != recorded_sha:
        check.fail(f"{name}_sha256 {recorded_sha} is not the hash of the recorded {name} "
                   f"({sha256_hex(recorded, scheme)})")
    if sha256_hex(rebuilt, scheme) != recorded_sha:
        check.fail(f"rebuilt from decisions.csv it hashes to {sha256_hex(rebuilt, scheme)}, the manifest records "
                   f"{recorded_sha}")
    mine = {canonical_json(e) for e in rebuilt}
    theirs = {canonical_json(e) for e in recorded} if isinstance(recorded, list) else set()
    for entry in sorted(mine - theirs):
        check.fail(f"entry rebuilt from decisions.csv but not in the manifest: {entry}")
    for entry in sorted(theirs - mine):
        check.fail(f"entry in the manifest but not rebuilt from decisions.csv: {entry}")


def _policies(report: Report, zipped: zipfile.ZipFile, names: set[str], entry: Any,
              cited: dict[tuple[int, str], str]) -> None:
    digest = report.check("policies.json digest")
    documents = report.check("policies.json documents")
    citations = report.check("policy citations")
    if not isinstance(entry, dict):
        digest.fail("the manifest records no digest for it")
    if "policies.json" not in names:
        digest.fail("member missing")
        return
    raw = zipped.read("policies.json")
    if isinstance(entry, dict):
        if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            digest.fail(f"sha256 is {hashlib.sha256(raw).hexdigest()}, the manifest records {entry.get('sha256')}")
        if len(raw) != entry.get("bytes"):
            digest.fail(f"size is {len(raw)} bytes, the manifest records {entry.get('bytes')}")
    try:
        entries = json.loads(raw)
        if not isinstance(entries, list):
            raise ValueError("not a list")
    except (ValueError, UnicodeDecodeError) as exc:
        documents.fail(f"cannot be parsed: {exc}")
        return
    if isinstance(entry, dict) and len(entries) != entry.get("rows"):
        digest.fail(f"holds {len(entries)} rows, the manifest records {entry.get('rows')}")
    verified: dict[int, str] = {}
    for item in entries:
        if not isinstance(item, dict) or not isinstance(item.get("version"), int) or "document" not in item:
            documents.fail(f"malformed entry {canonical_json(item)[:120]}")
            continue
        version, recorded = item["version"], str(item.get("sha256"))
        if is_digest_of(recorded, item["document"]):
            verified[version] = recorded
        else:
            documents.fail(f"policy version {version}: document hashes to {sha256_hex(item['document'])}, recorded "
                           f"as {recorded}")
    for (version, sha), decision_id in sorted(cited.items()):
        if version not in verified:
            citations.fail(f"decision {decision_id} cites policy version {version}, absent from policies.json or "
                           "whose document does not hash to its recorded sha256")
        elif verified[version] != sha:
            citations.fail(f"decision {decision_id} cites policy version {version} with sha256 {sha}, but that "
                           f"version's document in policies.json hashes to {verified[version]}")


def _references(rows: _Rows, ledger: bool) -> None:
    if ledger:
        for decision_id in sorted(rows.ids - rows.logged):
            rows.refs.fail(f"decision {decision_id} has no ledger.csv record")


def _parity(report: Report, manifest: dict[str, Any]) -> None:
    check = report.check("parity")
    counts = manifest.get("counts")
    files = manifest.get("files")
    if not isinstance(counts, dict) or not isinstance(files, dict):
        check.fail("the manifest lacks counts or files")
        return
    for name, count in sorted(counts.items()):
        if not isinstance(count, dict) or count.get("database") != count.get("exported"):
            check.fail(f"{name}: database count {count.get('database') if isinstance(count, dict) else None} "
                       f"!= exported count {count.get('exported') if isinstance(count, dict) else None}")
        file = files.get(f"{name}.csv")
        if isinstance(file, dict) and isinstance(count, dict) and file.get("rows") != count.get("exported"):
            check.fail(f"{name}: exported count {count.get('exported')} != {name}.csv rows {file.get('rows')}")
    if manifest.get("parity_ok") is not True:
        check.fail("parity_ok is not true")
