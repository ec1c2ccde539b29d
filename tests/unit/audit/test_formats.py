"""The export CSV dialect: fixed bytes for fixed values, reversible formula neutralisation on text only."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valdrix.audit.formats import Column, CsvEncoder, cell, neutralise, unneutralise


@pytest.mark.parametrize(("raw", "shown"), [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-1", "'-1"), ("@cmd", "'@cmd"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'quoted", "''quoted"), ("plain", "plain"), ("", ""), ("a=b", "a=b"),
])
def test_text_cells_are_neutralised(raw: str, shown: str) -> None:
    assert cell("text", raw) == shown
    assert unneutralise(shown) == raw


@given(st.text())
def test_neutralisation_is_reversible(raw: str) -> None:
    assert unneutralise(neutralise(raw)) == raw


def test_typed_cells_are_never_neutralised() -> None:
    assert cell("decimal", Decimal("-12.5000")) == "-12.5000"
    assert cell("decimal", Decimal("1E+3")) == "1000"
    assert cell("int", -3) == "-3"
    assert cell("bool", True) == "true" and cell("bool", False) == "false"
    assert cell("datetime", datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-03-01T10:00:00.000000+00:00"
    assert cell("uuid", uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert cell("json", {"b": [1, "-x"], "a": None}) == '{"a":null,"b":[1,"-x"]}'
    assert cell("text", None) == "" and cell("decimal", None) == ""


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError):
        cell("decimal", 1.5)
    with pytest.raises(TypeError):
        cell("datetime", datetime(2026, 1, 1))


def test_records_are_rfc4180_crlf_minimally_quoted_utf8() -> None:
    encoder = CsvEncoder((Column("name", "text"), Column("amount", "decimal"), Column("at", "datetime")))
    data = encoder.header() + encoder.rows([("a,\"b\"\nc", Decimal("1.0000"), datetime(2026, 1, 1, tzinfo=UTC)),
                                            ("ünï", Decimal("0.0000"), None)])
    assert data == ('name,amount,at\r\n"a,""b""\nc",1.0000,2026-01-01T00:00:00.000000+00:00\r\n'
                    "ünï,0.0000,\r\n").encode()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1][0] == 'a,"b"\nc'
