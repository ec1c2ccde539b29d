"""JSON encoding for response bodies and stored documents (not for hashes: those use `canonical`)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse

from valdrix.canonical import canonical_json

_OPTIONS = orjson.OPT_NON_STR_KEYS
# Deeper than any document the API takes (a Kubernetes object nests about 15 levels), far below the depth at
# which a recursive parser, validator or encoder exhausts Python's stack.
MAX_JSON_DEPTH = 128
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def dumps(value: Any) -> bytes:
    """Return `value` as compact UTF-8 JSON; raise TypeError for a value JSON cannot represent.

    orjson encodes a decision response in a twentieth of the standard library's time. It refuses integers
    beyond 64 bits, which a caller's free-form metadata may hold; those documents take the standard library.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_stored(value: Any) -> str:
    """Return the text a database stores for the JSON document `value`: its canonical JSON (RFC 8785), so that an
    audit export can copy a stored document as its cell, or, for a value RFC 8785 cannot represent, its compact
    JSON (`dumps`: an integer beyond ±(2**53 - 1) as written, NaN and infinity as null, as orjson writes them;
    the gate refuses both in a request). Raise TypeError for a value of no JSON form.
    """
    try:
        return canonical_json(value)
    except ValueError:
        return dumps(value).decode("utf-8")


class JSONResponse(StarletteJSONResponse):
    """A JSON response rendered by `dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Return True if the JSON text `body` opens more than `limit` arrays or objects inside one another."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the common case, decided without a scan
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


# orjson reads integers beyond 64 bits as floats; a text with a run of 20 or more digits goes to the standard
# library. Found by mapping every digit to 0 and searching for twenty of them (a regular expression took
# three times orjson's own time).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 20


def loads(text: str | bytes) -> Any:
    """Return the value of JSON `text` exactly as the standard library reads it, in a fraction of its time."""
    data = text.encode() if isinstance(text, str) else text
    if _LONG_RUN in data.translate(_DIGITS_TO_ZERO):
        return json.loads(data)
    return orjson.loads(data)
