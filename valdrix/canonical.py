"""Canonical JSON: the one serialisation every hash and signature in Valdrix is computed over.

Scheme `rfc8785` (current): RFC 8785, the JSON Canonicalization Scheme (JCS) — UTF-8, object members sorted by
their UTF-16 code units, no insignificant whitespace, minimal string escapes, numbers as ECMAScript prints
them, integers only within ±(2**53 - 1), no NaN or infinity. Any JCS implementation in any language
reproduces these bytes. The `rfc8785` library is the definition; plain JSON data on which orjson's sorted
output provably equals it (no floats, no characters from U+E000 up, integers in the JCS range, only
dict/list/str/int/bool/None) takes orjson instead, because the library is pure Python and an audit export
canonicalises several documents per row. `tests/unit/test_canonical.py` checks the two agree on generated data.

Before JCS, values are converted: Decimal to its string, datetime to ISO-8601 in UTC, date to ISO-8601, UUID
to its hyphenated string, a set to its sorted list.

Scheme `valdrix.json.v1` (legacy, read-only): the form used before RFC 8785 — `json.dumps` with sorted keys,
compact separators and ASCII escapes, floats as Python's repr. On strings of printable ASCII, integers,
booleans, null and Decimal-as-string it is byte-identical to JCS; it differs on non-ASCII text, DEL and floats.
It is kept only so that hashes stored or archived before the change still verify (`digests`, `is_digest_of`);
nothing new is hashed with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import rfc8785

try:
    import orjson
except ImportError:  # the client install (`pip install valdrix`, pure Python): the library alone, the same bytes
    orjson = None  # type: ignore[assignment]


Scheme = Literal["rfc8785", "valdrix.json.v1"]
SCHEME: Scheme = "rfc8785"
LEGACY_SCHEME: Scheme = "valdrix.json.v1"
SCHEMES: tuple[Scheme, ...] = (SCHEME, LEGACY_SCHEME)

# OPT_STRICT_INTEGER refuses integers beyond JCS's ±(2**53 - 1); such a value then takes the library, which names
# the error. Datetimes go through `_plain` like every other non-JSON type.
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_DATETIME if orjson else 0
# UTF-8 lead bytes of U+E000 and above: only there can sorting by code point (orjson) and by UTF-16 unit disagree.
_HIGH_PLANE = re.compile(rb"[\xee-\xf4]")
# A float in orjson's compact output: a number token with a fraction or an exponent (orjson prints every float
# so), after a key, in an array, or the whole document. A string holding such text (`"a\\":1.5"`, `",1.5"`)
# also matches: it only takes the slower, equally exact path. Three patterns with a literal first byte are
# searched several times faster than one alternation.
_FLOAT_AFTER_KEY = re.compile(rb'":-?[0-9]+[.eE]').search
_FLOAT_AFTER_COMMA = re.compile(rb",-?[0-9]+[.eE]").search
_FLOAT_AFTER_BRACKET = re.compile(rb"\[-?[0-9]+[.eE]").search
_FLOAT_DOCUMENT = re.compile(rb"-?[0-9]+[.eE]").match
_JSON_SCALARS = (str, int, bool, type(None))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not canonically serialisable: {type(value).__name__}")


def _tree(value: Any) -> Any:
    """Return `value` with every non-JSON leaf converted by `_plain` (the input the rfc8785 library takes)."""
    if isinstance(value, dict):
        return {k: _tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tree(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    return _tree(_plain(value))


class Document(dict[str, Any]):
    """A JSON object together with its canonical JSON, computed once when it is made: what the gate both hashes
    and stores of a decision's documents (`canonical_bytes` returns the bytes kept here, and so does every hash
    and stored text made from it). Nothing may change it after it is made."""

    __slots__ = ("canonical",)

    def __init__(self, value: dict[str, Any]) -> None:
        super().__init__(value)
        self.canonical = _jcs(value)


def _plain_json(value: Any) -> bool:
    """True when `value` holds only dict (str keys), list, str, int, bool and None, by exact type."""
    kind = type(value)
    if kind is dict or kind is Document:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if kind is list:
        return all(_plain_json(v) for v in value)
    return kind in _JSON_SCALARS


def _jcs(value: Any) -> bytes:
    if orjson is not None and _plain_json(value):
        try:
            data = orjson.dumps(value, option=_FAST)
        except orjson.JSONEncodeError:
            pass
        else:
            if not _HIGH_PLANE.search(data):
                return data
    try:
        return rfc8785.dumps(_tree(value))
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"not canonically serialisable: {exc}") from exc


def _legacy(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_plain,
                      allow_nan=False).encode("ascii")


def canonical_bytes(value: Any, scheme: Scheme = SCHEME) -> bytes:
    """Return `value` as canonical JSON bytes under `scheme` (RFC 8785 unless verifying a legacy hash).

    Raise TypeError for a value of no JSON form, ValueError for one outside the scheme's domain (NaN,
    infinity, an integer beyond ±(2**53 - 1) under RFC 8785).
    """
    if scheme != SCHEME:
        return _legacy(value)
    return value.canonical if type(value) is Document else _jcs(value)


def canonical_json(value: Any, scheme: Scheme = SCHEME) -> str:
    """Return `value` as canonical JSON text (`canonical_bytes` decoded from UTF-8)."""
    return canonical_bytes(value, scheme).decode("utf-8")


class _FloatSeen(Exception):
    pass


def _float_seen(_: str) -> Any:
    raise _FloatSeen


_MAX_SAFE_INTEGER = 2**53 - 1


def _jcs_int(literal: str) -> int | float:
    """Read an integer literal of stored JSON text as JCS reads every number: as the IEEE-754 double it names.

    PostgreSQL's jsonb keeps numbers as `numeric` and prints them without an exponent, so a float such as
    -5.762416730791998e16 comes back as the literal -57624167307919980: beyond ±(2**53 - 1), a Python int
    is out of JCS's domain, while the double it denotes is in it and prints as that very literal. It is read
    as that double only when the literal is exactly the double's shortest decimal form, which is what storing a
    float writes (nothing is rounded); any other integer beyond the range (the gate refuses those on input)
    stays an int, so canonicalising it still fails as it would from any other source.
    """
    value = int(literal)
    if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        return value
    try:
        number = float(value)
    except OverflowError:
        return value
    return number if Decimal(repr(number)) == value else value


def _safe_int(literal: str) -> int:
    value = int(literal)
    if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        return value
    raise _FloatSeen  # read by _jcs_int instead, maybe as a double


# Built once: json.loads with hooks would build a decoder per call.
_NO_FLOAT_DECODER = json.JSONDecoder(parse_float=_float_seen, parse_constant=_float_seen, parse_int=_safe_int)
_JCS_DECODER = json.JSONDecoder(parse_int=_jcs_int)


# A safe integer has at most 16 digits: only a text with a run of 16 digits can hold a literal beyond the range.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_SIXTEEN_DIGITS = b"0" * 16


def loads_stored(document: str | bytes) -> Any:
    """Return the value of JSON `document` as a database stored it, numbers read as JCS reads them.

    As `jsonio.loads`, except that an integer literal beyond ±(2**53 - 1) that is exactly a double's shortest
    decimal form is read as that double (`_jcs_int`): PostgreSQL's jsonb prints a stored float such as
    -5.762416730791998e16 as -57624167307919980, and read back as an int it could no longer be hashed.
    """
    data = document.encode("utf-8") if isinstance(document, str) else bytes(document)
    if _SIXTEEN_DIGITS in data.translate(_DIGITS_TO_ZERO):
        return _JCS_DECODER.decode(data.decode("utf-8"))
    from valdrix import jsonio  # the server's reader (orjson); the client never reads stored rows

    try:
        return jsonio.loads(data)
    except ValueError:
        # What only the standard library reads, as a JSON column written by `json.dumps` may hold: NaN, a lone
        # surrogate escape.
        return _JCS_DECODER.decode(data.decode("utf-8"))


def canonical_json_of_text(document: str | bytes) -> str:
    """Return the canonical JSON (RFC 8785) of the JSON text `document` (e.g. as a database stores it).

    The same result as `canonical_json(loads_stored(document))`. orjson parses and prints it when its output
    provably is the JCS form (`_fast`); otherwise the standard parser reads it as JCS reads numbers.
    Raise ValueError for text that is not JSON or not canonicalisable.
    """
    fast = _fast(document)
    return fast[0] if fast else _exact(document)


def canonical_json_and_value_of_text(document: str | bytes) -> tuple[str, Any]:
    """Return `canonical_json_of_text(document)` and the value it denotes (as parsing it gives, up to the order
    of object members), parsing the document once where orjson serves."""
    fast = _fast(document)
    if fast:
        return fast
    text = _exact(document)
    return text, orjson.loads(text) if orjson is not None else json.loads(text)


def _fast(document: str | bytes) -> tuple[str, Any] | None:
    """Return the canonical JSON of `document` as orjson prints it and its value, or None when that might not be
    the JCS form.

    orjson's output is the JCS form when it holds no float (orjson prints every float with a `.` or an
    exponent, and reads an integer beyond 64 bits as a float, so `_FLOAT_*` see those too), no integer beyond
    ±(2**53 - 1) (OPT_STRICT_INTEGER refuses it) and no character from U+E000 up (key order). orjson refuses
    what JSON does not allow (NaN, infinity, a lone surrogate), which the standard parser then reads. An audit
    export canonicalises several stored documents per row, so this is its hot path.
    """
    if orjson is None:
        return None
    try:
        value = orjson.loads(document)
        data = orjson.dumps(value, option=_FAST)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if (_FLOAT_AFTER_KEY(data) or _FLOAT_AFTER_COMMA(data) or _FLOAT_AFTER_BRACKET(data) or _FLOAT_DOCUMENT(data)
            or (not data.isascii() and _HIGH_PLANE.search(data))):
        return None
    return data.decode("utf-8"), value


def _exact(document: str | bytes) -> str:
    text = document if isinstance(document, str) else document.decode("utf-8")
    try:
        value = _NO_FLOAT_DECODER.decode(text)
    except _FloatSeen:
        return canonical_json(_JCS_DECODER.decode(text))
    return canonical_json(value)


def sha256_hex(value: Any, scheme: Scheme = SCHEME) -> str:
    """Return the lower-case hex SHA-256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_bytes(value, scheme)).hexdigest()


def digests(value: Any) -> tuple[str, ...]:
    """Return every hash a record of `value` may carry: the current one, then the legacy one when it differs."""
    current, legacy = sha256_hex(value), sha256_hex(value, LEGACY_SCHEME)
    return (current,) if legacy == current else (current, legacy)


def is_digest_of(digest: str, value: Any) -> bool:
    """True when `digest` is the hash of `value` under either scheme (a hash stored before RFC 8785 stays valid)."""
    digest = digest.lower()
    return digest == sha256_hex(value) or digest == sha256_hex(value, LEGACY_SCHEME)


def sha256_bytes(data: bytes) -> str:
    """Return the lower-case hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()
