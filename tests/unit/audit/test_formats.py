"""The export CSV dialect: RFC 4180 records as Python's csv module writes them, reversible neutralisation."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import String, bindparam, column, create_engine, select

from valdrix.audit.formats import (
    Column,
    CsvEncoder,
    Finish,
    neutralise,
    pack,
    packs,
    reader,
    unfield,
    unneutralise,
    unpack,
)


@pytest.mark.parametrize(("raw", "shown"), [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-1", "'-1"), ("@cmd", "'@cmd"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'quoted", "''quoted"), ("plain", "plain"), ("", ""), ("a=b", "a=b"),
])
def test_text_cells_are_neutralised(raw: str, shown: str) -> None:
    assert neutralise(raw) == shown
    assert unneutralise(shown) == raw


@given(st.text())
def test_neutralisation_is_reversible(raw: str) -> None:
    assert unneutralise(neutralise(raw)) == raw


COLUMNS = (Column("name", "text"), Column("amount", "decimal"), Column("doc", "json"), Column("at", "datetime"))


def finished(encoder: CsvEncoder, rows: list[tuple[str, ...]]) -> list[Sequence[Any]]:
    """The finished columns of `rows`, as an export's batch gives them to the encoder."""
    return encoder.finish(list(zip(*rows, strict=True)) if rows else [[] for _ in encoder.columns])


def finishers(columns: tuple[Column, ...], dialect: str = "postgresql") -> list[Finish | None]:
    return [reader(column(c.header, String()), c.kind, dialect)[1] for c in columns]


def test_records_are_rfc4180_crlf_minimally_quoted_utf8_and_finished_per_column() -> None:
    encoder = CsvEncoder(COLUMNS, finishers(COLUMNS))
    fields = finished(encoder, [("a,\"b\"\nc", "1.0000", '{"a": [1, "x"]}', "2026-01-01T00:00:00.000000+00:00"),
                             ("=ünï", "", "[]", ""), ("", "-2.5000", "{}", ""), ("x", "", None, "")])
    assert list(fields[0]) == ['"a,""b""\nc"', "'=ünï", "", "x"]
    data = encoder.header() + encoder.encode(fields)
    assert data == ('name,amount,doc,at\r\n"a,""b""\nc",1.0000,"{""a"":[1,""x""]}",2026-01-01T00:00:00.000000+00:00\r\n'
                    "'=ünï,,[],\r\n,-2.5000,{},\r\nx,,,\r\n").encode()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1][0] == 'a,"b"\nc' and rows[1][2] == '{"a":[1,"x"]}'
    assert encoder.encode(finished(encoder, [])) == b""


@given(st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_text_fields_are_what_the_csv_module_writes_of_the_neutralised_text(rows: list[tuple[str, str]]) -> None:
    columns = (Column("a", "text"), Column("b", "text"))
    encoder = CsvEncoder(columns, finishers(columns))
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows(
        [[neutralise(a), neutralise(b)] for a, b in rows])
    assert encoder.encode(finished(encoder, rows)) == expected.getvalue().encode("utf-8")
    assert [unneutralise(unfield(f)) for f in finished(encoder, rows)[0]] == [a for a, _ in rows]


@pytest.mark.parametrize(("stored", "cell"), [
    ("0123456789abcdef0123456789ABCDEF", "01234567-89ab-cdef-0123-456789abcdef"), (None, ""),
])
def test_sqlite_uuids_are_hyphenated_lower_case(stored: str | None, cell: str) -> None:
    (finish,) = finishers((Column("id", "uuid"),), "sqlite")
    assert finish is not None and list(finish([stored])) == [cell]


@pytest.mark.parametrize(("stored", "cell"), [
    ("2026-01-05 10:00:00.000001", "2026-01-05T10:00:00.000001+00:00"),
    ("2026-01-05 10:00:00", "2026-01-05T10:00:00.000000+00:00"),
    ("2026-01-05T12:00:00+02:00", "2026-01-05T10:00:00.000000+00:00"), (None, ""),
])
def test_sqlite_datetimes_in_any_layout_are_utc_with_microseconds(stored: str | None, cell: str) -> None:
    (finish,) = finishers((Column("at", "datetime"),), "sqlite")
    assert finish is not None and list(finish([stored])) == [cell]


_STORED = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))


@given(st.integers(1, 6).flatmap(lambda width: st.lists(st.lists(_STORED, min_size=width, max_size=width),
                                                        min_size=1, max_size=8)))
def test_sqlite_carries_a_rows_pieces_in_one_array_exactly(rows: list[list[Any]]) -> None:
    """Whatever a text holds (quotes, backslashes, control characters, NUL, any plane), SQLite's array of a row's
    pieces gives back exactly the values, integers and NULLs the driver would have read column by column."""
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            arrays = [conn.execute(select(pack([bindparam(f"p{i}", v, type_=String() if isinstance(v, str) else None)
                                                for i, v in enumerate(row)]))).scalar_one() for row in rows]
    finally:
        engine.dispose()
    assert all(isinstance(text, str) for text in arrays)
    assert unpack(arrays) == [tuple(column) for column in zip(*rows, strict=True)]


def test_sqlite_packs_every_piece_but_binary_floats_and_postgresql_none() -> None:
    assert all(packs(kind, "sqlite") for kind in ("text", "int", "bool", "datetime", "uuid", "json"))
    assert not packs("decimal", "sqlite")
    assert not any(packs(kind, "postgresql") for kind in ("text", "int", "bool", "datetime", "uuid", "json", "decimal"))
