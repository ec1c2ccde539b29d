"""Request and response bodies of the notification routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from valdrix.notifications.engine import EVENT_TYPES


class TargetIn(BaseModel):
    """A new target. Empty filter lists match everything."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "slack"]
    name: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=8, max_length=2048, description="http(s) URL the events are POSTed to")
    event_types: list[str] = Field(default_factory=list, max_length=len(EVENT_TYPES))
    project_ids: list[str] = Field(default_factory=list, max_length=100)
    environments: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http(s) URL")
        return value

    @field_validator("event_types")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
        return sorted(set(value))

    @field_validator("project_ids", "environments")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        if any(not v.strip() or len(v) > 128 for v in value):
            raise ValueError("filter values must be non-empty strings of at most 128 characters")
        return sorted({v.strip().lower() for v in value})


class TargetOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    url: str = Field(description="the webhook URL; a Slack URL is a credential and is shown masked")
    event_types: list[str]
    project_ids: list[str]
    environments: list[str]
    created_at: datetime


class TargetCreated(TargetOut):
    secret: str = Field(description="shown this once: the Standard Webhooks signing secret (webhook) or the "
                                    "incoming-webhook URL (Slack)")


class TargetList(BaseModel):
    items: list[TargetOut]


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    target_id: uuid.UUID
    target_kind: str
    target_name: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_status_code: int | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
