"""Response and stored-document JSON: compact UTF-8, and every JSON document a caller can send round-trips."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valdrix.canonical import canonical_json, loads_stored
from valdrix.jsonio import JSONResponse, dumps, dumps_stored, loads

# Everything `json.loads` can hand us from a request body, integers of any size included.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@given(JSON_VALUES)
def test_every_request_document_round_trips(value: Any) -> None:
    assert json.loads(dumps(value)) == value


@given(JSON_VALUES)
def test_a_stored_document_is_its_canonical_json_where_it_has_one_and_reads_back_as_written(value: Any) -> None:
    stored = dumps_stored(value)
    assert loads_stored(stored) == value
    try:
        canonical = canonical_json(value)
    except ValueError:  # an integer beyond RFC 8785's range: compact JSON
        assert stored == dumps(value).decode()
    else:
        assert stored == canonical


def test_stored_documents_sort_members_and_print_numbers_as_rfc_8785() -> None:
    assert dumps_stored({"z": 1, "a": [1.0, 1e21, -5.762416730791998e16], "é": None}) == (
        '{"a":[1,1e+21,-57624167307919980],"z":1,"é":null}')
    assert dumps_stored({"b": 2**60, "a": 1}) == '{"b":1152921504606846976,"a":1}'
    with pytest.raises(TypeError):
        dumps_stored({"x": object()})


def test_compact_utf8_and_beyond_64_bit_integers() -> None:
    assert dumps({"é": "ü", "n": [1, None]}) == '{"é":"ü","n":[1,null]}'.encode()
    assert dumps({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert dumps({1: "a"}) == b'{"1":"a"}'


def test_refuses_what_json_cannot_represent() -> None:
    with pytest.raises(TypeError):
        dumps({"x": Decimal("1.5")})


def test_response_renders_with_dumps() -> None:
    response = JSONResponse({"decision": "ALLOW", "metadata": {"owner": "zoë", "id": 2**65}}, status_code=201)
    assert json.loads(response.body) == {"decision": "ALLOW", "metadata": {"owner": "zoë", "id": 2**65}}
    assert response.headers["content-type"] == "application/json"


@given(JSON_VALUES)
def test_loads_reads_every_document_as_the_standard_library_does(value: Any) -> None:
    text = dumps(value)
    assert loads(text) == json.loads(text) and loads(text.decode()) == json.loads(text)


def test_loads_keeps_integers_beyond_64_bits_exact() -> None:
    assert loads(b'{"n": 123456789012345678901234567890, "m": [18446744073709551615]}') == {
        "n": 123456789012345678901234567890, "m": [18446744073709551615]}


def test_a_stored_nan_or_infinity_is_null_as_orjson_writes_it() -> None:
    assert dumps_stored({"n": float("nan"), "i": float("-inf"), "a": 1}) == '{"n":null,"i":null,"a":1}'
