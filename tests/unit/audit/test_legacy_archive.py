"""An archive made before RFC 8785 (main's exporter, tests/fixtures/exports/README.md) still verifies."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from valdrix.audit.manifest import encode, scheme_of
from valdrix.audit.verify import verify
from valdrix.canonical import LEGACY_SCHEME, SCHEME

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
ARCHIVE = FIXTURES / "legacy-archive.zip"


def jwks() -> dict[str, object]:
    return dict(json.loads((FIXTURES / "legacy-jwks.json").read_text()))


def test_the_legacy_archive_verifies_in_the_legacy_scheme() -> None:
    report = verify(ARCHIVE, jwks())
    assert report.ok, report.problems()
    with zipfile.ZipFile(ARCHIVE) as z:
        manifest = json.loads(z.read("manifest.json"))
        decisions = z.read("decisions.csv")
    assert manifest["schema_version"] == "valdrix.audit.export_manifest.v1" and "canonicalization" not in manifest
    assert scheme_of(manifest) == LEGACY_SCHEME
    # Its JSON cells are the legacy form (ASCII escapes, floats as Python prints them), not RFC 8785.
    assert b"na\\u00efve" in decisions and b"1e+16" in decisions


def test_a_changed_legacy_archive_fails(tmp_path: Path) -> None:
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(ARCHIVE) as old, zipfile.ZipFile(changed, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info.filename, data.replace(b"decision_created", b"decision_cReated", 1)
                         if info.filename == "ledger.csv" else data)
    report = verify(changed, jwks())
    assert {c.name for c in report.checks if not c.ok} == {"ledger.csv digest"}


def test_the_manifest_names_the_scheme_its_bytes_are_in() -> None:
    legacy = {"window": {"note": "é"}}
    assert encode(legacy) == b'{"window":{"note":"\\u00e9"}}'
    current = {**legacy, "canonicalization": SCHEME}
    assert encode(current) == '{"canonicalization":"rfc8785","window":{"note":"é"}}'.encode()
