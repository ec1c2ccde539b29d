"""The export CSV dialect and how each backend's stored values become its cells, identically on both backends.

Dialect (`valdrix.audit.csv.v2`): RFC 4180 — comma separator, `"` quote doubled inside quoted fields, fields
quoted only when they contain a comma, quote, CR or LF, every record (the header too) ends with CRLF; UTF-8
without a byte-order mark; the first record is the header.

Cells, by column kind:
  text      the stored string; neutralised against spreadsheet formula injection (below)
  int       decimal digits
  decimal   plain notation, never an exponent, at the column's stored scale (`10.5000`)
  bool      `true` / `false`
  datetime  ISO-8601 in UTC with microseconds and offset: `2026-03-01T10:00:00.000000+00:00`
  uuid      lower-case hyphenated
  json      canonical JSON, RFC 8785 (`valdrix.canonical`, UTF-8)
  NULL      the empty cell (a text column never holds NULL and an empty string at once in our schema)
`valdrix.audit.csv.v1` (archives made before RFC 8785) differs only in its json cells: the legacy canonical form.

Neutralisation applies to `text` cells only: one leading `'` is added when the value starts with `=`, `+`, `-`,
`@`, TAB or CR, so a spreadsheet shows it as text instead of evaluating a formula. A value that itself starts
with `'` also gets one, which makes the escape reversible: a reader strips exactly one leading `'` from a text
cell that has one (`unneutralise`). Typed columns are never neutralised: our own formatting of a number, hash,
UUID, timestamp or JSON object cannot form a formula, and a negative amount must stay a number.

Reading: an export reads rows at database speed, so each kind is formatted by the database where its text form
already is the cell (PostgreSQL `numeric::text`, `to_char` in UTC, `uuid::text`; a CASE for booleans), and
otherwise finished in Python from the stored form, which is the same on every row (SQLite stores UTC
datetimes as `YYYY-MM-DD HH:MM:SS.ffffff`, UUIDs as 32 hex digits, Numeric as a binary float rounded to the
column's scale on read, JSON as text). `tests/integration/test_exports.py` checks both backends give the same
bytes for the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Numeric, String, Text, case, cast, func, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from valdrix.canonical import canonical_json_of_text

DIALECT = "valdrix.audit.csv.v2"
Kind = Literal["text", "int", "decimal", "bool", "datetime", "uuid", "json"]
Finish = Callable[[Any], str]
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "'")
_PG_TIMESTAMP = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
# A field is quoted when it holds one of these (RFC 4180; Python's csv QUOTE_MINIMAL with CRLF records).
_NEEDS_QUOTES = re.compile(r'[",\r\n]').search
# Kinds whose cells may hold a comma, quote or line break; the others are digits, hex, dates and words.
_QUOTABLE: tuple[Kind, ...] = ("text", "json")


@dataclass(frozen=True)
class Column:
    """One CSV column: its header and how its cells are formatted."""

    header: str
    kind: Kind


def neutralise(text: str) -> str:
    """Return `text` with a leading apostrophe when a spreadsheet could read it as a formula."""
    return "'" + text if text.startswith(_FORMULA_LEADS) else text


def unneutralise(cell: str) -> str:
    """Return the stored text of a neutralised text cell."""
    return cell[1:] if cell.startswith("'") else cell


def _sqlite_uuid(stored: str) -> str:
    return f"{stored[:8]}-{stored[8:12]}-{stored[12:16]}-{stored[16:20]}-{stored[20:]}".lower()


def _sqlite_datetime(stored: str) -> str:
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}+00:00"
    # Another writer's layout (no microseconds, an offset): parse it rather than assume.
    value = datetime.fromisoformat(stored)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def _sqlite_decimal(scale: int) -> Finish:
    # The stored binary float rounded to the column's scale: what SQLAlchemy's Numeric returns on SQLite.
    return lambda stored: f"{stored:.{scale}f}"


def reader(expr: ColumnElement[Any], kind: Kind, dialect: str) -> tuple[ColumnElement[Any], Finish | None]:
    """Return the SQL reading `expr` as a cell of `kind` on `dialect`, and the Python step finishing it (if any).

    Without a finishing step the SQL yields the cell itself, NULL as the empty string; a finishing step is
    given the stored value (never NULL, which becomes the empty cell).
    """
    if kind == "bool":
        return case((expr, "true"), (~expr, "false"), else_=""), None
    if kind == "int":
        return func.coalesce(cast(expr, Text()), ""), None
    if kind == "text":
        return type_coerce(expr, String()), neutralise
    postgresql = dialect == "postgresql"
    if kind == "json":
        return (cast(expr, Text()) if postgresql else type_coerce(expr, String())), canonical_json_of_text
    if postgresql:
        if kind == "datetime":
            return func.coalesce(func.to_char(func.timezone("UTC", expr), _PG_TIMESTAMP), ""), None
        return func.coalesce(cast(expr, Text()), ""), None
    if kind == "decimal":
        scale = expr.type.scale if isinstance(expr.type, Numeric) and expr.type.scale is not None else 0
        return type_coerce(expr, String()), _sqlite_decimal(scale)
    return type_coerce(expr, String()), _sqlite_uuid if kind == "uuid" else _sqlite_datetime


class CsvEncoder:
    """Turns rows of read values into dialect bytes, a batch at a time (the caller hashes and stores the bytes)."""

    def __init__(self, columns: Sequence[Column], finishers: Sequence[Finish | None]) -> None:
        self.columns = tuple(columns)
        self._finish = [(i, f) for i, f in enumerate(finishers) if f is not None]
        self._quotable = [i for i, c in enumerate(self.columns) if c.kind in _QUOTABLE]

    def header(self) -> bytes:
        """Return the header record."""
        return self.encode([[c.header for c in self.columns]])

    def cells(self, rows: Iterable[Sequence[Any]]) -> list[list[str]]:
        """Return the cells of `rows`: each finished from its stored value, NULL as the empty cell."""
        finish = self._finish
        out = []
        for row in rows:
            cells = list(row)
            for i, step in finish:
                value = cells[i]
                cells[i] = "" if value is None else step(value)
            out.append(cells)
        return out

    def encode(self, rows: Iterable[list[str]]) -> bytes:
        """Return the records of rows of cells (the lists are quoted in place)."""
        quotable = self._quotable
        lines = []
        for cells in rows:
            for i in quotable:
                if _NEEDS_QUOTES(cells[i]):
                    cells[i] = '"' + cells[i].replace('"', '""') + '"'
            lines.append(",".join(cells))
        return ("\r\n".join(lines) + "\r\n").encode("utf-8") if lines else b""
