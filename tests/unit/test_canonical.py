"""Canonical JSON: RFC 8785 for every hash, the legacy form still accepted for stored hashes."""

from __future__ import annotations

import hashlib
import json
import math
import string
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from valdrix.canonical import (
    LEGACY_SCHEME,
    Document,
    canonical_bytes,
    canonical_json,
    canonical_json_of_text,
    digests,
    is_digest_of,
    loads_stored,
    sha256_hex,
)


def test_sorted_compact_decimal_and_datetime_utf8() -> None:
    value = {"b": Decimal("1.2300"), "a": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))],
             "c": uuid.UUID(int=1), "é": "ü"}
    assert canonical_json(value) == (
        '{"a":["2026-01-02T01:04:05+00:00"],"b":"1.2300","c":"00000000-0000-0000-0000-000000000001","é":"ü"}')
    assert canonical_json(value, LEGACY_SCHEME).endswith('"\\u00e9":"\\u00fc"}')
    assert sha256_hex({"x": 1, "y": 2}) == sha256_hex({"y": 2, "x": 1})


def test_rfc8785_numbers_and_utf16_key_order() -> None:
    # RFC 8785 §3.2.2.3 number forms and §3.2.3 ordering by UTF-16 code units (U+1F600 sorts before U+E000).
    assert canonical_bytes([1.0, 1e16, 1e-7, 1e21, -0.0, 0.1]) == b"[1,10000000000000000,1e-7,1e+21,0,0.1]"
    assert canonical_bytes({"\ue000": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ue000":1}'.encode()
    assert canonical_bytes({"\x7f": "\x00\u2028"}) == b'{"\x7f":"\\u0000\xe2\x80\xa8"}'


def test_rejects_non_json_values() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": object()})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        canonical_json({"x": 2**53})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@given(json_values)
def test_every_json_value_is_what_the_rfc8785_library_prints(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


ascii_text = st.text(alphabet=string.printable)
stored_domain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | ascii_text
    | st.decimals(allow_nan=False, allow_infinity=False, places=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ascii_text, inner, max_size=4), max_leaves=20)


@given(stored_domain)
def test_legacy_form_is_byte_identical_on_ascii_text_integers_and_decimal_strings(value: Any) -> None:
    # The domain of the hashes stored before RFC 8785 (policy documents, request fingerprints of ASCII
    # requests): their stored hashes are unchanged, so nothing needs rehashing.
    assert canonical_bytes(value) == canonical_bytes(value, LEGACY_SCHEME)
    assert digests(value) == (sha256_hex(value),)


def test_a_hash_stored_before_rfc8785_still_matches_its_value() -> None:
    value = {"resource_reference": "module.café", "metadata": {"ratio": 1.0}}
    legacy = sha256_hex(value, LEGACY_SCHEME)
    assert legacy != sha256_hex(value)
    assert digests(value) == (sha256_hex(value), legacy)
    assert is_digest_of(legacy, value) and is_digest_of(sha256_hex(value).upper(), value)
    assert not is_digest_of(sha256_hex({"other": 1}), value)


@given(json_values)
def test_canonical_json_of_text_is_canonical_json_of_the_parsed_text(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert canonical_json_of_text(text) == canonical_json(json.loads(text))


# What a database hands back: every JSON type, any text (high planes, surrogate pairs, controls), integers at and
# beyond the JCS and 64-bit ranges, floats, in both ensure_ascii forms and PostgreSQL's `", "`/`": "` layout.
stored_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([2**53 - 1, -(2**53) + 1, 2**53, 2**64])
    | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1.0, -0.0, 1e16, 1e21, 1e-7, 5e-324])
    | st.text() | st.text(alphabet="a:,[1.5e\ue000\U0001f600"),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text() | st.text(alphabet="a\ue000\U0001f600", max_size=2), inner, max_size=4), max_leaves=20)


@given(stored_values)
def test_stored_text_canonicalises_to_the_rfc8785_librarys_bytes(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, separators=(",", ":"))):
        try:
            expected = rfc8785.dumps(loads_stored(text)).decode("utf-8")
        except rfc8785.CanonicalizationError:
            with pytest.raises(ValueError):
                canonical_json_of_text(text)
            continue
        assert canonical_json_of_text(text) == expected
        assert canonical_json_of_text(text.encode("utf-8")) == expected


@pytest.mark.parametrize(("text", "canonical"), [
    ("1.0", "1"), ("1E16", "10000000000000000"), ('{"a": 1.0}', '{"a":1}'), ("[2, 1.0]", "[2,1]"),
    ('{"a": [1.0]}', '{"a":[1]}'), ('{"t": "00:00:00.5", "n": 2}', '{"n":2,"t":"00:00:00.5"}'),
    ('{"\\ue000": 1, "\\ud83d\\ude00": 2}', '{"\U0001f600":2,"\ue000":1}'), ("18446744073709551616", None),
])
def test_stored_text_with_floats_or_high_planes_takes_the_exact_path(text: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(ValueError):
            canonical_json_of_text(text)
    else:
        assert canonical_json_of_text(text) == canonical == rfc8785.dumps(json.loads(text)).decode()


@pytest.mark.parametrize("number", [-5.762416730791998e16, 1e17, 2.0**60, 1e21, -1.23e30, 1.7976931348623157e308])
def test_a_stored_float_printed_as_an_integer_literal_reads_as_the_float(number: float) -> None:
    # PostgreSQL's jsonb keeps numbers as `numeric` and prints -5.762416730791998e16 as -57624167307919980:
    # the export reads that text back and must give the float's canonical form, not refuse a huge integer.
    literal = str(int(Decimal(repr(number))))
    assert canonical_json_of_text(f'{{"x": {literal}, "y": [1]}}') == canonical_json({"x": number, "y": [1]})
    assert canonical_json_of_text(literal.encode()) == canonical_json(number)


@pytest.mark.parametrize("literal", ["9007199254740993", "-57624167307919984", "1" + "0" * 400])
def test_an_integer_beyond_the_jcs_range_that_no_float_prints_is_still_refused(literal: str) -> None:
    with pytest.raises(ValueError, match="not canonically serialisable"):
        canonical_json_of_text(f'{{"x": {literal}}}')


def test_stored_json_reads_such_literals_as_floats_and_leaves_the_rest() -> None:
    value = loads_stored(b'{"a": -57624167307919980, "b": 9007199254740991, "c": 1.5, "d": "12345678901234567"}')
    assert value == {"a": -5.762416730791998e16, "b": 9007199254740991, "c": 1.5, "d": "12345678901234567"}
    assert type(value["a"]) is float and type(value["b"]) is int
    assert type(loads_stored("9007199254740993")) is int  # no float prints so: left as read, refused when hashed


def test_stored_json_only_the_standard_library_reads_is_still_read() -> None:
    # What `json.dumps` wrote into SQLite's JSON columns before documents were stored canonical.
    value = loads_stored(json.dumps({"n": float("nan"), "s": "\ud800", "i": float("inf")}))
    assert math.isnan(value["n"]) and value["s"] == "\ud800" and value["i"] == float("inf")
    with pytest.raises(ValueError):
        loads_stored("{not json")


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_a_document_is_canonicalised_once_and_hashes_and_nests_as_the_plain_object(value: dict[str, Any]) -> None:
    document = Document(value)
    assert document == value and document.canonical == canonical_bytes(value)
    assert canonical_bytes({"d": [document]}) == canonical_bytes({"d": [value]})
    assert digests(document) == digests(value)  # the legacy form is computed, not taken from the document


def test_a_documents_hash_and_stored_text_use_the_form_computed_when_it_was_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from valdrix import canonical, jsonio
    document = Document({"b": [1, "é"], "a": None})

    def refused(value: Any) -> bytes:
        raise AssertionError(f"canonicalised again: {value}")
    monkeypatch.setattr(canonical, "_jcs", refused)
    assert sha256_hex(document) == hashlib.sha256('{"a":null,"b":[1,"é"]}'.encode()).hexdigest()
    assert jsonio.dumps_stored(document) == '{"a":null,"b":[1,"é"]}'
