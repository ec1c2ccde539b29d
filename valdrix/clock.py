"""Time and identity seams: the real clock and id factory, and controllable ones for tests."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Protocol

from pydantic import AfterValidator, BeforeValidator

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}.*", re.ASCII)


def _iso_text(pattern: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: object) -> object:
        # pydantic would otherwise read a number (or a numeric string) as a Unix timestamp.
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"must be an ISO 8601 {what}")
        if not isinstance(value, str | date):
            raise ValueError(f"must be an ISO 8601 {what} string")
        return value

    return BeforeValidator(check)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset (e.g. Z or +02:00)")
    return value


# Calendar days and instants in requests: ISO 8601 text only; an instant names its offset.
Day = Annotated[date, _iso_text(_DAY, "date (YYYY-MM-DD)")]
Instant = Annotated[datetime, _iso_text(_INSTANT, "date-time with offset"), AfterValidator(_aware)]


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdFactory(Protocol):
    def new(self) -> uuid.UUID: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The wall clock shifted by an adjustable offset: time moves, and tests can jump it forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class UuidFactory:
    """Random version-4 UUIDs."""

    def new(self) -> uuid.UUID:
        return uuid.uuid4()
