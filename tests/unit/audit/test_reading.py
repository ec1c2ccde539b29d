"""Reading archive members for verification: the same records and errors as csv.reader, and every fault reported."""

from __future__ import annotations

import csv
import io
import json
import marshal
import struct
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valdrix.audit import reading
from valdrix.audit import verify as verify_module
from valdrix.audit.formats import field
from valdrix.audit.reading import ChildFailed, Member, Stored, Streamed, Table, locate, unsupported
from valdrix.audit.verify import Report, verify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
ARCHIVE = FIXTURES / "legacy-archive.zip"


def jwks() -> dict[str, object]:
    return dict(json.loads((FIXTURES / "legacy-jwks.json").read_text()))


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """`data` in pieces ending at the given offsets (and its end)."""
    start = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
        if cut > start:
            yield data[start:cut]
        start = cut


def outcome(records: Iterator[Any]) -> tuple[list[tuple[str, ...]], str | None]:
    """The records read before an error, and the error (type and message)."""
    read: list[tuple[str, ...]] = []
    try:
        for record in records:
            read.append(tuple(record))
    except (ValueError, csv.Error) as exc:
        return read, f"{type(exc).__name__}: {exc}"
    return read, None


def table(data: bytes, cuts: list[int], wanted: tuple[str, ...]) -> tuple[list[tuple[str, ...]], str | None]:
    read = Table("t.csv", pieces(data, cuts))
    try:
        read.select(wanted)
    except ValueError as exc:
        return [], f"{type(exc).__name__}: {exc}"
    return outcome(read.records())


def reference(data: bytes, wanted: tuple[str, ...]) -> tuple[list[tuple[str, ...]], str | None]:
    """What the former verifier read: csv.reader over a strict UTF-8 TextIOWrapper, widths checked per record."""
    rows = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""))
    try:
        header = next(rows, None)
    except csv.Error as exc:
        return [], f"{type(exc).__name__}: {exc}"
    if header is None:
        return [], "ValueError: t.csv has no header row"
    missing = [w for w in wanted if w not in header]
    if missing:
        return [], f"ValueError: t.csv lacks the columns {', '.join(missing)}"
    at = [header.index(w) for w in wanted]

    def records() -> Iterator[tuple[str, ...]]:
        for number, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"record {number} has {len(row)} cells, the header {len(header)}")
            yield tuple(row[i] for i in at)
    return outcome(records())


def dialect(rows: list[list[str]]) -> bytes:
    return "".join(",".join(field(c) for c in row) + "\r\n" for row in rows).encode("utf-8")


CELLS = st.text(alphabet=st.sampled_from(['a', 'é', '€', ',', '"', '\r', '\n', ' ', "'", '\x00']), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 4).flatmap(lambda width: st.lists(st.lists(CELLS, min_size=width, max_size=width),
                                                           min_size=0, max_size=6)),
       st.lists(st.integers(0, 200), max_size=6))
def test_records_in_the_dialect_read_as_csv_reader_reads_them_wherever_pieces_end(rows: list[list[str]],
                                                                                cuts: list[int]) -> None:
    header = ["c0", "c1", "c2", "c3"][:len(rows[0])] if rows else ["c0", "c1"]
    data = dialect([header, *rows])
    wanted = (header[-1], header[0])  # out of column order
    assert table(data, cuts, wanted) == reference(data, wanted)
    assert table(data, cuts, wanted)[0] == [(row[-1], row[0]) for row in rows]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(CELLS, min_size=1, max_size=4), min_size=1, max_size=6),
       st.binary(max_size=4).filter(lambda b: b.isascii()) | st.sampled_from([b'"', b'\r', b'\n', b',', b'a"b']),
       st.integers(0, 400), st.lists(st.integers(0, 200), max_size=6))
def test_any_other_bytes_read_as_csv_reader_reads_them(rows: list[list[str]], noise: bytes, at: int,
                                                       cuts: list[int]) -> None:
    """Records of other widths, lax quoting, bare CR or LF, no final CRLF: the same cells and the same error."""
    text = dialect([["c0", "c1", "c2"], *rows]).decode("utf-8")
    at = min(at, len(text))
    data = (text[:at] + noise.decode("ascii") + text[at:]).encode("utf-8")  # still UTF-8: noise between characters
    assert table(data, cuts, ("c2", "c1")) == reference(data, ("c2", "c1"))


def test_a_quoted_line_break_cut_between_pieces_and_a_record_past_the_carry_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [["id", "note"], ["1", "a\r\nb"], ["2", 'say ""hi""\r\n,\r\n'], ["3", "x" * 5000], ["4", "end"]]
    data = dialect(rows)
    monkeypatch.setattr(reading, "_CARRY_LIMIT", 1024)
    for cut in range(1, len(data), 7):
        assert table(data, [cut], ("id", "note")) == ([tuple(r) for r in rows[1:]], None)


def test_a_field_beyond_csv_field_size_limit_is_refused_as_csv_reader_refuses_it() -> None:
    data = dialect([["id", "note"], ["1", "short"], ["2", "y" * 300]])
    old = csv.field_size_limit(200)
    try:
        read, error = table(data, [], ("id", "note"))
    finally:
        csv.field_size_limit(old)
    assert read == [("1", "short")] and error is not None and "field larger than field limit" in error


def test_bad_utf8_raises_unicode_decode_error_after_the_records_before_it() -> None:
    good = dialect([["id", "note"], *[[str(i), "é"] for i in range(50)]])
    data = good + b"51,\xff\r\n52,x\r\n"
    read = Table("t.csv", pieces(data, [40, 400]))
    read.select(("id",))
    got: list[tuple[str, ...]] = []
    with pytest.raises(UnicodeDecodeError):
        for record in read.records():
            got.append(record)
    assert got == [(str(i),) for i in range(len(got))] and len(got) <= 50


def deflated_zip(path: Path, name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> Stored:
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr(name, data)
    with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
        where = locate(file.fileno(), archive.getinfo(name))
    assert where is not None
    return where


def read_member(path: Path, where: Stored) -> tuple[Member, list[bytes]]:
    with open(path, "rb") as file, ThreadPoolExecutor(1) as worker:
        member = Member.stored(file.fileno(), where, worker)
        got = list(member.pieces())
        member.drain()
    return member, got


def test_a_member_inflates_in_bounded_pieces_hashed_whole(tmp_path: Path) -> None:
    data = b"a" * (3 * reading._PIECE + 5)  # compresses about 1000:1
    where = deflated_zip(tmp_path / "m.zip", "m.csv", data)
    member, got = read_member(tmp_path / "m.zip", where)
    assert b"".join(got) == data and max(map(len, got)) <= reading._PIECE
    assert member.problems == [] and member.size == len(data)


def test_a_changed_stored_byte_is_a_crc_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    where = deflated_zip(path, "m.csv", b"id\r\n1\r\n", zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    raw[where.offset + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    member, _ = read_member(path, where)
    assert len(member.problems) == 1 and member.problems[0].startswith("CRC-32 is ")


def test_a_truncated_or_corrupt_stream_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    data = bytes(range(256)) * 4000
    where = deflated_zip(path, "m.csv", data)
    cut = Stored(where.name, where.offset, where.compressed // 2, where.size, where.crc, True)
    member, _ = read_member(path, cut)
    assert member.problems == ["cannot be read: its DEFLATE stream ends before its last block"]
    raw = bytearray(path.read_bytes())
    raw[where.offset:where.offset + 8] = b"\xff" * 8  # an invalid block type
    path.write_bytes(bytes(raw))
    member, _ = read_member(path, where)
    assert len(member.problems) == 1 and member.problems[0].startswith("cannot be read: ")


def rewrite(tmp_path: Path, change: dict[str, bytes] | None = None, stored: str | None = None) -> Path:
    """The legacy archive with members replaced and one member stored uncompressed."""
    new = tmp_path / "changed.zip"
    with zipfile.ZipFile(ARCHIVE) as old, zipfile.ZipFile(new, "w", zipfile.ZIP_DEFLATED) as out:
        for info in old.infolist():
            data = (change or {}).get(info.filename, old.read(info.filename))
            out.writestr(info.filename, data, zipfile.ZIP_STORED if info.filename == stored else zipfile.ZIP_DEFLATED)
    return new


def failed(report: Report) -> dict[str, list[str]]:
    return {c.name: c.problems for c in report.checks if not c.ok}


def test_the_rewritten_archive_verifies_with_a_stored_member(tmp_path: Path) -> None:
    report = verify(rewrite(tmp_path, stored="ledger.csv"), jwks())
    assert report.ok, report.problems()


@pytest.mark.parametrize("name", ["decisions.csv", "ledger.csv"])
def test_a_crc_mismatch_is_reported_for_each_member(tmp_path: Path, name: str) -> None:
    path = rewrite(tmp_path, stored=name)
    with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
        where = locate(file.fileno(), archive.getinfo(name))
    assert where is not None
    raw = bytearray(path.read_bytes())
    raw[where.offset + where.size - 3] ^= 0x01  # in the last record's last cells
    path.write_bytes(bytes(raw))
    problems = failed(verify(path, jwks()))
    assert any(p.startswith("CRC-32 is ") for p in problems[f"{name} digest"]), problems


@pytest.mark.parametrize("name", ["decisions.csv", "ledger.csv"])
def test_a_tampered_compressed_member_is_reported(tmp_path: Path, name: str) -> None:
    path = rewrite(tmp_path)
    with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
        where = locate(file.fileno(), archive.getinfo(name))
    assert where is not None
    raw = bytearray(path.read_bytes())
    middle = where.offset + where.compressed // 2
    raw[middle:middle + 4] = bytes(b ^ 0x5A for b in raw[middle:middle + 4])
    path.write_bytes(bytes(raw))
    report = verify(path, jwks())
    assert not report.ok and f"{name} digest" in failed(report), report.problems()


def test_bad_utf8_in_decisions_is_a_reported_problem(tmp_path: Path) -> None:
    with zipfile.ZipFile(ARCHIVE) as old:
        decisions = old.read("decisions.csv")
    cut = decisions.index(b"\r\n", decisions.index(b"\r\n") + 2) + 2  # after the first record
    path = rewrite(tmp_path, {"decisions.csv": decisions[:cut + 40] + b"\xff" + decisions[cut + 41:]})
    problems = failed(verify(path, jwks()))
    assert problems["decisions.csv rows"][0].startswith("cannot be parsed: 'utf-8' codec can't decode byte 0xff")


def test_a_local_header_not_matching_the_directory_is_reported(tmp_path: Path) -> None:
    path = rewrite(tmp_path)
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("approvals.csv").header_offset
    raw = bytearray(path.read_bytes())
    raw[offset + struct.calcsize("<IHHHHHIIIHH")] ^= 0x20  # the name's first letter in the local header
    path.write_bytes(bytes(raw))
    problems = failed(verify(path, jwks()))
    assert any("differ" in p for p in problems["approvals.csv digest"]), problems


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_without_the_child_process_the_members_are_read_here(monkeypatch: pytest.MonkeyPatch,
                                                             executable: str) -> None:
    monkeypatch.setattr(sys, "executable", executable)
    assert verify(ARCHIVE, jwks()).ok


def test_approvals_and_ledger_are_read_by_the_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def here(member: Member, name: str) -> reading.Referencing:
        raise AssertionError(f"{name} read in the verifying process")
    monkeypatch.setattr(reading, "read_referencing", here)
    assert verify(ARCHIVE, jwks()).ok


def test_decisions_are_parsed_by_the_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def here(name: str, pieces: Iterator[bytes]) -> Table:
        raise AssertionError(f"{name} parsed in the verifying process")
    monkeypatch.setattr(verify_module, "Table", here)
    assert verify(ARCHIVE, jwks()).ok


class _Ended:
    """A child process that sent `sent` and ended."""

    def __init__(self, sent: bytes) -> None:
        self.stdout = io.BufferedReader(io.BytesIO(sent))  # type: ignore[arg-type]

    def poll(self) -> int:
        return 1

    def wait(self) -> int:
        return 1


def frame(content: tuple[str, Any]) -> bytes:
    body = marshal.dumps(content)
    return struct.pack("<I", len(body)) + body


def test_a_child_ending_mid_stream_is_a_problem_and_one_ending_at_once_leaves_the_member_here() -> None:
    with zipfile.ZipFile(ARCHIVE) as zipped:
        streamed = Streamed(_Ended(frame(("r", [("a",), ("b",)]))), zipped, "x.csv", ("c",))  # type: ignore[arg-type]
        got: list[tuple[str, ...]] = []
        with pytest.raises(ValueError, match="ended early"):
            for record in streamed.records():
                got.append(record)
        assert got == [("a",), ("b",)]
        assert streamed.result is not None and streamed.result.problems == [
            "cannot be read: the reading process ended early"]
        with pytest.raises(ChildFailed):
            list(Streamed(_Ended(b""), zipped, "x.csv", ("c",)).records())  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "flags", "readable"), [
    (zipfile.ZIP_STORED, 0, True), (zipfile.ZIP_DEFLATED, 0, True), (zipfile.ZIP_LZMA, 0, True),
    (99, 0, False), (zipfile.ZIP_DEFLATED, 0x40, False), (zipfile.ZIP_DEFLATED, 0x20, False),
])
def test_members_zipfile_cannot_read_are_named_before_they_are_tried(method: int, flags: int, readable: bool) -> None:
    info = zipfile.ZipInfo("decisions.csv")
    info.compress_type, info.flag_bits = method, flags
    assert (unsupported(info) is None) == readable
