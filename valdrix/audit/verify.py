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
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from valdrix.audit.formats import unneutralise
from valdrix.audit.manifest import FILES, LINEAGE_FIELDS, SIGNATURE_ALGORITHM, Lineage, encode, scheme_of
from valdrix.canonical import Scheme, canonical_json, is_digest_of, sha256_hex

MEMBERS = (*FILES, "manifest.json", "manifest.sig")
# A decision_id already in the form str(uuid.UUID(...)) gives (the exporter's) needs no parsing.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# Inflated bytes read ahead of the CSV parser at a time.
_PIECE = 1 << 20
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
        readers: dict[str, Callable[[Check, Iterator[list[str]]], int]] = {
            "decisions.csv": lambda check, records: rows.decisions(check, records, scheme),
            "approvals.csv": lambda _, records: rows.references(records, "approvals.csv"),
            "ledger.csv": lambda _, records: rows.references(records, "ledger.csv"),
        }
        for name, read in readers.items():
            _csv_member(report, zipped, names, name, files.get(name), read)
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


class _Hashed(io.RawIOBase):
    """A member's bytes as they are read, hashed and counted on the way (so it is read once).

    The next piece is inflated and hashed on `worker` while the caller parses this one: zipfile's zlib and
    hashlib release the GIL, so that work takes another core.
    """

    def __init__(self, member: IO[bytes], worker: ThreadPoolExecutor) -> None:
        self._member = member
        self._worker = worker
        self.digest = hashlib.sha256()
        self.size = 0
        self._piece = memoryview(b"")
        self._ahead: Future[bytes] | None = worker.submit(self._next)

    def _next(self) -> bytes:
        data = self._member.read(_PIECE)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._piece:
            if self._ahead is None:
                return 0
            self._piece = memoryview(self._ahead.result())
            self._ahead = self._worker.submit(self._next) if self._piece else None
        size = min(len(buffer), len(self._piece))
        buffer[:size] = self._piece[:size]
        self._piece = self._piece[size:]
        return size

    def drain(self) -> None:
        """Read what a failed parse left, so the digest covers the whole member."""
        buffer = bytearray(1 << 16)
        while self.readinto(buffer):
            pass


def _csv_member(report: Report, zipped: zipfile.ZipFile, names: set[str], name: str, entry: Any,
                read: Callable[[Check, Iterator[list[str]]], int]) -> None:
    digest_check = report.check(f"{name} digest")
    rows_check = report.check(f"{name} rows")
    if not isinstance(entry, dict):
        digest_check.fail("the manifest records no digest for it")
    if name not in names:
        digest_check.fail("member missing")
        return
    with zipped.open(name) as member, ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
        hashed = _Hashed(member, worker)
        count: int | None = None
        try:
            reader = csv.reader(io.TextIOWrapper(io.BufferedReader(hashed, 1 << 16), encoding="utf-8", newline=""))
            count = read(rows_check, reader)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            rows_check.fail(f"cannot be parsed: {exc}")
        hashed.drain()
    if not isinstance(entry, dict):
        return
    if hashed.digest.hexdigest() != entry.get("sha256"):
        digest_check.fail(f"sha256 is {hashed.digest.hexdigest()}, the manifest records {entry.get('sha256')}")
    if hashed.size != entry.get("bytes"):
        digest_check.fail(f"size is {hashed.size} bytes, the manifest records {entry.get('bytes')}")
    if count is None:
        digest_check.fail("cannot be parsed")
    elif count != entry.get("rows"):
        digest_check.fail(f"holds {count} rows, the manifest records {entry.get('rows')}")


def _positions(records: Iterator[list[str]], name: str, wanted: tuple[str, ...]) -> tuple[int, list[int]]:
    header = next(records, None)
    if header is None:
        raise ValueError(f"{name} has no header row")
    missing = [w for w in wanted if w not in header]
    if missing:
        raise ValueError(f"{name} lacks the columns {', '.join(missing)}")
    return len(header), [header.index(w) for w in wanted]


@dataclass
class _Rows:
    """What the CSV members tell about each other, gathered while each is read once."""

    refs: Check
    lineage: Lineage = field(default_factory=Lineage)
    ids: set[str] = field(default_factory=set)
    logged: set[str] = field(default_factory=set)
    # (policy_version, policy_sha256) -> first decision citing it
    cited: dict[tuple[int, str], str] = field(default_factory=dict)

    def decisions(self, check: Check, records: Iterator[list[str]], scheme: Scheme) -> int:
        width, at = _positions(records, "decisions.csv", _LINEAGE_COLUMNS)
        i_id, i_version, i_schema, i_sha, i_context = at
        count = 0
        for count, row in enumerate(records, start=1):
            if len(row) != width:
                raise ValueError(f"record {count + 1} has {len(row)} cells, the header {width}")
            try:
                decision_id = row[i_id] if _UUID(row[i_id]) else str(uuid.UUID(row[i_id]))
                version = int(row[i_version])
                sha = unneutralise(row[i_sha])
                self.lineage.add(decision_id, version, unneutralise(row[i_schema]), sha, row[i_context])
            except ValueError as exc:
                check.fail(f"record {count + 1}: malformed decision_id, policy_version or computed_context ({exc})")
                continue
            self.ids.add(decision_id)
            self.cited.setdefault((version, sha), decision_id)
        return count

    def references(self, records: Iterator[list[str]], name: str) -> int:
        width, (i_decision,) = _positions(records, name, ("decision_id",))
        count = 0
        ledger = name == "ledger.csv"
        for count, row in enumerate(records, start=1):
            if len(row) != width:
                raise ValueError(f"record {count + 1} has {len(row)} cells, the header {width}")
            decision_id = row[i_decision]
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
