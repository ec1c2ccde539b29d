"""AdmissionReview `admission.k8s.io/v1` as the API server sends it (open to fields it may add) and our answer."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from valdrix.errors import BadRequest

API_VERSION = "admission.k8s.io/v1"
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
MAX_UID_CHARS = 256


class Open(BaseModel):
    # Newer API servers add fields; ignoring the unknown ones keeps old webhooks working (peers.md §4).
    # Strict: the API server sends exact JSON types; a "0" where a boolean belongs is not an AdmissionReview.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, strict=True)


class GroupVersionKind(Open):
    group: str = Field(default="", max_length=253)
    version: str = Field(default="", max_length=63)
    kind: str = Field(min_length=1, max_length=128)


class GroupVersionResource(Open):
    group: str = Field(default="", max_length=253)
    version: str = Field(default="", max_length=63)
    resource: str = Field(min_length=1, max_length=128)


class UserInfo(Open):
    username: str = Field(default="", max_length=512)
    uid: str = Field(default="", max_length=256)
    groups: list[str] = Field(default_factory=list)


class AdmissionRequest(Open):
    uid: str = Field(min_length=1, max_length=MAX_UID_CHARS)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str | None = Field(default=None, alias="subResource", max_length=128)
    request_kind: GroupVersionKind | None = Field(default=None, alias="requestKind")
    request_resource: GroupVersionResource | None = Field(default=None, alias="requestResource")
    request_sub_resource: str | None = Field(default=None, alias="requestSubResource", max_length=128)
    name: str | None = Field(default=None, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    operation: Operation
    user_info: UserInfo = Field(default_factory=UserInfo, alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: bool | None = Field(default=None, alias="dryRun")


class AdmissionReview(Open):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class MalformedReview(BadRequest):
    """The body is not a valid AdmissionReview; `uid` is its `request.uid` when that much could be read."""

    code = "malformed_admission_review"

    def __init__(self, message: str, uid: str | None = None) -> None:
        super().__init__(message)
        self.uid = uid


def parse_review(body: bytes) -> AdmissionReview:
    """Return the AdmissionReview in `body`; raise MalformedReview for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedReview(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedReview("body must be an AdmissionReview object")
    try:
        return AdmissionReview.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        request = data.get("request")
        uid = request.get("uid") if isinstance(request, dict) else None
        readable = isinstance(uid, str) and 0 < len(uid) <= MAX_UID_CHARS
        raise MalformedReview(f"malformed AdmissionReview: {fields}", uid if readable else None) from None


def review_response(uid: str, *, allowed: bool, message: str | None = None, warnings: list[str] | None = None,
                    audit: dict[str, str] | None = None, code: int = 403) -> dict[str, Any]:
    """Return the AdmissionReview answer; a rejection, or an answer that explains an error, carries a status
    with `code` (403 for a denial) and `message`."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed or code != 403:
        response["status"] = {"code": code, "reason": HTTPStatus(code).phrase,
                              "message": message or "denied by Valdrix Gate"}
    if warnings:
        response["warnings"] = warnings
    if audit:
        response["auditAnnotations"] = audit
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


class ReviewStatus(BaseModel):
    code: int
    reason: str
    message: str


class ReviewAnswer(BaseModel):
    uid: str
    allowed: bool
    status: ReviewStatus | None = None
    warnings: list[str] | None = None
    audit_annotations: dict[str, str] | None = Field(default=None, alias="auditAnnotations")


class AdmissionReviewOut(BaseModel):
    """The answer to the API server (runbook §2): always HTTP 200 once the review's uid could be read."""

    model_config = ConfigDict(populate_by_name=True)

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    response: ReviewAnswer
