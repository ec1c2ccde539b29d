"""Reading an audit archive's CSV members for offline verification (`valdrix.audit.verify`): fast, exact, bounded.

Member bytes. A member's stored bytes are read from the verifier's one open file of the archive (`os.pread`, so
threads and a child process share it without sharing a file position), found from the ZIP directory's entry
and the local header after it, which must name the member as zipfile requires. Deflated members are inflated
by ISA-L (`isal`, about 5x zlib's speed) in pieces of at most _PIECE bytes — however well the data compresses,
the rest waits as compressed input — on a worker thread while the caller parses the piece before; inflating and
hashing release the GIL. Every piece is hashed (SHA-256), counted and CRC-32-checked; a CRC-32 or size that is
not the directory's, a truncated archive or a corrupt stream is a problem of the member, reported, never an
exception. A member zipfile reads otherwise (another method, encryption, a local header not matching the
directory, no `os.pread`) is read through zipfile, whose errors become problems the same way.

Records. The records of a piece are matched as text by a regular expression of exactly the export dialect's
records (`valdrix.audit.formats`) with the header's number of fields: fields quoted only as the dialect
quotes them, quotes doubled inside, CR and LF allowed inside quotes (so a record may span lines), each record
ended by CRLF; only the wanted fields are captured. A piece is cut at its last CRLF and decoded as strict
UTF-8 (a CRLF never splits a UTF-8 sequence); a record cut there does not match and is carried over to the
next piece. At the first record the expression does not match (another number of cells, a laxer form
csv.reader still accepts, bad UTF-8, a record longer than csv's field size limit, one carried over beyond
_CARRY_LIMIT), the rest of the member is parsed by csv.reader over a strict UTF-8 TextIOWrapper — the former
path — from that record's start, a record boundary where csv.reader's state is fresh. So every record gets
the cells csv.reader gives it and every fault the error it raises, and memory is bounded by the pieces and
one carried record, not by the member.

Other processes. Parsing holds the GIL, so it is done by child Python processes, which inherit the archive's
open file descriptor and get the members' places from the verifier's reading of the directory (`_spawn`).
One (`Streamed`) parses decisions.csv and streams its records' lineage cells back in batches (marshal) while
the verifier rebuilds the lineages from them; another (`Elsewhere`) reads approvals.csv and ledger.csv, which
only reference decisions, and returns their digests and decision ids at the end. A child that cannot start or
ends before sending anything leaves its members to this process, with the same result; one that ends in the
middle of a stream is a problem of the member, so a failed read never passes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import marshal
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from isal import isal_zlib

# Inflated bytes handed to the parser at a time (at most), and compressed bytes read at a time.
_PIECE = 4 << 20
_READ = 1 << 20
# A partial record carried from piece to piece beyond this size is left to csv.reader (memory stays bounded).
_CARRY_LIMIT = 2 * _PIECE
# Records read by csv.reader handed on at a time (records matched go a piece's at a time).
_BATCH = 2000
# A ZIP local file header, and the flags (encryption, patch data, strong encryption) only zipfile handles.
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50
_ZIPFILE_ONLY = 0x01 | 0x20 | 0x40
# ISA-L's error for corrupt DEFLATE data (its stub types it as an instance, not a class).
_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
# zipfile's errors reading a member it supports (see `unsupported`): a bad header or CRC, a password needed, a
# truncated or corrupt stream.
ZIPFILE_ERRORS = (zipfile.BadZipFile, RuntimeError, EOFError, OSError, zlib.error)
# The compression methods zipfile reads; it refuses any other, and patched data or strong encryption (flag bits
# 5 and 6), as not implemented.
_ZIPFILE_METHODS = frozenset((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))
_ZIPFILE_REFUSES = 0x20 | 0x40
# One field of the export dialect: quoted (quotes doubled inside, CR and LF allowed) or bare. Possessive, so a
# record is matched left to right in one way only, as csv.reader's state machine reads it.
_FIELD = r'(?:"[^"]*+(?:""[^"]*+)*+"|[^,"\r\n]*+)'
_HEADER = re.compile(("(?:" + _FIELD + ",)*+" + _FIELD + "\r\n").encode("ascii")).match


def unsupported(info: zipfile.ZipInfo) -> str | None:
    """Return why zipfile cannot read member `info` at all (so it is reported, not attempted), or None."""
    if info.compress_type not in _ZIPFILE_METHODS:
        return f"uses compression method {info.compress_type}, which zipfile does not read"
    if info.flag_bits & _ZIPFILE_REFUSES:
        return "holds patched data or strong encryption, which zipfile does not read"
    return None


class _Unreadable(Exception):
    """A member's bytes cannot all be taken from the archive (the message says why)."""


@dataclass(frozen=True)
class Stored:
    """Where a member's stored bytes are in the archive file, and what the ZIP directory records of them."""

    name: str
    offset: int
    compressed: int
    size: int
    crc: int
    deflated: bool


def locate(fd: int, info: zipfile.ZipInfo) -> Stored | None:
    """Return where the member's stored bytes are, or None when zipfile is to read it (and say what is wrong)."""
    if (not hasattr(os, "pread") or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
            or info.flag_bits & _ZIPFILE_ONLY):
        return None
    header = os.pread(fd, _LOCAL.size, info.header_offset)
    if len(header) != _LOCAL.size:
        return None
    signature, *_, name_size, extra_size = _LOCAL.unpack(header)
    try:
        name = os.pread(fd, name_size, info.header_offset + _LOCAL.size).decode(
            "utf-8" if info.flag_bits & 0x800 else "cp437")
    except UnicodeDecodeError:
        return None
    if signature != _LOCAL_SIGNATURE or name != info.orig_filename:
        return None
    return Stored(info.filename, info.header_offset + _LOCAL.size + name_size + extra_size, info.compress_size,
                  info.file_size, info.CRC, info.compress_type == zipfile.ZIP_DEFLATED)


class Member:
    """One member's bytes, taken piece by piece on a worker thread, hashed, counted and CRC-checked."""

    def __init__(self, worker: ThreadPoolExecutor, size: int, crc: int) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.problems: list[str] = []
        self._crc = 0
        self._expected = size, crc
        self._worker = worker
        self._source: Iterator[bytes] = iter(())
        self._ahead: Future[bytes] | None = None

    @classmethod
    def stored(cls, fd: int, where: Stored, worker: ThreadPoolExecutor) -> Member:
        """Return the member whose stored bytes `locate` found, inflated here."""
        member = cls(worker, where.size, where.crc)
        member._start(member._inflated(fd, where))
        return member

    @classmethod
    def zipped(cls, zipped: zipfile.ZipFile, info: zipfile.ZipInfo, worker: ThreadPoolExecutor) -> Member:
        """Return the member as zipfile reads it."""
        member = cls(worker, info.file_size, info.CRC)
        member._start(member._through_zipfile(zipped, info))
        return member

    def _start(self, source: Iterator[bytes]) -> None:
        self._source = source
        self._ahead = self._worker.submit(next, source, b"")

    def pieces(self) -> Iterator[bytes]:
        """Yield the member's bytes in order, the next piece being taken meanwhile."""
        while self._ahead is not None:
            piece = self._ahead.result()
            self._ahead = self._worker.submit(next, self._source, b"") if piece else None
            if piece:
                yield piece

    def drain(self) -> None:
        """Take what a parse left unread, so the digest, size and CRC-32 cover the whole member."""
        for _ in self.pieces():
            pass
        size, crc = self._expected
        if not self.problems:
            if self.size != size:
                self.problems.append(f"inflates to {self.size} bytes, the ZIP directory records {size}")
            if self._crc != crc:
                self.problems.append(f"CRC-32 is {self._crc:08x}, the ZIP directory records {crc:08x}")

    def _counted(self, data: bytes) -> bytes:
        self.digest.update(data)
        self._crc = isal_zlib.crc32(data, self._crc)
        self.size += len(data)
        return data

    def _inflated(self, fd: int, where: Stored) -> Iterator[bytes]:
        try:
            inflater = isal_zlib.decompressobj(-15) if where.deflated else None
            offset, left = where.offset, where.compressed
            while left:
                chunk = os.pread(fd, min(left, _READ), offset)
                if not chunk:
                    raise _Unreadable(f"the archive ends {left} bytes into its compressed data")
                offset += len(chunk)
                left -= len(chunk)
                if inflater is None:
                    yield self._counted(chunk)
                    continue
                # At most _PIECE bytes a call: the rest of the chunk waits in unconsumed_tail.
                while chunk and not inflater.eof:
                    data = inflater.decompress(chunk, _PIECE)
                    chunk = inflater.unconsumed_tail
                    if data:
                        yield self._counted(data)
            if inflater is not None:
                data = inflater.flush()
                if data:
                    yield self._counted(data)
                if not inflater.eof:
                    raise _Unreadable("its DEFLATE stream ends before its last block")
        except (OSError, _INFLATE_ERROR, _Unreadable) as exc:
            self.problems.append(f"cannot be read: {exc}")

    def _through_zipfile(self, zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
        if (why := unsupported(info)) is not None:
            self.problems.append(f"cannot be read: {why}")
            return
        try:
            with zipped.open(info) as member:
                while data := member.read(_PIECE):
                    yield self._counted(data)
        except ZIPFILE_ERRORS as exc:
            self.problems.append(f"cannot be read: {exc}")


class _Chained(io.RawIOBase):
    """Bytes already taken, then the pieces still to come, as one stream (for csv.reader)."""

    def __init__(self, head: memoryview, pieces: Iterator[bytes]) -> None:
        self._piece = head
        self._pieces = pieces

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._piece:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._piece = memoryview(piece)
        size = min(len(buffer), len(self._piece))
        buffer[:size] = self._piece[:size]
        self._piece = self._piece[size:]
        return size


class Table:
    """The records of one CSV member, as csv.reader over its strict UTF-8 text gives them (module docstring)."""

    def __init__(self, name: str, pieces: Iterator[bytes]) -> None:
        self.name = name
        self._pieces = pieces
        self._data = b""
        self._rows: Iterator[list[str]] | None = None  # csv.reader, once it reads the rest
        self._width = 0
        self._at: list[int] = []
        self._record: Callable[[str, int], re.Match[str] | None] | None = None
        self._order: list[int] | None = None  # the wanted cells' places among the captured ones (None: the same)
        self.number = 1  # the record last read, the header being record 1

    def select(self, wanted: tuple[str, ...]) -> None:
        """Read the header; raise ValueError when it is missing or lacks a wanted column."""
        header = self._header()
        if header is None:
            raise ValueError(f"{self.name} has no header row")
        missing = [w for w in wanted if w not in header]
        if missing:
            raise ValueError(f"{self.name} lacks the columns {', '.join(missing)}")
        self._width = len(header)
        self._at = [header.index(w) for w in wanted]
        if self._rows is not None:
            return
        if self._width < 2:
            # An empty one-field record is an empty line, which csv.reader reads as no cells at all.
            self._rows = self._exact(memoryview(self._data))
            return
        captured = sorted(set(self._at))
        fields = [f"({_FIELD})" if i in captured else _FIELD for i in range(self._width)]
        self._record = re.compile(",".join(fields) + "\r\n").match
        order = [captured.index(i) for i in self._at]
        self._order = None if order == list(range(len(captured))) else order

    def records(self) -> Iterator[tuple[str, ...]]:
        """Yield the wanted cells of each record after the header; raise ValueError at one of another width.

        csv.Error and UnicodeDecodeError are raised where csv.reader over the member's text raises them.
        """
        for quoted, batch in self.batches():
            if quoted:
                for cells in batch:
                    yield cooked(cells)
            else:
                yield from batch

    def batches(self) -> Iterator[tuple[bool, list[tuple[str, ...]]]]:
        """Yield the records' wanted cells as `records` does, in batches; a batch marked quoted holds the fields
        as matched, quotes and doubled quotes included, for `cooked` to turn into cells (where the caller likes:
        `Streamed` leaves that to the verifying process, which waits for its child otherwise)."""
        if self._record is not None and self._rows is None:
            yield from self._matched(self._record)
        if self._rows is not None:
            width, at = self._width, self._at
            batch: list[tuple[str, ...]] = []
            try:
                for row in self._rows:
                    self.number += 1
                    if len(row) != width:
                        raise ValueError(f"record {self.number} has {len(row)} cells, the header {width}")
                    batch.append(tuple([row[i] for i in at]))
                    if len(batch) == _BATCH:
                        yield False, batch
                        batch = []
            except (ValueError, UnicodeDecodeError, csv.Error):
                if batch:  # the records before the error first
                    yield False, batch
                raise
            if batch:
                yield False, batch

    def _header(self) -> list[str] | None:
        data = b""
        for piece in self._pieces:
            data += piece
            if b"\r\n" in data or len(data) > _CARRY_LIMIT:
                break
        match = _HEADER(data)
        try:
            text = None if match is None or match.end() > csv.field_size_limit() else match[0].decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if match is None or text is None:
            self._rows = self._exact(memoryview(data))
            return next(self._rows, None)
        self._data = data[match.end():]
        return next(csv.reader(io.StringIO(text, newline="")))

    def _exact(self, head: memoryview) -> Iterator[list[str]]:
        return csv.reader(io.TextIOWrapper(io.BufferedReader(_Chained(head, self._pieces), 1 << 16),
                                           encoding="utf-8", newline=""))

    def _matched(self, record: Callable[[str, int], re.Match[str] | None]) -> Iterator[
            tuple[bool, list[tuple[str, ...]]]]:
        limit = csv.field_size_limit()
        order = self._order
        data, self._data = self._data, b""
        more = True
        while True:
            # Whole lines only while more pieces follow: the last CRLF ends a record or lies in a quoted field,
            # and a record cut there does not match, so it is carried over to the next round.
            cut = data.rfind(b"\r\n")
            end = len(data) if not more else cut + 2 if cut >= 0 else 0
            try:
                text = data[:end].decode("utf-8")
            except UnicodeDecodeError:
                # csv.reader reads the records before the bad byte, then raises its error.
                self._rows = self._exact(memoryview(data))
                return
            pos, exact = 0, False
            batch: list[tuple[str, ...]] = []
            while pos < end:
                match = record(text, pos)
                if match is None:
                    break
                if match.end() - pos > limit:  # csv.reader may refuse one of its fields: let it tell
                    exact = True
                    break
                pos = match.end()
                self.number += 1
                cells = match.groups()
                batch.append(cells if order is None else tuple([cells[i] for i in order]))
            if batch:
                yield True, batch
            rest = data[end:] if pos == len(text) else text[pos:].encode("utf-8") + data[end:]
            if not more and not rest:
                return
            if exact or not more or (pos == 0 and len(rest) > _CARRY_LIMIT):
                self._rows = self._exact(memoryview(rest))
                return
            # The record at pos is cut by the piece's end, or malformed (the next rounds tell): carry it over.
            piece = next(self._pieces, None)
            more = piece is not None
            data = rest + piece if piece is not None else rest


def cooked(fields: tuple[str, ...]) -> tuple[str, ...]:
    """Return the cells of fields as the record expression matched them (quoted ones unquoted)."""
    return tuple([f[1:-1].replace('""', '"') if f[:1] == '"' else f for f in fields])


@dataclass
class Referencing:
    """A member that references decisions, read whole: its bytes' digest, size and problems, its records."""

    digest: str
    size: int
    problems: list[str]
    error: str | None  # why its records cannot be parsed (the ids are those before)
    count: int | None  # records after the header, when all parse
    ids: list[str]  # each record's decision_id, in order


def read_referencing(member: Member, name: str) -> Referencing:
    """Return what the member holds, reading it to its end."""
    ids: list[str] = []
    count: int | None = None
    error: str | None = None
    try:
        table = Table(name, member.pieces())
        table.select(("decision_id",))
        ids.extend(cells[0] for cells in table.records())
        count = len(ids)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        error = f"cannot be parsed: {exc}"
    member.drain()
    return Referencing(member.digest.hexdigest(), member.size, member.problems, error, count, ids)


class Elsewhere:
    """Members that reference decisions, read by a child process while the caller reads decisions.csv.

    `results` waits for the child; a member it could not take (not found by `locate`, or the child failed to
    start, exited with an error or answered nonsense) is read in this process then.
    """

    def __init__(self, file: IO[bytes], zipped: zipfile.ZipFile, names: list[str]) -> None:
        self._fd = file.fileno()
        self._zipped = zipped
        self._names = names
        self._stored = {name: locate(self._fd, zipped.getinfo(name)) for name in names}
        spec = [asdict(where) for where in self._stored.values() if where is not None]
        self._child = _spawn("child", self._fd, spec) if spec else None

    def results(self) -> dict[str, Referencing]:
        """Return each member's reading, in the order given."""
        found: dict[str, Referencing] = {}
        if self._child is not None:
            try:
                out, _ = self._child.communicate()
                if self._child.returncode == 0:
                    found = {item["name"]: Referencing(**item["read"]) for item in json.loads(out)}
            except (OSError, ValueError, TypeError, KeyError):
                found = {}
            finally:
                self.close()
        results: dict[str, Referencing] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
            for name in self._names:
                where = self._stored[name]
                if name in found and where is not None:
                    results[name] = found[name]
                    continue
                member = (Member.stored(self._fd, where, worker) if where is not None
                          else Member.zipped(self._zipped, self._zipped.getinfo(name), worker))
                results[name] = read_referencing(member, name)
        return results

    def close(self) -> None:
        """End the child if it still runs (the caller failed before asking for the results)."""
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            _end(self._child)
            self._child = None


def _spawn(entry: str, fd: int, spec: Any) -> subprocess.Popen[bytes] | None:
    """Start `entry` of this module in a child Python process given the archive's descriptor; None if it cannot."""
    if os.name != "posix" or not sys.executable:
        return None
    # This package first on the child's path (-P: not the working directory), whatever the caller's.
    root = str(Path(__file__).resolve().parents[2])
    try:
        return subprocess.Popen(
            [sys.executable, "-P", "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
             f"from valdrix.audit.reading import {entry}; {entry}()", root, str(fd), json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(fd,))
    except OSError:
        return None


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


class Streamed:
    """A member's records read by a child process and streamed back as they are parsed, for the caller to
    consume meanwhile (the GIL-bound parsing and the caller's work on the records then take both cores).

    `start` returns None when there is no child to read it (the caller then reads it here, with `Table`). The
    child sends batches of records (the wanted cells, as `Table.records` yields them), then the member's
    digest, size and problems; a parse error arrives where it happened and is raised then, with csv.reader's
    message. A child that ends before its first batch leaves the member to this process too; one that ends
    later is a problem of the member, so a failed read never passes.
    """

    def __init__(self, process: subprocess.Popen[bytes], zipped: zipfile.ZipFile, name: str,
                 wanted: tuple[str, ...]) -> None:
        self._process = process
        self._zipped = zipped
        self._name = name
        self._wanted = wanted
        self.result: Referencing | None = None  # with no ids: the records went to the caller

    @classmethod
    def start(cls, file: IO[bytes], zipped: zipfile.ZipFile, name: str, wanted: tuple[str, ...]) -> Streamed | None:
        """Start reading the member in a child process; None when it must be read here."""
        where = locate(file.fileno(), zipped.getinfo(name))
        process = _spawn("streamer", file.fileno(), {"where": asdict(where), "wanted": wanted}) if where else None
        return cls(process, zipped, name, wanted) if process is not None else None

    def records(self) -> Iterator[tuple[str, ...]]:
        """Yield the wanted cells of each record; then `result` holds the member's digest, size and count.

        Raise ValueError (csv.reader's message) where the child could not parse the member, or ChildFailed when
        the child ended before its first batch.
        """
        stdout = self._process.stdout
        assert stdout is not None
        first = True
        while True:
            frame = _frame(stdout)
            if frame is None:
                if first:
                    raise ChildFailed
                self.result = Referencing("", 0, ["cannot be read: the reading process ended early"], None, None, [])
                raise ValueError("the reading process ended early")
            first = False
            kind, content = frame
            if kind == "r" and isinstance(content, list):
                yield from content
                continue
            if kind == "q" and isinstance(content, list):
                for fields in content:
                    yield cooked(fields)
                continue
            try:
                self.result = Referencing(**content, ids=[])
            except TypeError:  # not what `streamer` sends: a failed read, never a pass
                self.result = Referencing("", 0, ["cannot be read: the reading process answered nonsense"], None,
                                          None, [])
            if self.result.error is not None:
                raise ValueError(self.result.error)
            return

    def close(self) -> None:
        """End the child if it still runs."""
        _end(self._process)


class ChildFailed(Exception):
    """The child process ended before sending anything: the member is to be read here."""


_LENGTH = struct.Struct("<I")


def _frame(stream: IO[bytes]) -> tuple[str, Any] | None:
    head = stream.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) != size:
        return None
    try:
        frame = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    return frame if isinstance(frame, tuple) and len(frame) == 2 else None


def streamer() -> None:
    """The child process of `Streamed`: send the records, then the digest, of the member its arguments place."""
    fd = int(sys.argv[1])
    job = json.loads(sys.argv[2])
    where, wanted = Stored(**job["where"]), tuple(job["wanted"])
    out = sys.stdout.buffer

    def send(frame: tuple[str, Any]) -> None:
        # marshal: the fastest encoding of lists of tuples of strings, and it builds nothing but data.
        body = marshal.dumps(frame)
        out.write(_LENGTH.pack(len(body)))
        out.write(body)

    count: int | None = None
    error: str | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
        member = Member.stored(fd, where, worker)
        sent = 0
        try:
            table = Table(where.name, member.pieces())
            table.select(wanted)
            for quoted, batch in table.batches():
                send(("q" if quoted else "r", batch))
                sent += len(batch)
            count = sent
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            error = str(exc)
        member.drain()
    send(("e", {"digest": member.digest.hexdigest(), "size": member.size, "problems": member.problems,
                "error": error, "count": count}))
    out.flush()


def child() -> None:
    """The child process of `Elsewhere`: read the members its arguments place, from the inherited descriptor."""
    fd = int(sys.argv[1])
    out = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="valdrix-verify") as worker:
        for item in json.loads(sys.argv[2]):
            where = Stored(**item)
            # vars, not asdict (which deep-copies the ids); json.dumps, not dump (which encodes in Python).
            out.append({"name": where.name, "read": vars(read_referencing(Member.stored(fd, where, worker),
                                                                           where.name))})
    sys.stdout.write(json.dumps(out))
