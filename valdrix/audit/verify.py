"""Offline verification of an audit archive: needs only the ZIP and the server's public keys (a JWKS).

Nothing in the manifest is trusted that can be recomputed: every member is re-hashed and its rows counted,
both lineages are rebuilt from the rows of decisions.csv, every policy document in policies.json is re-hashed
and every decision's cited policy hash must match one of them, the signature over the exact manifest bytes is
checked with the JWKS key named by the manifest, and approval and ledger rows must belong to exported
decisions. Each discrepancy is reported naming the member, field, row or policy version concerned.

Each member is read once, from the one open file of the archive: its bytes are hashed, sized and CRC-32-checked
as they are inflated (ISA-L, on a worker thread) and parsed in pieces, so memory does not grow with the archive.
Records are matched by a regular expression of the export dialect and, from the first record it does not match,
by csv.reader, so every record reads as csv.reader reads it (`valdrix.audit.reading` tells how). Parsing holds the
GIL, so child processes parse the members: one streams decisions.csv's lineage cells to this process, which
rebuilds the lineages meanwhile, another reads approvals.csv and ledger.csv; a child that cannot run leaves its
members to this process. A member whose bytes cannot be read (a CRC-32 or size that is not the ZIP directory's,
a corrupt or truncated stream) or decoded (bad UTF-8) is a reported problem. The manifest names
its canonical-JSON scheme (`canonicalization`); a manifest without one predates RFC 8785 and is checked in the
legacy scheme, so archives made before the change still verify. Policy hashes are the ones stored when each
policy version was created, so a policy document may hash to its recorded sha256 under either scheme.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
import re
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from valdrix.audit.formats import unneutralise
from valdrix.audit.manifest import FILES, LINEAGE_FIELDS, SIGNATURE_ALGORITHM, Lineage, encode, scheme_of
from valdrix.audit.reading import ZIPFILE_ERRORS, ChildFailed, Elsewhere, Member, Streamed, Table, locate, unsupported
from valdrix.canonical import Scheme, canonical_json, is_digest_of, sha256_hex

MEMBERS = (*FILES, "manifest.json", "manifest.sig")
# A decision_id already in the form str(uuid.UUID(...)) gives (the exporter's) needs no parsing.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
# The CSV members, in the order they are checked: decisions.csv first, as the others must reference it.
_CSV = ("decisions.csv", "approvals.csv", "ledger.csv")
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
    # One open file: zipfile reads the directory from it and the members' bytes are read from it, so every byte
    # checked comes from the same file even if the path is replaced meanwhile.
    with ExitStack() as stack:
        try:
            file = stack.enter_context(open(path, "rb"))
            zipped = stack.enter_context(zipfile.ZipFile(file))
        except (OSError, zipfile.BadZipFile) as exc:
            members.fail(f"cannot open {path} as a ZIP archive (an interrupted download has no central directory): "
                         f"{exc}")
            return report
        names = set(zipped.namelist())
        for name in MEMBERS:
            if name not in names:
                members.fail(f"{name} is missing")
        for name in sorted(names - set(MEMBERS)):
            members.fail(f"unexpected member {name}")
        if "manifest.json" not in names:
            return report
        raw_manifest = _small(members, zipped, "manifest.json")
        if raw_manifest is None:
            return report
        manifest = _manifest(report, raw_manifest)
        _signature(report, raw_manifest, manifest,
                   _small(members, zipped, "manifest.sig") if "manifest.sig" in names else None, jwks)
        if manifest is None:
            return report
        report.manifest = manifest
        scheme = scheme_of(manifest)
        recorded = manifest.get("files")
        files = recorded if isinstance(recorded, dict) else {}
        rows = _Rows(report.check("approval and ledger references"))
        checks = {name: (report.check(f"{name} digest"), report.check(f"{name} rows")) for name in _CSV}
        present = [name for name in _CSV if _present(checks[name][0], names, name, files.get(name))]
        elsewhere = Elsewhere(file, zipped, [name for name in present if name != "decisions.csv"])
        try:
            if "decisions.csv" in present:
                _decisions(zipped, file, checks["decisions.csv"], files.get("decisions.csv"), rows, scheme)
            read = elsewhere.results()
        finally:
            elsewhere.close()
        for name, member in read.items():
            digest, parse = checks[name]
            if member.error is not None:
                parse.fail(member.error)
            rows.references(member.ids, name)
            _digest(digest, files.get(name), member.digest, member.size, member.problems, member.count)
        _policies(report, zipped, names, files.get("policies.json"), rows.cited)
        if "decisions.csv" in names:
            _lineage(report, "policy_lineage", rows.lineage.policy_lineage(), manifest, scheme)
            _lineage(report, "computed_context_lineage", rows.lineage.context_lineage(), manifest, scheme)
            _references(rows, "ledger.csv" in names)
        _parity(report, manifest)
    return report


def _small(members: Check, zipped: zipfile.ZipFile, name: str) -> bytes | None:
    """Return a small member's bytes, or None (a problem of the members check) when zipfile cannot read them."""
    if (why := unsupported(zipped.getinfo(name))) is not None:
        members.fail(f"{name} cannot be read: {why}")
        return None
    try:
        return zipped.read(name)
    except ZIPFILE_ERRORS as exc:
        members.fail(f"{name} cannot be read: {exc}")
        return None


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


def _present(digest: Check, names: set[str], name: str, entry: Any) -> bool:
    if not isinstance(entry, dict):
        digest.fail("the manifest records no digest for it")
    if name not in names:
        digest.fail("member missing")
        return False
    return True


def _decisions(zipped: zipfile.ZipFile, file: IO[bytes], checks: tuple[Check, Check], entry: Any, rows: _Rows,
               scheme: Scheme) -> None:
    """Rebuild the lineages from decisions.csv, its records parsed by a child process (reading.Streamed) or here."""
    digest, parse = checks
    count: int | None = None
    streamed = Streamed.start(file, zipped, "decisions.csv", _LINEAGE_COLUMNS)
    if streamed is not None:
        try:
            try:
                count = rows.decisions(parse, streamed.records(), scheme)
            except (ValueError, UnicodeDecodeError, csv.Error) as exc:
                parse.fail(f"cannot be parsed: {exc}")
            read = streamed.result
            assert read is not None
            _digest(digest, entry, read.digest, read.size, read.problems, count)
            return
        except ChildFailed:
            pass  # nothing was read: read it here
        finally:
            streamed.close()
    info = zipped.getinfo("decisions.csv")
    where = locate(file.fileno(), info)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
        member = (Member.stored(file.fileno(), where, worker) if where is not None
                  else Member.zipped(zipped, info, worker))
        try:
            table = Table("decisions.csv", member.pieces())
            table.select(_LINEAGE_COLUMNS)
            count = rows.decisions(parse, table.records(), scheme)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            parse.fail(f"cannot be parsed: {exc}")
        member.drain()
    _digest(digest, entry, member.digest.hexdigest(), member.size, member.problems, count)


def _digest(check: Check, entry: Any, sha256: str, size: int, problems: list[str], count: int | None) -> None:
    for problem in problems:
        check.fail(problem)
    if not isinstance(entry, dict):
        return
    if sha256 != entry.get("sha256"):
        check.fail(f"sha256 is {sha256}, the manifest records {entry.get('sha256')}")
    if size != entry.get("bytes"):
        check.fail(f"size is {size} bytes, the manifest records {entry.get('bytes')}")
    if count is None:
        check.fail("cannot be parsed")
    elif count != entry.get("rows"):
        check.fail(f"holds {count} rows, the manifest records {entry.get('rows')}")


@dataclass
class _Rows:
    """What the CSV members tell about each other, gathered while each is read once."""

    refs: Check
    lineage: Lineage = field(default_factory=Lineage)
    ids: set[str] = field(default_factory=set)
    logged: set[str] = field(default_factory=set)
    # (policy_version, policy_sha256) -> first decision citing it
    cited: dict[tuple[int, str], str] = field(default_factory=dict)

    def decisions(self, check: Check, records: Iterator[tuple[str, ...]], scheme: Scheme) -> int:
        """Count the records of decisions.csv (their _LINEAGE_COLUMNS cells) into the lineages and references."""
        count = 0
        add, known, cite = self.lineage.add, self.ids.add, self.cited.setdefault
        for count, (cell_id, cell_version, cell_schema, cell_sha, cell_context) in enumerate(records, start=1):
            try:
                decision_id = cell_id if _UUID(cell_id) else str(uuid.UUID(cell_id))
                version = int(cell_version)
                sha = unneutralise(cell_sha)
                add(decision_id, version, unneutralise(cell_schema), sha, cell_context)
            except ValueError as exc:
                check.fail(f"record {count + 1}: malformed decision_id, policy_version or computed_context ({exc})")
                continue
            known(decision_id)
            cite((version, sha), decision_id)
        return count

    def references(self, ids: list[str], name: str) -> None:
        """Check the decision_id of each record of approvals.csv or ledger.csv, in record order."""
        ledger = name == "ledger.csv"
        for count, decision_id in enumerate(ids, start=1):
            if ledger:
                self.logged.add(decision_id)
            if decision_id not in self.ids:
                self.refs.fail(f"{name} record {count + 1} references decision {decision_id!r}, not in "
                               "decisions.csv")


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
    raw = _small(digest, zipped, "policies.json")
    if raw is None:
        return
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
