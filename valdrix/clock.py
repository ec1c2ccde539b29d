"""Time and identity seams: the real clock and id factory, and controllable ones for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol


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
