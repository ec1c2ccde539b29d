"""A decision's stored lineage entry is the one an export computes from the cell it writes for its context."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from valdrix.canonical import canonical_json_and_value_of_text
from valdrix.decisions.lineage import CONTEXT_KEYS, context_entry, group_of, group_text, seal

TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=8)
CONTEXTS = st.fixed_dictionaries({}, optional={key: VALUES for key in (*CONTEXT_KEYS, "budget_scope")}).flatmap(
    lambda known: st.dictionaries(TEXT, VALUES, max_size=4).map(lambda extra: {**extra, **known}))


@given(CONTEXTS)
def test_the_sealed_entry_is_what_an_export_computes_from_the_stored_context(context: dict[str, Any]) -> None:
    stored = json.dumps(context)  # as the SQLite driver stores it (PostgreSQL: tests/integration/test_exports.py)
    entry = context_entry(*canonical_json_and_value_of_text(stored))
    assert seal(context) == {"context_lineage_group": group_text(entry[0]), "computed_context_sha256": entry[1]}
    assert group_of(group_text(entry[0])) == entry[0]


def test_the_group_names_the_branch_fields_and_whether_a_budget_applied() -> None:
    context = {"context_version": "v2", "mode": "hard", "mode_scope": "terraform:prod", "budget_basis": "reservations",
               "risk_class": "high", "fail_safe_trigger": None, "budget_scope": "payments", "generated_at": "t"}
    group = group_of(seal(context)["context_lineage_group"])
    assert group == ("v2", "hard", "terraform:prod", "reservations", "high", "", "true")
    assert group_of(seal({**context, "budget_scope": None})["context_lineage_group"])[-1] == "false"


def test_a_row_without_a_stored_group_counts_in_the_empty_group() -> None:
    for text in ("", "[", '["a"]', "{}", "[1, 2, 3, 4, 5, 6, 7]"):
        assert group_of(text) == ("", "", "", "", "", "", "false")
