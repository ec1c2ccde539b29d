"""The export CSV dialect and cell formatting, fixed so an archive hashes the same on every backend.

Dialect (`valdrix.audit.csv.v1`): RFC 4180 — comma separator, `"` quote doubled inside quoted fields, fields
quoted only when they contain a comma, quote, CR or LF, every record (the header too) ends with CRLF; UTF-8
without a byte-order mark; the first record is the header.

Cells, by column kind:
  text      the stored string; neutralised against spreadsheet formula injection (below)
  int       decimal digits
  decimal   plain notation (`format(d, "f")`, never an exponent), at the column's stored scale
  bool      `true` / `false`
  datetime  ISO-8601 in UTC with microseconds and offset: `2026-03-01T10:00:00.000000+00:00`
  uuid      lower-case hyphenated
  json      canonical JSON (`valdrix.canonical.canonical_json`: sorted keys, compact, ASCII)
  NULL      the empty cell (a text column never holds NULL and an empty string at once in our schema)

Neutralisation applies to `text` cells only: one leading `'` is added when the value starts with `=`, `+`, `-`,
`@`, TAB or CR, so a spreadsheet shows it as text instead of evaluating a formula. A value that itself starts
with `'` also gets one, which makes the escape reversible: a reader strips exactly one leading `'` from a text
cell that has one (`unneutralise`). Typed columns are never neutralised: our own formatting of a number, hash,
UUID, timestamp or JSON object cannot form a formula, and a negative amount must stay a number.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from valdrix.canonical import canonical_json

DIALECT = "valdrix.audit.csv.v1"
Kind = Literal["text", "int", "decimal", "bool", "datetime", "uuid", "json"]
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "'")


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


def _text(value: Any) -> str:
    return neutralise(str(value))


def _bool(value: Any) -> str:
    return "true" if value else "false"


def _int(value: Any) -> str:
    return str(int(value))


def _decimal(value: Any) -> str:
    if not isinstance(value, Decimal):
        raise TypeError(f"decimal column holds {type(value).__name__}")
    return format(value, "f")


def _datetime(value: Any) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError("datetime column holds a naive or non-datetime value")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _uuid(value: Any) -> str:
    return str(uuid.UUID(str(value)))


_FORMATTERS: dict[str, Callable[[Any], str]] = {"text": _text, "json": canonical_json, "bool": _bool, "int": _int,
                                                "decimal": _decimal, "datetime": _datetime, "uuid": _uuid}


def cell(kind: Kind, value: Any) -> str:
    """Return one value formatted as a cell of `kind`; raise TypeError for a value the kind cannot hold."""
    return "" if value is None else _FORMATTERS[kind](value)


class CsvEncoder:
    """Turns rows into dialect bytes, a batch at a time (the caller hashes and stores the bytes)."""

    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        self._formatters = [_FORMATTERS[c.kind] for c in columns]
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)

    def header(self) -> bytes:
        """Return the header record."""
        self._writer.writerow([c.header for c in self.columns])
        return self._take()

    def rows(self, rows: Iterable[Sequence[Any]]) -> bytes:
        """Return the records of `rows`, whose values are in column order."""
        formatters = self._formatters
        self._writer.writerows([("" if v is None else f(v)) for f, v in zip(formatters, row, strict=True)]
                               for row in rows)
        return self._take()

    def _take(self) -> bytes:
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        return data
