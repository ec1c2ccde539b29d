"""JSON encoding for response bodies and stored documents (not for hashes: those use `canonical`)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Return `value` as compact UTF-8 JSON; raise TypeError for a value JSON cannot represent.

    orjson encodes a decision response in a twentieth of the standard library's time. It refuses integers
    beyond 64 bits, which a caller's free-form metadata may hold; those documents take the standard library.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class JSONResponse(StarletteJSONResponse):
    """A JSON response rendered by `dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
