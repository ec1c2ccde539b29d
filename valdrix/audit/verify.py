"""Offline verification of an audit archive: needs only the ZIP and the server's public keys (a JWKS).

Nothing in the manifest is trusted that can be recomputed: every member is re-hashed and its rows counted,
both lineages are rebuilt from the rows of decisions.csv, every policy document in policies.json is re-hashed
and every decision's cited policy hash must match one of them, the signature over the exact manifest bytes is
checked with the JWKS key named by the manifest, and approval and ledger rows must belong to exported
decisions. Each discrepancy is reported naming the member, field, row or policy version concerned.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from valdrix.audit.formats import unneutralise
from valdrix.audit.manifest import FILES, LINEAGE_FIELDS, SIGNATURE_ALGORITHM, Lineage, encode
from valdrix.canonical import canonical_json, sha256_hex

MEMBERS = (*FILES, "manifest.json", "manifest.sig")
# Row-level discrepancies listed per check before the rest are summarised as a count.
MAX_LISTED = 20


@dataclass
class Check:
    """One verification step: passed when it has no problems."""

    name: str
    problems: list[str] = field(default_factory=list)
    hidden: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

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
        members.fail(f"cannot open {path} as a ZIP archive: {exc}")
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
        _files(report, zipped, names, manifest)
        if "decisions.csv" in names:
            decisions = _decisions(report, zipped, manifest)
            if "policies.json" in names:
                _policies(report, zipped, decisions.cited)
            _references(report, zipped, names, decisions.ids)
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
    if encode(manifest) != raw:
        check.fail("is not in canonical form (the signed bytes must be the canonical JSON)")
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


def _files(report: Report, zipped: zipfile.ZipFile, names: set[str], manifest: dict[str, Any]) -> None:
    recorded = manifest.get("files")
    if not isinstance(recorded, dict):
        recorded = {}
    for name in FILES:
        check = report.check(f"{name} digest")
        entry = recorded.get(name)
        if not isinstance(entry, dict):
            check.fail("the manifest records no digest for it")
            continue
        if name not in names:
            check.fail("member missing")
            continue
        digest, size = hashlib.sha256(), 0
        with zipped.open(name) as member:
            while chunk := member.read(1 << 16):
                digest.update(chunk)
                size += len(chunk)
        if digest.hexdigest() != entry.get("sha256"):
            check.fail(f"sha256 is {digest.hexdigest()}, the manifest records {entry.get('sha256')}")
        if size != entry.get("bytes"):
            check.fail(f"size is {size} bytes, the manifest records {entry.get('bytes')}")
        rows = _row_count(zipped, name)
        if rows is None:
            check.fail("cannot be parsed")
        elif rows != entry.get("rows"):
            check.fail(f"holds {rows} rows, the manifest records {entry.get('rows')}")


def _row_count(zipped: zipfile.ZipFile, name: str) -> int | None:
    try:
        if name.endswith(".json"):
            data = json.loads(zipped.read(name))
            return len(data) if isinstance(data, list) else None
        return sum(1 for _ in _csv_rows(zipped, name))
    except (ValueError, UnicodeDecodeError, csv.Error):
        return None


def _csv_rows(zipped: zipfile.ZipFile, name: str) -> Iterator[dict[str, str]]:
    with zipped.open(name) as member:
        reader = csv.reader(io.TextIOWrapper(member, encoding="utf-8", newline=""))
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{name} has no header row")
        for row in reader:
            if len(row) != len(header):
                raise ValueError(f"{name} row {reader.line_num} has {len(row)} cells, the header {len(header)}")
            yield dict(zip(header, row, strict=True))


@dataclass
class _Decisions:
    ids: set[str] = field(default_factory=set)
    # (policy_version, policy_sha256) -> first decision citing it
    cited: dict[tuple[int, str], str] = field(default_factory=dict)


def _decisions(report: Report, zipped: zipfile.ZipFile, manifest: dict[str, Any]) -> _Decisions:
    check = report.check("decisions.csv rows")
    found = _Decisions()
    lineage = Lineage()
    try:
        for number, row in enumerate(_csv_rows(zipped, "decisions.csv"), start=2):
            try:
                decision_id = uuid.UUID(row["decision_id"])
                version = int(row["policy_version"])
                sha = unneutralise(row["policy_sha256"])
                context = json.loads(row["computed_context"])
            except (KeyError, ValueError) as exc:
                check.fail(f"record {number}: malformed decision_id, policy_version or computed_context ({exc})")
                continue
            found.ids.add(str(decision_id))
            found.cited.setdefault((version, sha), str(decision_id))
            lineage.add(decision_id, version, unneutralise(row.get("policy_schema_version", "")), sha, context)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        check.fail(f"cannot be parsed: {exc}")
        return found
    _lineage(report, "policy_lineage", lineage.policy_lineage(), manifest)
    _lineage(report, "computed_context_lineage", lineage.context_lineage(), manifest)
    return found


def _lineage(report: Report, name: str, rebuilt: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    check = report.check(name)
    recorded = manifest.get(name)
    recorded_sha = manifest.get(f"{name}_sha256")
    if recorded is None or recorded_sha is None:
        check.fail(f"the manifest lacks {name} or {name}_sha256")
        return
    if sha256_hex(recorded) != recorded_sha:
        check.fail(f"{name}_sha256 {recorded_sha} is not the hash of the recorded {name} ({sha256_hex(recorded)})")
    if sha256_hex(rebuilt) != recorded_sha:
        check.fail(f"rebuilt from decisions.csv it hashes to {sha256_hex(rebuilt)}, the manifest records "
                   f"{recorded_sha}")
    mine = {canonical_json(e) for e in rebuilt}
    theirs = {canonical_json(e) for e in recorded} if isinstance(recorded, list) else set()
    for entry in sorted(mine - theirs):
        check.fail(f"entry rebuilt from decisions.csv but not in the manifest: {entry}")
    for entry in sorted(theirs - mine):
        check.fail(f"entry in the manifest but not rebuilt from decisions.csv: {entry}")


def _policies(report: Report, zipped: zipfile.ZipFile, cited: dict[tuple[int, str], str]) -> None:
    documents = report.check("policies.json documents")
    citations = report.check("policy citations")
    try:
        entries = json.loads(zipped.read("policies.json"))
        if not isinstance(entries, list):
            raise ValueError("not a list")
    except (ValueError, UnicodeDecodeError) as exc:
        documents.fail(f"cannot be parsed: {exc}")
        return
    rehashed: dict[int, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), int) or "document" not in entry:
            documents.fail(f"malformed entry {canonical_json(entry)[:120]}")
            continue
        version = entry["version"]
        rehashed[version] = sha256_hex(entry["document"])
        if rehashed[version] != entry.get("sha256"):
            documents.fail(f"policy version {version}: document hashes to {rehashed[version]}, recorded as "
                           f"{entry.get('sha256')}")
    for (version, sha), decision_id in sorted(cited.items()):
        if version not in rehashed:
            citations.fail(f"decision {decision_id} cites policy version {version}, absent from policies.json")
        elif rehashed[version] != sha:
            citations.fail(f"decision {decision_id} cites policy version {version} with sha256 {sha}, but that "
                           f"version's document in policies.json hashes to {rehashed[version]}")


def _references(report: Report, zipped: zipfile.ZipFile, names: set[str], decisions: set[str]) -> None:
    check = report.check("approval and ledger references")
    logged: set[str] = set()
    for name in ("approvals.csv", "ledger.csv"):
        if name not in names:
            continue
        try:
            for number, row in enumerate(_csv_rows(zipped, name), start=2):
                decision_id = row.get("decision_id", "")
                if name == "ledger.csv":
                    logged.add(decision_id)
                if decision_id not in decisions:
                    check.fail(f"{name} record {number} references decision {decision_id!r}, not in decisions.csv")
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            check.fail(f"{name} cannot be parsed: {exc}")
    if "ledger.csv" in names:
        for decision_id in sorted(decisions - logged):
            check.fail(f"decision {decision_id} has no ledger.csv record")


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
