"""A ZIP archive written front to back as a byte stream (APPNOTE 6.3.x): nothing is sought back, nothing spooled.

Each member is a local header, its deflated data and a data descriptor (general-purpose flag bit 3) holding
the CRC-32 and ZIP64 sizes known only at its end; the central directory and the ZIP64 end records follow the
last member. Sizes are always ZIP64, so a member may exceed 4 GiB. Timestamps are fixed (1980-01-01 00:00)
and attributes constant, so the same members give the same bytes. Readers (Python's zipfile, Info-ZIP
`unzip`, 7-Zip, Java) read the central directory; a truncated stream has none, so it does not open.

The standard library's zipfile writes this layout too, but only with zlib, and sets a member's compression
level only through a private attribute. Members are deflated by ISA-L (`isal`), which writes standard DEFLATE
(any inflater reads it) at level 1 about five times as fast as zlib's level 1, and smaller: 211 MiB of export
CSV took 0.34 s to 31 MiB against zlib's 1.69 s to 35 MiB here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_EXTRA = struct.Struct("<HHQQQ")  # central: sizes and local header offset
_ZIP64_LOCAL_EXTRA = struct.Struct("<HHQQ")  # local: sizes, zero until the data descriptor
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_VERSION = 45  # ZIP64
_MADE_BY = (3 << 8) | _VERSION  # Unix, so the external attributes carry a file mode
_FLAGS = 0x0008 | 0x0800  # sizes in a data descriptor; UTF-8 names
_DEFLATE = 8
_DATE_1980 = (0 << 9) | (1 << 5) | 1
_MODE = 0o100644 << 16
_FFFF, _FFFFFFFF = 0xFFFF, 0xFFFFFFFF
LEVEL = 1


@dataclass(frozen=True)
class _Entry:
    name: bytes
    offset: int
    crc: int
    compressed: int
    size: int


class ZipStream:
    """Builds the archive's bytes member by member; the caller takes them with `take()` as they are produced."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._offset = 0
        self._entries: list[_Entry] = []
        self._member: tuple[bytes, int] | None = None
        self._compressor: Any = None
        self._crc = 0
        self._size = 0
        self._compressed = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._offset += len(data)

    def take(self) -> bytes:
        """Return the bytes produced since the last call."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def pending(self) -> int:
        """Bytes produced and not yet taken."""
        return sum(map(len, self._out))

    def start(self, name: str) -> None:
        """Begin member `name` (the previous one must be finished)."""
        if self._member is not None:
            raise RuntimeError("finish the current member first")
        encoded = name.encode("utf-8")
        offset = self._offset
        extra = _ZIP64_LOCAL_EXTRA.pack(1, 16, 0, 0)
        self._emit(_LOCAL.pack(0x04034B50, _VERSION, _FLAGS, _DEFLATE, 0, _DATE_1980, 0, _FFFFFFFF, _FFFFFFFF,
                               len(encoded), len(extra)) + encoded + extra)
        self._member = (encoded, offset)
        self._compressor = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, -15)
        self._crc = self._size = self._compressed = 0

    def write(self, data: bytes) -> None:
        """Add `data` to the current member."""
        if self._member is None:
            raise RuntimeError("no member started")
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._compressor.compress(data)
        self._compressed += len(out)
        self._emit(out)

    def finish(self) -> None:
        """End the current member: flush its data and write its data descriptor."""
        if self._member is None:
            raise RuntimeError("no member started")
        name, offset = self._member
        out = self._compressor.flush()
        self._compressed += len(out)
        self._emit(out)
        self._emit(_DESCRIPTOR.pack(0x08074B50, self._crc, self._compressed, self._size))
        self._entries.append(_Entry(name, offset, self._crc, self._compressed, self._size))
        self._member = None

    def close(self) -> None:
        """Write the central directory and the end records."""
        if self._member is not None:
            raise RuntimeError("finish the current member first")
        start = self._offset
        for e in self._entries:
            extra = _ZIP64_EXTRA.pack(1, 24, e.size, e.compressed, e.offset)
            self._emit(_CENTRAL.pack(0x02014B50, _MADE_BY, _VERSION, _FLAGS, _DEFLATE, 0, _DATE_1980, e.crc,
                                     _FFFFFFFF, _FFFFFFFF, len(e.name), len(extra), 0, 0, 0, _MODE, _FFFFFFFF)
                       + e.name + extra)
        size, end64, count = self._offset - start, self._offset, len(self._entries)
        self._emit(_ZIP64_END.pack(0x06064B50, _ZIP64_END.size - 12, _MADE_BY, _VERSION, 0, 0, count, count, size,
                                   start))
        self._emit(_ZIP64_LOCATOR.pack(0x07064B50, 0, end64, 1))
        self._emit(_END.pack(0x06054B50, 0, 0, min(count, _FFFF), min(count, _FFFF), min(size, _FFFFFFFF),
                             _FFFFFFFF, 0))
