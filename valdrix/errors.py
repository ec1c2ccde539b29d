"""Error families with stable machine-readable codes, rendered as RFC 9457 problem documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problems(codes: Mapping[int, Sequence[str]]) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI responses for the problem documents a route answers: status → the codes it may carry."""
    return {str(status): {
        "description": f"Problem document; code one of: {', '.join(sorted(set(names)))}",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "x-problem-codes": sorted(set(names)),
    } for status, names in sorted(codes.items())}


def problem_body(status: int, code: str, title: str, detail: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return an RFC 9457 problem document; `extra` members never replace the standard ones or `code`."""
    return {**extra, "type": f"https://valdrix.io/problems/{code}", "title": title, "status": status, "code": code,
            "detail": detail}


class ValdrixError(Exception):
    """Base error: `status` is the HTTP status, `code` the stable machine-readable code.

    `commit=True` marks an error raised after a state change that must persist anyway (an approval found
    expired on access is expired and its reservation released even though the request is refused).
    """

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, message: str, *, code: str | None = None, commit: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.commit = commit
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """Return the problem-document body for this error."""
        return problem_body(self.status, self.code, self.title, self.message, self.extra)


class InvalidInput(ValdrixError):
    status = 422
    code = "invalid_input"
    title = "Unprocessable request"


class BadRequest(ValdrixError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class Unauthenticated(ValdrixError):
    status = 401
    code = "unauthenticated"
    title = "Unauthenticated"


class Forbidden(ValdrixError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ValdrixError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ValdrixError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Unavailable(ValdrixError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"
