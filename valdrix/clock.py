"""Time and identity seams: the real clock and id factory, and controllable ones for tests."""

from __future__ import annotations

import threading
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


class FixedClock:
    """A clock that stands still until moved; thread-safe so a live test server can share it."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = start

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, value: datetime) -> None:
        with self._lock:
            self._now = value

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now = self._now + timedelta(**delta)
            return self._now


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
