"""What one decision contributes to the computed-context lineage of audit exports, fixed when it is written.

A decision's lineage entry is its group (the context version and the context fields that select the engine's
branch, see `valdrix.audit.manifest`) and the SHA-256 of its computed context's canonical JSON. Both are
stored with the decision, in the same transaction (`context_lineage_group`, `computed_context_sha256`), so a
parity check reads them instead of canonicalising every context of a window again; an export still computes
them from the cells it writes, so a context changed after it was written makes parity and the archive disagree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from valdrix.canonical import canonical_bytes

CONTEXT_KEYS = ("context_version", "mode", "mode_scope", "budget_basis", "risk_class", "fail_safe_trigger")
Group = tuple[str, ...]

_NOTHING: dict[str, Any] = {}
# Exact types, as `type(v) in (dict, list)` tests them.
_CONTAINERS = frozenset((dict, list))
_sha256 = hashlib.sha256


def context_entry(context_cell: str, context: Any) -> tuple[Group, str]:
    """Return a decision's computed-context lineage group and the SHA-256 (hex) of its context cell, given the
    value the cell denotes (as parsed from any text of it)."""
    return context_group(context_cell, context), _sha256(context_cell.encode("utf-8")).hexdigest()


def context_group(context_cell: str, context: Any) -> Group:
    """Return a decision's computed-context lineage group, given its context cell and the value it denotes.

    A grouping value that is an array or object is read again from the cell: its text form (`str`) follows the
    member order, which is the cell's.
    """
    get = context.get if isinstance(context, dict) else _NOTHING.get
    # map and frozenset tests run in C: this runs once per exported decision, on export and on verification.
    values = tuple(map(get, CONTEXT_KEYS))
    if not _CONTAINERS.isdisjoint(map(type, values)):
        reread = orjson.loads(context_cell)
        get = reread.get if isinstance(reread, dict) else _NOTHING.get
        values = tuple(map(get, CONTEXT_KEYS))
    return (*["" if v is None else str(v) for v in values], "true" if get("budget_scope") is not None else "false")


def seal(context: dict[str, Any]) -> dict[str, str]:
    """Return the lineage columns of a decision about to be written with `context` as its computed context.

    The entry is computed from the context's canonical JSON and the value that JSON denotes, exactly as an export
    computes it from the cell it writes, whatever Python types the context holds.
    """
    cell = canonical_bytes(context).decode("utf-8")
    group, digest = context_entry(cell, orjson.loads(cell))
    return {"context_lineage_group": group_text(group), "computed_context_sha256": digest}


def group_text(group: Group) -> str:
    """Return the stored form of a group: its values as a canonical JSON array."""
    return canonical_bytes(list(group)).decode("utf-8")


def group_of(text: str) -> Group:
    """Return the group stored as `text`.

    A row written by something other than Valdrix may have none (on SQLite the columns have a default, see
    migration 0013): it counts in the group of empty values, and its empty digest makes the lineage differ from
    the one an export computes from its cells.
    """
    try:
        group = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _NO_GROUP
    if not isinstance(group, list) or len(group) != len(_NO_GROUP) or not all(isinstance(v, str) for v in group):
        return _NO_GROUP
    return tuple(group)


_NO_GROUP: Group = (*[""] * len(CONTEXT_KEYS), "false")
