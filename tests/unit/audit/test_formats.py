"""The export CSV dialect: RFC 4180 records as Python's csv module writes them, reversible neutralisation."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valdrix.audit.formats import Column, CsvEncoder, neutralise, unneutralise


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


def test_records_are_rfc4180_crlf_minimally_quoted_utf8_and_finished_per_column() -> None:
    encoder = CsvEncoder(COLUMNS, [neutralise, None, None, None])
    cells = encoder.cells([("a,\"b\"\nc", "1.0000", '{"a":[1,"x"]}', "2026-01-01T00:00:00.000000+00:00"),
                           ("=ünï", "", "[]", ""), (None, "-2.5000", "{}", "")])
    assert cells[0][0] == 'a,"b"\nc' and cells[1][0] == "'=ünï" and cells[2][0] == ""
    data = encoder.header() + encoder.encode(cells)
    assert data == ('name,amount,doc,at\r\n"a,""b""\nc",1.0000,"{""a"":[1,""x""]}",2026-01-01T00:00:00.000000+00:00\r\n'
                    "'=ünï,,[],\r\n,-2.5000,{},\r\n").encode()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1][0] == 'a,"b"\nc' and rows[1][2] == '{"a":[1,"x"]}'
    assert encoder.encode([]) == b""


@given(st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_encoding_is_what_the_csv_module_writes(rows: list[tuple[str, str]]) -> None:
    encoder = CsvEncoder((Column("a", "text"), Column("b", "json")), [None, None])
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    assert encoder.encode([list(r) for r in rows]) == expected.getvalue().encode("utf-8")
