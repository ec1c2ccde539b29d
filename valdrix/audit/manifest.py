"""The export manifest and the two lineages, computed the same way by the exporter and the offline verifier.

Policy lineage: one entry per (policy_version, policy_schema_version, policy_sha256) cited by the exported
decisions, with its `decision_count`; sorted by version, then hash.

Computed-context lineage: decisions grouped by the context version and the context fields that select the
engine's branch — `mode` (what a violation becomes), `mode_scope` (which matrix cell chose it), `budget_basis`
(how headroom is measured), `risk_class` (drives approval routing), `fail_safe_trigger` (evaluation replaced
by the fail-safe answer) and `budget_configured` (a budget scope applied, else `no_budget_configured`).
Amounts and timestamps are not grouping keys, as they differ for nearly every decision; instead each group
carries `contexts_sha256`, the SHA-256 over the lines `<decision_id> <sha256 of the computed_context cell>\\n`
of its decisions in decisions.csv order (the cell is the context's canonical JSON, so its hash is
`sha256_hex(computed_context)`), so every byte of every decision's full context is bound by the lineage.
Missing fields are grouped as "". Entries are sorted by their key fields.

Both lineage hashes are `valdrix.canonical.sha256_hex(list)` under the manifest's `canonicalization` scheme.
The manifest is canonical JSON under that scheme; its bytes are what the Ed25519 signature covers, and it holds
no wall-clock time, so the same window over the same data gives a byte-identical manifest and (Ed25519 being
deterministic) signature. Manifests of `valdrix.audit.export_manifest.v1` (before RFC 8785) have no
`canonicalization` field: they are in the legacy scheme, which the verifier still accepts.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from valdrix.canonical import LEGACY_SCHEME, SCHEME, Scheme, canonical_bytes, sha256_hex
from valdrix.decisions.lineage import CONTEXT_KEYS, Group, context_entry

SCHEMA_VERSION = "valdrix.audit.export_manifest.v2"
SIGNATURE_ALGORITHM = "Ed25519"
FILES = ("decisions.csv", "approvals.csv", "ledger.csv", "policies.json")
LINEAGE_FIELDS = ("policy_lineage_sha256", "policy_lineage", "computed_context_lineage_sha256",
                  "computed_context_lineage")


class Lineage:
    """Accumulates both lineages one decision at a time, in export order (memory grows with groups, not rows)."""

    def __init__(self) -> None:
        self._policies: Counter[tuple[int, str, str]] = Counter()
        self._contexts: dict[tuple[str, ...], list[Any]] = {}

    def add(self, decision_id: str, policy_version: int, policy_schema_version: str, policy_sha256: str,
            context_cell: str) -> None:
        """Count one decision into both lineages; `context_cell` is its canonical computed_context JSON.

        Raise ValueError when the cell is not JSON.
        """
        self._policies[(policy_version, policy_sha256, policy_schema_version)] += 1
        group, context_sha256 = context_entry(context_cell, orjson.loads(context_cell))
        self._count(group, 1, f"{decision_id} {context_sha256}\n".encode("ascii"))

    def merge(self, part: LineagePart) -> None:
        """Count in the decisions of `part`, which follow those counted so far."""
        self._policies.update(part.policies)
        for group, (count, lines) in part.groups().items():
            self._count(group, count, lines)

    def _count(self, group: tuple[str, ...], decisions: int, lines: bytes) -> None:
        entry = self._contexts.get(group)
        if entry is None:
            entry = self._contexts[group] = [0, hashlib.sha256()]
        entry[0] += decisions
        entry[1].update(lines)

    def referenced_policies(self) -> list[tuple[int, str]]:
        """Return the (version, sha256) pairs cited, sorted."""
        return sorted({(version, sha) for version, sha, _ in self._policies})

    def policy_lineage(self) -> list[dict[str, Any]]:
        """Return the policy lineage entries, sorted by version then hash."""
        return [{"policy_version": version, "policy_schema_version": schema, "policy_sha256": sha,
                 "decision_count": count}
                for (version, sha, schema), count in sorted(self._policies.items())]

    def context_lineage(self) -> list[dict[str, Any]]:
        """Return the computed-context lineage entries, sorted by their key fields."""
        entries = []
        for key, (count, digest) in sorted(self._contexts.items()):
            entry: dict[str, Any] = dict(zip(CONTEXT_KEYS, key[:-1], strict=True))
            entry.update(budget_configured=key[-1] == "true", decision_count=count, contexts_sha256=digest.hexdigest())
            entries.append(entry)
        return entries


class LineagePart:
    """The lineage of a run of consecutive decisions, built where they are formatted (possibly another process)
    and merged into the export's Lineage in order: policy counts, and per context group its count and lines."""

    def __init__(self) -> None:
        self.policies: Counter[tuple[int, str, str]] = Counter()
        self._groups: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}

    def add_entry(self, decision_id: str, policy_version: int, policy_schema_version: str, policy_sha256: str,
                  group: Group, context_sha256: str) -> None:
        """Count one decision given its computed-context lineage entry (as `context_entry` returns it)."""
        self.policies[(policy_version, policy_sha256, policy_schema_version)] += 1
        entry = self._groups.get(group)
        if entry is None:
            entry = self._groups[group] = ([0], [])
        entry[0][0] += 1
        entry[1].append(f"{decision_id} {context_sha256}\n")

    def groups(self) -> dict[tuple[str, ...], tuple[int, bytes]]:
        """Return each context group's decision count and lines, in decision order."""
        return {group: (count, "".join(lines).encode("ascii")) for group, ([count], lines) in self._groups.items()}

    # Pickled (to leave a formatting process) as one text per group rather than a string per decision.
    def __getstate__(self) -> tuple[Counter[tuple[int, str, str]], dict[tuple[str, ...], tuple[int, str]]]:
        return self.policies, {group: (count, "".join(lines)) for group, ([count], lines) in self._groups.items()}

    def __setstate__(self, state: tuple[Counter[tuple[int, str, str]], dict[tuple[str, ...], tuple[int, str]]]) -> None:
        self.policies, groups = state
        self._groups = {group: ([count], [lines]) for group, (count, lines) in groups.items()}


@dataclass(frozen=True)
class FileDigest:
    """What the manifest records about one archive member."""

    name: str
    sha256: str
    size: int
    rows: int

    def as_json(self) -> dict[str, Any]:
        """Return the manifest form."""
        return {"sha256": self.sha256, "bytes": self.size, "rows": self.rows}


def build(*, tenant_id: uuid.UUID, window: dict[str, str], files: list[FileDigest], counts: dict[str, dict[str, int]],
          lineage: Lineage, kid: str, csv_dialect: str) -> dict[str, Any]:
    """Return the manifest: window, per-file digests, counts, parity, both lineages and the signing key."""
    policy_lineage = lineage.policy_lineage()
    context_lineage = lineage.context_lineage()
    return {
        "schema_version": SCHEMA_VERSION,
        "canonicalization": SCHEME,
        "tenant_id": str(tenant_id),
        "window": window,
        "csv_dialect": csv_dialect,
        "files": {f.name: f.as_json() for f in files},
        "counts": counts,
        "parity_ok": all(c["database"] == c["exported"] for c in counts.values()),
        "policy_lineage": policy_lineage,
        "policy_lineage_sha256": sha256_hex(policy_lineage),
        "computed_context_lineage": context_lineage,
        "computed_context_lineage_sha256": sha256_hex(context_lineage),
        "signature": {"algorithm": SIGNATURE_ALGORITHM, "kid": kid},
    }


def scheme_of(manifest: dict[str, Any]) -> Scheme:
    """Return the canonical-JSON scheme a manifest is written in (legacy when it names none)."""
    return SCHEME if manifest.get("canonicalization") == SCHEME else LEGACY_SCHEME


def encode(manifest: dict[str, Any]) -> bytes:
    """Return the signed byte form of a manifest (its canonical JSON under its own scheme)."""
    return canonical_bytes(manifest, scheme_of(manifest))
