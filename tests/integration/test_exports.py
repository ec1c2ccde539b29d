"""Signed audit exports over real HTTP on each backend: verification, tampering, limits, concurrent writers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Text, cast, insert, literal, select, update
from sqlalchemy.dialects import postgresql
from typer.testing import CliRunner

from tests.integration.test_gate_flow import preflight, set_mode
from tests.live import LiveServer, Tenant, post, thread_server
from valdrix.approvals.models import ApprovalRequest
from valdrix.approvals.tokens import KeyRing
from valdrix.audit import service, snapshots, streams
from valdrix.audit.processes import FormattingPool
from valdrix.audit.verify import Report, verify
from valdrix.canonical import canonical_bytes, canonical_json_of_text
from valdrix.cli import app as cli_app
from valdrix.db import make_engine
from valdrix.decisions.lineage import seal
from valdrix.decisions.models import Decision
from valdrix.errors import InvalidInput
from valdrix.ledger.models import LedgerEntry

EXPORTS = "/api/v1/enforcement/exports"


def jwks(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/.well-known/jwks.json").json())


def archive(client: httpx.Client, path: Path, **params: str) -> Path:
    response = client.get(EXPORTS + "/archive", params=params)
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def populate(client: httpx.Client) -> None:
    """Decisions under three policy versions, one of them awaiting approval (so approvals.csv has a row)."""
    assert client.put("/api/v1/enforcement/budgets", json={"budgets": [
        {"scope_key": "payments", "monthly_limit_usd": "1000"}]}).status_code == 200
    for run in ("a1", "a2"):
        assert post(client, "/gate/terraform/preflight", preflight("10", run=run)).status_code == 200
    set_mode(client, "hard")
    assert post(client, "/gate/terraform/preflight", preflight("2000", run="b1")).json()["decision"] == "DENY"
    set_mode(client, "soft")
    pending = post(client, "/gate/terraform/preflight", preflight("2000", run="c1",
                                                                 resource_reference="=HYPERLINK(\"x\")"))
    assert pending.json()["decision"] == "REQUIRE_APPROVAL", pending.text


def rewrite(source: Path, target: Path, member: str, change: Callable[[bytes], bytes]) -> Path:
    """Copy the archive with one member's bytes changed."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info.filename, change(data) if info.filename == member else data)
    return target


def problems(report: Report) -> str:
    return "\n".join(report.problems())



@pytest.fixture(scope="module")
def pool() -> Iterator[FormattingPool]:
    """One formatting process, started, for the archives this module streams in-process, stopped after them."""
    formatting = FormattingPool(1)
    started = formatting.start()
    assert started is not None
    started.result(timeout=60)
    yield formatting
    formatting.shutdown()

def test_archive_with_several_policy_versions_verifies_and_is_deterministic(tenant: Tenant, tmp_path: Path) -> None:
    with tenant.client() as c:
        populate(c)
        path = archive(c, tmp_path / "a.zip")
        keys = jwks(c)
        report = verify(path, keys)
        assert report.ok, problems(report)
        again = archive(c, tmp_path / "b.zip")
        assert again.read_bytes() == path.read_bytes()
        parity = c.get(EXPORTS + "/parity").json()
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["decisions.csv", "approvals.csv", "ledger.csv", "policies.json", "manifest.json",
                                "manifest.sig"]
        manifest = json.loads(z.read("manifest.json"))
        policies = json.loads(z.read("policies.json"))
        decisions_csv = z.read("decisions.csv").decode()
    assert [p["version"] for p in policies] == [1, 2, 3]
    assert [e["policy_version"] for e in manifest["policy_lineage"]] == [1, 2, 3]
    assert [e["decision_count"] for e in manifest["policy_lineage"]] == [2, 1, 1]
    assert manifest["counts"] == {"decisions": {"database": 4, "exported": 4},
                                  "approvals": {"database": 1, "exported": 1},
                                  "ledger": {"database": 4, "exported": 4}}
    assert "'=HYPERLINK" in decisions_csv and decisions_csv.endswith("\r\n")
    assert parity["parity_ok"] is True
    assert parity["decision_count_db"] == parity["decision_count_exported"] == 4
    assert parity["approval_count_db"] == parity["approval_count_exported"] == 1
    assert manifest["canonicalization"] == parity["canonicalization"] == "rfc8785"
    for name in ("policy_lineage", "policy_lineage_sha256", "computed_context_lineage",
                 "computed_context_lineage_sha256"):
        assert parity[name] == manifest[name], name
    assert parity["signature_algorithm"] == "Ed25519" and parity["signature_kid"] == manifest["signature"]["kid"]
    summary = {k: v for k, v in parity.items() if k not in ("signature", "summary_sha256")}
    assert parity["summary_sha256"] == hashlib.sha256(canonical_bytes(summary)).hexdigest()
    key = next(k for k in keys["keys"] if k["kid"] == parity["signature_kid"])
    Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "==")).verify(
        base64.b64decode(parity["signature"]), canonical_bytes(summary))


def test_a_context_changed_after_its_decision_makes_parity_and_the_archive_disagree(tenant: Tenant,
                                                                                     tmp_path: Path) -> None:
    """Parity reads each decision's lineage entry as written with it; the archive computes it from the cells it
    writes. A computed context changed afterwards in the database shows as a context lineage that differs."""
    with tenant.client() as c:
        populate(c)
        before = c.get(EXPORTS + "/parity").json()
        engine = make_engine(tenant.settings)
        try:
            with engine.begin() as conn:
                changed = conn.execute(select(Decision.id).where(Decision.tenant_id == tenant.id).limit(1)).scalar_one()
                stored = conn.execute(select(Decision.computed_context).where(Decision.id == changed)).scalar_one()
                conn.execute(Decision.__table__.update().where(Decision.id == changed).values(
                    computed_context={**stored, "scope_headroom_usd": "999999.0000"}))
        finally:
            engine.dispose()
        after = c.get(EXPORTS + "/parity").json()
        path = archive(c, tmp_path / "a.zip")
        report = verify(path, jwks(c))
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert report.ok, problems(report)  # the archive is true to the rows it holds
    assert after["computed_context_lineage_sha256"] == before["computed_context_lineage_sha256"]
    assert manifest["computed_context_lineage_sha256"] != after["computed_context_lineage_sha256"]
    assert manifest["policy_lineage_sha256"] == after["policy_lineage_sha256"]
    assert after["parity_ok"] is True  # the counts still agree


def _stored_texts(engine: Any, decision_id: uuid.UUID) -> list[str]:
    documents = (Decision.computed_context, Decision.request_payload, Decision.response_payload)
    with engine.connect() as conn:
        return list(conn.execute(select(*(cast(d, Text) for d in documents)).where(Decision.id == decision_id)).one())


def test_documents_stored_canonical_are_copied_and_those_stored_otherwise_canonicalised_alike(
        tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate stores a decision's documents as their RFC 8785 text, which the archive copies as its cells
    without canonicalising them again; the same documents stored in another form (as before, or by another
    writer) give the same cells and lineage, canonicalised."""
    metadata = {"zeta": "é", "alpha": [3, {"y": 1, "x": None}], "float": 1.5}
    with tenant.client() as c:
        r = post(c, "/gate/terraform/preflight", preflight("10", run="stored", metadata=metadata))
        assert r.status_code == 200, r.text
        canonical = archive(c, tmp_path / "canonical.zip")
        decision_id = uuid.UUID(r.json()["decision_id"])
        engine = make_engine(tenant.settings)
        try:
            texts = _stored_texts(engine, decision_id)
            assert [canonical_json_of_text(t) for t in texts] == texts
            assert '"metadata":{"alpha":[3,{"x":null,"y":1}],"computed_risk_class":' in texts[1], texts[1]
            assert ',"float":1.5,' in texts[1] and ',"zeta":"é"}' in texts[1]
            # The records query as the archive reads it, formatted here with canonicalisation made to fail.
            dialect = engine.dialect.name
            formatter = streams.Formatter(streams.DECISIONS, dialect)
            params = {"tenant_id": tenant.id, "start_at": datetime(2000, 1, 1, tzinfo=UTC),
                      "end_before": datetime(2100, 1, 1, tzinfo=UTC)}
            with engine.connect() as conn:
                rows = [list(column) for column in zip(*conn.execute(formatter.query.select, params), strict=True)]

            def refused(text: str) -> Any:
                raise AssertionError(f"canonicalised again: {text}")
            with monkeypatch.context() as patched:
                patched.setattr(streams, "canonical_json_of_text", refused)
                patched.setattr(streams, "canonical_json_and_value_of_text", refused)
                copied, _ = formatter(rows)
            # The same documents in the form stored before: key order as written, spaces, ASCII escapes.
            values = [json.loads(t) for t in texts]
            old = [json.dumps(dict(reversed(v.items()))) for v in values]
            assert old != texts
            with engine.begin() as conn:
                # Bound as text, past the JSON type's serialiser (PostgreSQL takes json only by a cast).
                conn.execute(Decision.__table__.update().where(Decision.id == decision_id).values(
                    {d: literal(text, Text) if dialect == "sqlite" else cast(literal(text, Text), postgresql.JSON)
                     for d, text in zip(("computed_context", "request_payload", "response_payload"), old,
                                        strict=True)}))
            assert _stored_texts(engine, decision_id) == old
        finally:
            engine.dispose()
        rewritten = archive(c, tmp_path / "rewritten.zip")
        report = verify(rewritten, jwks(c))
        parity = c.get(EXPORTS + "/parity").json()
    assert report.ok, problems(report)
    members = ("decisions.csv", "manifest.json", "manifest.sig")
    assert [zipfile.ZipFile(rewritten).read(m) for m in members] == [
        zipfile.ZipFile(canonical).read(m) for m in members]
    assert copied in zipfile.ZipFile(canonical).read("decisions.csv")
    manifest = json.loads(zipfile.ZipFile(rewritten).read("manifest.json"))
    assert manifest["computed_context_lineage_sha256"] == parity["computed_context_lineage_sha256"]


def _flip_digit(data: bytes, marker: bytes) -> bytes:
    at = data.index(marker) + len(marker)
    while not data[at:at + 1].isdigit():
        at += 1
    digit = data[at:at + 1]
    return data[:at] + (b"8" if digit != b"8" else b"9") + data[at + 1:]


def _change_after(data: bytes, marker: bytes) -> bytes:
    at = data.index(marker) + len(marker)
    return data[:at] + (b"X" if data[at:at + 1] != b"X" else b"Y") + data[at + 1:]


@pytest.mark.parametrize(("member", "change", "named"), [
    ("decisions.csv", lambda d: d.replace(b"payments", b"paymentz", 1), ["decisions.csv digest"]),
    ("decisions.csv", lambda d: _change_after(d, b'""risk_class"":""'),
     ["decisions.csv digest", "computed_context_lineage"]),
    ("approvals.csv", lambda d: d.replace(b"pending", b"approved", 1), ["approvals.csv digest"]),
    ("ledger.csv", lambda d: d.replace(b"decision_created", b"decision_cReated", 1), ["ledger.csv digest"]),
    ("manifest.json", lambda d: _flip_digit(d, b'"decision_count":'), ["signature", "computed_context_lineage"]),
    ("policies.json", lambda d: d.replace(b'"default_ttl_seconds":900', b'"default_ttl_seconds":901', 1),
     ["policies.json digest", "policies.json documents", "policy citations"]),
])
def test_one_changed_byte_fails_verification_naming_it(tenant: Tenant, tmp_path: Path, member: str,
                                                        change: Callable[[bytes], bytes], named: list[str]) -> None:
    with tenant.client() as c:
        populate(c)
        original = archive(c, tmp_path / "a.zip")
        keys = jwks(c)
    tampered = rewrite(original, tmp_path / "t.zip", member, change)
    report = verify(tampered, keys)
    assert not report.ok
    failed = {check.name for check in report.checks if not check.ok}
    assert set(named) <= failed, problems(report)
    if member == "policies.json":
        assert "policy version 1" in problems(report)


def test_signature_from_an_unknown_key_fails(tenant: Tenant, tmp_path: Path) -> None:
    with tenant.client() as c:
        populate(c)
        path = archive(c, tmp_path / "a.zip")
        real = jwks(c)
    kid = json.loads(zipfile.ZipFile(path).read("manifest.json"))["signature"]["kid"]
    impostor = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                      serialization.PublicFormat.Raw)
    same_kid_other_key = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid,
                                    "x": base64.urlsafe_b64encode(impostor).rstrip(b"=").decode()}]}
    report = verify(path, same_kid_other_key)
    assert [c.name for c in report.checks if not c.ok] == ["signature"], problems(report)
    without = {"keys": [k for k in real["keys"] if k["kid"] != kid]}
    report = verify(path, without)
    assert "not an Ed25519 key in the JWKS" in problems(report)


def test_cli_downloads_verifies_and_exits_nonzero_on_tampering(tenant: Tenant, tmp_path: Path) -> None:
    with tenant.client() as c:
        populate(c)
        (tmp_path / "jwks.json").write_text(json.dumps(jwks(c)))
    runner = CliRunner()
    path = tmp_path / "a.zip"
    got = runner.invoke(cli_app, ["export", "archive", "--server", tenant.url, "--api-key", tenant.owner_key,
                                  "--out", str(path)])
    assert got.exit_code == 0, got.output
    ok = runner.invoke(cli_app, ["export", "verify", str(path), "--jwks", str(tmp_path / "jwks.json")])
    assert ok.exit_code == 0, ok.output
    assert "VERIFIED" in ok.output
    bad = rewrite(path, tmp_path / "bad.zip", "ledger.csv", lambda d: d + b"x")
    failed = runner.invoke(cli_app, ["export", "verify", str(bad), "--jwks", str(tmp_path / "jwks.json")])
    assert failed.exit_code == 1
    assert "ledger.csv" in failed.output and "NOT VERIFIED" in failed.output


def test_window_and_row_limits_answer_422_with_a_code(server: LiveServer, tenant: Tenant) -> None:
    with tenant.client() as c:
        r = c.get(EXPORTS + "/parity", params={"start": "2025-01-01", "end": "2026-01-02"})
        assert r.status_code == 422 and r.json()["code"] == "export_window_too_large"
        r = c.get(EXPORTS + "/archive", params={"start": "2026-02-02", "end": "2026-02-01"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_export_window"
        assert c.get(EXPORTS + "/parity", params={"start": "yesterday"}).status_code == 422
        populate(c)
    small = server.settings.model_copy(update={"export_max_rows": 3})
    with thread_server(small, server.backend) as limited, tenant.client() as c:
        c.base_url = httpx.URL(limited.url)
        for artifact in ("parity", "archive"):
            r = c.get(f"{EXPORTS}/{artifact}")
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "export_too_many_rows" and r.json()["file"] == "decisions.csv"
        metrics = c.get("/metrics").text
    assert 'valdrix_ops_enforcement_export_events_total{artifact="archive",outcome="rejected_limit"}' in metrics


def test_members_may_not_export(tenant: Tenant) -> None:
    with tenant.client(tenant.key("viewer")) as c:
        assert c.get(EXPORTS + "/parity").status_code == 403
        assert c.get(EXPORTS + "/archive").status_code == 403


def test_parity_holds_while_the_gate_writes_concurrently(tenant: Tenant, tmp_path: Path) -> None:
    stop = threading.Event()
    written: list[int] = []
    errors: list[str] = []

    def hammer(worker: int) -> None:
        with tenant.client() as c:
            n = 0
            while not stop.is_set():
                r = post(c, "/gate/terraform/preflight", preflight("1", run=f"w{worker}-{n}"))
                if r.status_code != 200:
                    errors.append(r.text)
                n += 1
            written.append(n)

    with tenant.client() as c:
        populate(c)
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            keys = jwks(c)
            for round_ in range(4):
                parity = c.get(EXPORTS + "/parity").json()
                assert parity["parity_ok"] is True, parity
                assert parity["decision_count_db"] == parity["decision_count_exported"]
                assert parity["ledger_count_db"] == parity["ledger_count_exported"]
                path = archive(c, tmp_path / f"r{round_}.zip")
                report = verify(path, keys)
                assert report.ok, problems(report)
                manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
                rows = zipfile.ZipFile(path).read("decisions.csv").decode().count("\r\n") - 1
                assert manifest["counts"]["decisions"]["exported"] == rows
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        final = c.get(EXPORTS + "/parity").json()
    assert not errors, errors[:3]
    assert sum(written) > 0
    assert final["decision_count_exported"] == 4 + sum(written)


def test_empty_window_exports_and_verifies(tenant: Tenant, tmp_path: Path) -> None:
    with tenant.client() as c:
        path = archive(c, tmp_path / "e.zip", start="2020-01-01", end="2020-01-31")
        report = verify(path, jwks(c))
    assert report.ok, problems(report)
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["policy_lineage"] == [] and manifest["computed_context_lineage"] == []
    assert manifest["policy_lineage_sha256"] == "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    assert io.BytesIO(zipfile.ZipFile(path).read("decisions.csv")).read().count(b"\r\n") == 1


def test_archive_holds_floats_postgresql_prints_as_huge_integers(tenant: Tenant, tmp_path: Path) -> None:
    # jsonb stores -5.762416730791998e16 as numeric and prints it -57624167307919980, beyond JCS's integer range:
    # the archive once failed on that cell after its headers were sent, a truncated chunked response.
    metadata = {"delta": -5.762416730791998e16, "big": 1e21, "nested": [{"x": 2.0 ** 60}]}
    with tenant.client() as c:
        r = post(c, "/gate/terraform/preflight", preflight("10", run="f1", metadata=metadata))
        assert r.status_code == 200, r.text
        path = archive(c, tmp_path / "f.zip")
        report = verify(path, jwks(c))
        parity = c.get(EXPORTS + "/parity")
    assert report.ok, problems(report)
    assert parity.status_code == 200 and parity.json()["parity_ok"] is True, parity.text
    decisions = zipfile.ZipFile(path).read("decisions.csv").decode()
    assert '""delta"":-57624167307919980' in decisions and '""big"":1e+21' in decisions, decisions
    engine = make_engine(tenant.settings)  # the gate's own reads of the row hash it (ledger events, replays)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(Decision.request_payload).where(Decision.tenant_id == tenant.id)).scalar_one()
    finally:
        engine.dispose()
    assert {k: stored["metadata"][k] for k in metadata} == metadata and canonical_bytes(stored)


def test_counts_and_rows_come_from_one_snapshot(server: LiveServer, tenant: Tenant) -> None:
    """A decision committed between the snapshot's count and its row read is in neither."""
    engine = make_engine(server.settings)
    params = {"tenant_id": tenant.id, "start_at": datetime(2000, 1, 1, tzinfo=UTC),
              "end_before": datetime(2100, 1, 1, tzinfo=UTC)}
    try:
        with tenant.client() as c:
            populate(c)
            with snapshots.snapshot(engine) as conn:
                counted = conn.execute(streams.DECISIONS.count(), params).scalar_one()
                assert post(c, "/gate/terraform/preflight", preflight("1", run="during")).status_code == 200
                rows = conn.execute(streams.DECISIONS.records(conn.dialect.name).select, params).all()
            with snapshots.snapshot(engine) as conn:
                after = conn.execute(streams.DECISIONS.count(), params).scalar_one()
    finally:
        engine.dispose()
    assert counted == len(rows) == 4
    assert after == 5


def test_the_archive_streams_from_one_snapshot_while_the_gate_writes(server: LiveServer, tenant: Tenant,
                                                                     tmp_path: Path, pool: FormattingPool) -> None:
    """Decisions committed after the first bytes left are in neither the rows nor the counts, and a row changed
    then is exported as it was, though a formatting process reads it (on PostgreSQL, from the shared snapshot);
    cut short, the download cannot verify."""
    engine = make_engine(server.settings)
    win = service.window(None, None, datetime.now(UTC).date())
    signer = KeyRing.from_settings(server.settings)
    changed = update(ApprovalRequest).where(ApprovalRequest.tenant_id == tenant.id).values(
        review_notes="changed after the snapshot")
    try:
        with tenant.client() as c:
            populate(c)
            chunks = service.archive(engine, tenant.id, win, max_rows=1000, signer=signer, pool=pool)
            first = next(chunks)
            assert first.startswith(b"PK\x03\x04") and b"decisions.csv" in first
            for run in ("late-1", "late-2"):
                assert post(c, "/gate/terraform/preflight", preflight("1", run=run)).status_code == 200
            with engine.begin() as conn:
                assert conn.execute(changed).rowcount >= 1
            data = first + b"".join(chunks)
            keys = jwks(c)
            assert c.get(EXPORTS + "/parity").json()["decision_count_db"] == 6
        later = b"".join(service.archive(engine, tenant.id, win, max_rows=1000, signer=signer, pool=pool))
    finally:
        engine.dispose()
    assert b"changed after the snapshot" not in zipfile.ZipFile(io.BytesIO(data)).read("approvals.csv")
    assert b"changed after the snapshot" in zipfile.ZipFile(io.BytesIO(later)).read("approvals.csv")
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    report = verify(path, keys)
    assert report.ok, problems(report)
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["counts"]["decisions"] == {"database": 4, "exported": 4}
    for cut in (len(data) - 1, len(data) // 2, len(first)):
        path.write_bytes(data[:cut])
        report = verify(path, keys)
        assert not report.ok and "cannot open" in problems(report)


def test_cells_are_the_same_bytes_on_both_backends(tenant: Tenant, tmp_path: Path) -> None:
    """One stored decision with awkward values gives this exact decisions.csv record on SQLite and PostgreSQL."""
    decision_id, creator = uuid.UUID(int=0xABCDEF), uuid.UUID(int=0x1234)
    at = datetime(2021, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    with tenant.client() as c:
        policy = c.get("/api/v1/enforcement/policies").json()
    engine = make_engine(tenant.settings)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Decision), [{
                "id": decision_id, "tenant_id": tenant.id, "source": "terraform", "environment": "prod",
                "project_id": "-p,1", "action": "terraform.apply", "resource_reference": 'mod "é"\nx',
                "decision": "ALLOW", "reason_codes": [], "mode": "soft", "fail_safe": False, "dry_run": True,
                "policy_version": policy["version"], "policy_sha256": policy["sha256"], "request_fingerprint": "f" * 64,
                "idempotency_key": "k1", "estimated_monthly_delta_usd": Decimal("12345.6789"),
                "estimated_hourly_delta_usd": Decimal("0.000001"), "budget_scope": None,
                "reserved_allocation_usd": Decimal("0.5"), "reserved_credit_usd": Decimal(0),
                "reservation_active": True, "approval_request_id": None, "created_by": creator,
                "request_payload": {"z": 1, "a": ["é", 1.0, 1e-7]}, "response_payload": {},
                "computed_context": {"mode": "soft", "n": 2**53 - 1}, **seal({"mode": "soft", "n": 2**53 - 1}),
                "created_at": at, "updated_at": at}])
    finally:
        engine.dispose()
    with tenant.client() as c:
        path = archive(c, tmp_path / "a.zip", start="2021-03-04", end="2021-03-04")
    record = zipfile.ZipFile(path).read("decisions.csv").decode("utf-8").split("\r\n", 1)[1]
    assert record == (
        f"00000000-0000-0000-0000-000000abcdef,2021-03-04T05:06:07.000089+00:00,2021-03-04T05:06:07.000089+00:00,"
        f"terraform,prod,\"'-p,1\",terraform.apply,\"mod \"\"é\"\"\nx\",ALLOW,[],soft,false,true,{policy['version']},"
        f"valdrix.enforcement.policy.v1,{policy['sha256']},{'f' * 64},k1,12345.6789,0.000001,,0.5000,0.0000,true,,"
        f"00000000-0000-0000-0000-000000001234,\"{{\"\"mode\"\":\"\"soft\"\",\"\"n\"\":9007199254740991}}\","
        f"\"{{\"\"a\"\":[\"\"é\"\",1,1e-7],\"\"z\"\":1}}\",{{}}\r\n")


def standard_tools_script() -> str:
    """The shell block of docs/exports.md that verifies an archive with standard tools only."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "exports.md").read_text(encoding="utf-8")
    block = text.split("<!-- standard-tools-verification -->", 1)[1]
    return block.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n"


def test_the_documented_standard_tools_verify_a_real_archive_and_reject_tampering(tenant: Tenant,
                                                                                  tmp_path: Path) -> None:
    for tool in ("unzip", "openssl", "sha256sum", "base64", "python3"):
        assert shutil.which(tool), f"{tool} is needed (make test installs unzip and openssl)"
    with tenant.client() as c:
        populate(c)
        original = archive(c, tmp_path / "a.zip")
        keys = jwks(c)
    cases = {
        "original": (original, 0),
        "member": (rewrite(original, tmp_path / "m.zip", "ledger.csv",
                           lambda d: d.replace(b"decision_created", b"decision_cReated", 1)), 1),
        "manifest": (rewrite(original, tmp_path / "s.zip", "manifest.json",
                             lambda d: _flip_digit(d, b'"decision_count":')), 1),
    }
    (tmp_path / "cut.zip").write_bytes(original.read_bytes()[:-100])
    cases["cut"] = (tmp_path / "cut.zip", 9)
    outputs = {}
    for name, (source, expected) in cases.items():
        work = tmp_path / name
        work.mkdir()
        shutil.copy(source, work / "export.zip")
        (work / "jwks.json").write_text(json.dumps(keys))
        (work / "verify.sh").write_text(standard_tools_script())
        done = subprocess.run(["bash", "verify.sh"], cwd=work, capture_output=True, text=True, timeout=60)
        outputs[name] = done.stdout + done.stderr
        assert (done.returncode == 0) == (expected == 0), f"{name}: {outputs[name]}"
    assert "Signature Verified Successfully" in outputs["original"]
    assert "ledger.csv: OK" in outputs["original"] and "lineage hashes: OK" in outputs["original"]
    assert "ledger.csv: FAILED" in outputs["member"]
    assert "Signature Verification Failure" in outputs["manifest"]


def test_a_stream_past_the_row_limit_ends_the_archive_unverifiable(server: LiveServer, tenant: Tenant,
                                                                 tmp_path: Path, pool: FormattingPool) -> None:
    """Decisions within the limit start the archive at once; a ledger beyond it ends it with an error before the
    manifest, so the partial download cannot verify and the HTTP client sees a failed transfer."""
    engine = make_engine(server.settings)
    win = service.window(None, None, datetime.now(UTC).date())
    try:
        with tenant.client() as c:
            populate(c)
            keys = jwks(c)
        with engine.begin() as conn:
            table = LedgerEntry.__table__
            row = dict(conn.execute(select(table).where(table.c.tenant_id == tenant.id)).mappings().first() or {})
            row.pop("seq")
            conn.execute(insert(table), [{**row, "id": uuid.uuid4(), "event": "decision_created"}])
        chunks = service.archive(engine, tenant.id, win, max_rows=4, signer=KeyRing.from_settings(server.settings),
                                 pool=pool)
        data = b""
        with pytest.raises(InvalidInput) as refused:
            for chunk in chunks:
                data += chunk
        assert refused.value.code == "export_too_many_rows" and refused.value.extra["file"] == "ledger.csv"
    finally:
        engine.dispose()
    small = server.settings.model_copy(update={"export_max_rows": 4})
    with thread_server(small, server.backend) as limited, tenant.client() as c:
        c.base_url = httpx.URL(limited.url)
        refusals = rejected_archives(c)
        with pytest.raises(httpx.TransportError):  # the response ends without its last chunk
            c.get(EXPORTS + "/archive")
        assert rejected_archives(c) == refusals + 1
    assert data.startswith(b"PK\x03\x04") and b"manifest.json" not in data
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    assert "cannot open" in problems(verify(path, keys))


def rejected_archives(client: httpx.Client) -> float:
    series = 'valdrix_ops_enforcement_export_events_total{artifact="archive",outcome="rejected_limit"} '
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(series)]
    return float(lines[0].removeprefix(series)) if lines else 0.0


def test_an_archive_closed_mid_stream_releases_its_threads_and_snapshot(server: LiveServer, tenant: Tenant,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       pool: FormattingPool) -> None:
    """A client gone mid-stream: closing the iterator (as the server does) waits for the batch being read and
    the one being deflated, then ends the snapshot."""
    monkeypatch.setattr(service, "BATCH_ROWS", 1)
    monkeypatch.setattr(service, "CHUNK_BYTES", 1)
    engine = make_engine(server.settings)
    win = service.window(None, None, datetime.now(UTC).date())
    try:
        with tenant.client() as c:
            populate(c)
        before = {t.name for t in threading.enumerate()}
        chunks = service.archive(engine, tenant.id, win, max_rows=1000, signer=KeyRing.from_settings(server.settings),
                                 pool=pool)
        for _ in range(3):  # the header, then two single-row batches: a read and a deflate are under way
            next(chunks)
        # The snapshot's connection, and on PostgreSQL a second one reading the streams' keys.
        assert engine.pool.checkedout() == (2 if server.backend == "postgresql" else 1)
        chunks.close()
        assert engine.pool.checkedout() == 0
        assert not {t.name for t in threading.enumerate() if t.is_alive()} - before
    finally:
        engine.dispose()


def test_formatted_in_processes_or_in_the_request_thread_an_archive_holds_the_same_bytes(
        server: LiveServer, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, pool: FormattingPool) -> None:
    """Single-row batches shared between a started process and the request's thread, against every batch in the
    request's thread: the same members, digests and lineages."""
    monkeypatch.setattr(service, "BATCH_ROWS", 1)
    engine = make_engine(server.settings)
    win = service.window(None, None, datetime.now(UTC).date())
    signer = KeyRing.from_settings(server.settings)
    here = FormattingPool(0)
    try:
        with tenant.client() as c:
            populate(c)
        archives = [zipfile.ZipFile(io.BytesIO(b"".join(service.archive(engine, tenant.id, win, max_rows=1000,
                                                                        signer=signer, pool=formatting))))
                    for formatting in (pool, here)]
    finally:
        engine.dispose()
    shared, alone = archives
    for name in ("decisions.csv", "approvals.csv", "ledger.csv", "policies.json"):
        assert shared.read(name) == alone.read(name)
    assert shared.read("decisions.csv").count(b"\r\n") == 5  # the header and four decisions: four batches
    manifests = [json.loads(a.read("manifest.json")) for a in archives]
    for key in ("files", "counts", "policy_lineage_sha256", "computed_context_lineage_sha256"):
        assert manifests[0][key] == manifests[1][key]
