"""Lineages: order-independent grouping, sorted entries, digests binding every context; canonical manifest."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest

from valdrix.audit.manifest import FileDigest, Lineage, LineagePart, build, encode
from valdrix.canonical import canonical_json, canonical_json_and_value_of_text, canonical_json_of_text, sha256_hex
from valdrix.decisions.lineage import context_group


def context(**extra: Any) -> str:
    """A computed_context cell: the context's canonical JSON."""
    return canonical_json({"context_version": "v1", "mode": "soft", "mode_scope": "terraform:prod",
                           "budget_basis": "reservations", "risk_class": "low", "budget_scope": "payments",
                           "scope_headroom_usd": "10.0000", **extra})


def test_policy_lineage_counts_and_sorts() -> None:
    lineage = Lineage()
    for version, sha in ((2, "b" * 64), (1, "a" * 64), (2, "b" * 64), (3, "a" * 64)):
        lineage.add(str(uuid.uuid4()), version, "schema.v1", sha, context())
    assert lineage.policy_lineage() == [
        {"policy_version": 1, "policy_schema_version": "schema.v1", "policy_sha256": "a" * 64, "decision_count": 1},
        {"policy_version": 2, "policy_schema_version": "schema.v1", "policy_sha256": "b" * 64, "decision_count": 2},
        {"policy_version": 3, "policy_schema_version": "schema.v1", "policy_sha256": "a" * 64, "decision_count": 1},
    ]
    assert lineage.referenced_policies() == [(1, "a" * 64), (2, "b" * 64), (3, "a" * 64)]


def test_context_lineage_groups_by_deciding_fields_and_digests_every_context() -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(4)]
    lineage = Lineage()
    lineage.add(ids[0], 1, "s", "a" * 64, context())
    lineage.add(ids[1], 1, "s", "a" * 64, context(scope_headroom_usd="5.0000"))
    lineage.add(ids[2], 1, "s", "a" * 64, context(mode="hard", fail_safe_trigger="gate_timeout"))
    lineage.add(ids[3], 1, "s", "a" * 64, context(budget_scope=None))
    entries = lineage.context_lineage()
    assert [(e["mode"], e["fail_safe_trigger"], e["budget_configured"], e["decision_count"]) for e in entries] == [
        ("hard", "gate_timeout", True, 1), ("soft", "", False, 1), ("soft", "", True, 2)]
    changed = Lineage()
    changed.add(ids[0], 1, "s", "a" * 64, context())
    changed.add(ids[1], 1, "s", "a" * 64, context(scope_headroom_usd="5.0001"))
    assert changed.context_lineage()[0]["contexts_sha256"] != entries[2]["contexts_sha256"]


def test_empty_lineage_hash_matches_the_reference_vector() -> None:
    assert sha256_hex(Lineage().policy_lineage()) == "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"


def test_manifest_is_canonical_and_deterministic() -> None:
    def make() -> bytes:
        lineage = Lineage()
        lineage.add(str(uuid.UUID(int=7)), 1, "s", "a" * 64, context())
        manifest = build(tenant_id=uuid.UUID(int=1), window={"start": "2026-01-01", "end": "2026-01-31"},
                         files=[FileDigest("decisions.csv", "c" * 64, 10, 1)],
                         counts={"decisions": {"database": 1, "exported": 1}}, lineage=lineage, kid="k1",
                         csv_dialect="d")
        assert manifest["parity_ok"] is True
        assert manifest["policy_lineage_sha256"] == sha256_hex(manifest["policy_lineage"])
        return encode(manifest)

    assert make() == make()
    assert b"generated_at" not in make()
    assert b'"canonicalization":"rfc8785"' in make()


def test_context_digest_is_the_sha256_of_the_canonical_context() -> None:
    lineage = Lineage()
    lineage.add("d1", 1, "s", "a" * 64, context())
    expected = hashlib.sha256(f"d1 {sha256_hex(json.loads(context()))}\n".encode()).hexdigest()
    assert lineage.context_lineage()[0]["contexts_sha256"] == expected


@pytest.mark.parametrize("stored", [
    '{"mode": "soft", "risk_class": "low", "budget_scope": "p", "x": [1, 2]}',
    '{"mode": {"z": 1, "a": [2, {"y": 3, "b": 4}]}, "risk_class": ["b", "a"]}',  # grouping values that are containers
    '{"mode": 1.5, "context_version": 7, "fail_safe_trigger": true}', "[1]", "null",
])
def test_a_context_parsed_once_by_the_exporter_groups_as_the_verifier_parses_it(stored: str) -> None:
    text, value = canonical_json_and_value_of_text(stored)
    assert text == canonical_json_of_text(stored)
    part, exporter, verifier = LineagePart(), Lineage(), Lineage()
    part.add_entry("d1", 1, "s", "h", context_group(text, value), hashlib.sha256(text.encode()).hexdigest())
    exporter.merge(part)
    verifier.add("d1", 1, "s", "h", text)
    assert exporter.context_lineage() == verifier.context_lineage()
    assert exporter.policy_lineage() == verifier.policy_lineage()
