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

Reading: an export reads rows at database speed. On PostgreSQL the database forms every cell but text and JSON
and joins each run of them into one text of the record (`segment`): `numeric::text`, `to_char` in UTC,
`uuid::text`, integers, a CASE for booleans. Python then receives a few values per row instead of one per
cell, and its own process is spared the formatting. On SQLite the database forms only integers and booleans:
its expression evaluator costs more per cell than Python's finishing of a column of a batch. Instead it
carries each row's pieces but Numeric and a decision's documents in one JSON array (`pack`): the driver turns
one text per row into a Python object instead of one value per cell, while holding the interpreter lock that
the server's threads share, and a batch's arrays are parsed at once where it is formatted (`unpack`). Text is
finished in Python on both: deciding per cell whether to neutralise and quote it costs either database more than
Python's finishing of the whole column (measured per 100 000 rows: the tests of 11 text columns cost SQLite
0.65 s, twice what reading them raw costs, and PostgreSQL's backend about 1 s). Python finishes a column of a
batch at a time: text (neutralised and quoted, which most columns of a batch need not be: substring tests over
the joined column tell), JSON (canonicalised; a decision's documents are finished row by row instead, see
`streams._documents`), and on SQLite UUIDs (32 hex digits), datetimes (stored as
`YYYY-MM-DD HH:MM:SS.ffffff`, another layout parsed) and Numeric (a binary float rounded to the column's
scale, as SQLAlchemy reads it; SQLite's printf rounds differently beyond 15 digits). A record
is then one join of its pieces. `tests/integration/test_exports.py` checks both backends give the same bytes
for the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from typing import Any, Literal

import orjson
from sqlalchemy import Numeric, String, Text, case, cast, func, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from valdrix.canonical import canonical_json_of_text

DIALECT = "valdrix.audit.csv.v2"
Kind = Literal["text", "int", "decimal", "bool", "datetime", "uuid", "json"]
# Turns one column of a batch, as stored, into its CSV fields.
Finish = Callable[[Sequence[Any]], Sequence[str]]
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "'")
_LEADS = frozenset(_FORMULA_LEADS)
_PG_TIMESTAMP = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
# Stored JSON texts up to this length are remembered per export with their cells: reason codes, empty details
# and the like repeat on most rows.
_MEMO_TEXT = 128
_MEMO_ENTRIES = 4096


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


def field(cell: str) -> str:
    """Return the CSV field of `cell`: quoted, its quotes doubled, when it holds a comma, quote or line break."""
    if '"' in cell or "," in cell or "\n" in cell or "\r" in cell:
        return '"' + cell.replace('"', '""') + '"'
    return cell


def unfield(text: str) -> str:
    """Return the cell of a CSV field as `field` writes it."""
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def _text_fields(values: Sequence[Any]) -> Sequence[str]:
    """Return the fields of a column of stored text (NULL read as ""): neutralised, quoted where needed.

    Most columns of a batch need neither, which four substring tests over the joined column and the set of
    first characters tell.
    """
    joined = "".join(values)
    if '"' in joined or "," in joined or "\r" in joined or "\n" in joined or not _LEADS.isdisjoint(
            {v[:1] for v in values}):
        return [field(neutralise(v)) for v in values]
    return values


def _json_fields(memo: dict[str, str]) -> Finish:
    def finish(values: Sequence[Any]) -> list[str]:
        out: list[str] = []
        append, remembered = out.append, memo.get
        for stored in values:
            if stored is None:
                append("")
                continue
            cell = remembered(stored)
            if cell is None:
                cell = field(canonical_json_of_text(stored))
                if len(stored) <= _MEMO_TEXT:
                    if len(memo) >= _MEMO_ENTRIES:
                        memo.clear()
                    memo[stored] = cell
            append(cell)
        return out
    return finish


def _sqlite_uuids(values: Sequence[Any]) -> list[str]:
    return ["" if v is None else f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}".lower() for v in values]


def _sqlite_datetime(stored: str) -> str:
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}+00:00"
    # Another writer's layout (no microseconds, an offset): parse it rather than assume.
    value = datetime.fromisoformat(stored)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def _sqlite_datetimes(values: Sequence[Any]) -> list[str]:
    return ["" if v is None else _sqlite_datetime(v) for v in values]


def _sqlite_decimals(scale: int) -> Finish:
    # The stored binary float rounded to the column's scale: what SQLAlchemy's Numeric returns on SQLite.
    pattern = f"%.{scale}f"  # formats as f"{v:.{scale}f}" does, without parsing the spec per value

    def finish(values: Sequence[Any]) -> list[str]:
        return ["" if v is None else pattern % v for v in values]
    return finish


def reader(expr: ColumnElement[Any], kind: Kind, dialect: str) -> tuple[ColumnElement[Any], Finish | None]:
    """Return the SQL reading `expr` as a field of `kind` on `dialect`, and the Python step finishing it (if any).

    Without a finishing step the SQL yields the CSV field itself, NULL as the empty field; a finishing step is
    given a batch's stored values of the column (None for NULL) and returns their fields.
    """
    if kind == "bool":
        return case((expr, "true"), (~expr, "false"), else_=""), None
    if kind == "int":
        return func.coalesce(cast(expr, Text()), ""), None
    if kind == "text":
        return func.coalesce(type_coerce(expr, String()), ""), _text_fields
    postgresql = dialect == "postgresql"
    if kind == "json":
        return (cast(expr, Text()) if postgresql else type_coerce(expr, String())), _json_fields({})
    if postgresql:
        if kind == "datetime":
            return func.coalesce(func.to_char(func.timezone("UTC", expr), _PG_TIMESTAMP), ""), None
        return func.coalesce(cast(expr, Text()), ""), None
    if kind == "decimal":
        scale = expr.type.scale if isinstance(expr.type, Numeric) and expr.type.scale is not None else 0
        return type_coerce(expr, String()), _sqlite_decimals(scale)
    if kind == "uuid":
        return type_coerce(expr, String()), _sqlite_uuids
    return type_coerce(expr, String()), _sqlite_datetimes


def sql_field(expr: ColumnElement[Any], kind: Kind, dialect: str) -> ColumnElement[str] | None:
    """Return the SQL forming the CSV field of `expr` on `dialect` ("" for NULL), or None where Python finishes it.

    Python finishes text (neutralised, quoted) and JSON (canonicalised) everywhere and, on SQLite, all but integers
    and booleans: a database's expression evaluator costs more per cell than Python's finishing of a whole
    column of a batch.
    """
    if kind in ("json", "text") or (dialect != "postgresql" and kind not in ("bool", "int")):
        return None
    sql, _ = reader(expr, kind, dialect)
    return type_coerce(sql, String())


def packs(kind: Kind, dialect: str) -> bool:
    """Return whether a piece of `kind` read on `dialect` travels in its row's JSON array (`pack`).

    On SQLite every piece does but Numeric, a binary float that the array would print to 15 significant digits
    only: the driver turns each cell of a row into a Python object while it holds the interpreter lock, one
    array per row is a single text, and the pieces are taken out of a batch's arrays in one parse (`unpack`)
    where the batch is formatted. PostgreSQL already reads a few pieces per row (`segment`).
    """
    return dialect != "postgresql" and kind != "decimal"


def pack(pieces: Sequence[ColumnElement[Any]]) -> ColumnElement[str]:
    """Return the SQL reading `pieces` as one JSON array (SQLite's json_array: texts as strings, NULL as null)."""
    return type_coerce(func.json_array(*pieces), String())


def unpack(arrays: Sequence[str]) -> list[tuple[Any, ...]]:
    """Return the pieces of a batch's JSON arrays (`pack`, one per row, at least one), column by column."""
    return list(zip(*orjson.loads("[" + ",".join(arrays) + "]"), strict=True))


def segment(fields: Sequence[ColumnElement[str]]) -> ColumnElement[str]:
    """Return the SQL joining consecutive fields into one piece of the record (NULL when one of them is)."""
    return reduce(lambda a, b: a + "," + b, fields)


class CsvEncoder:
    """Turns batches of read rows into dialect bytes (the caller hashes and stores the bytes).

    A row's first values are the record's pieces, each a field or a run of fields formed by SQL (no finisher)
    or a stored value its finisher turns into a field; any values after them are the caller's.
    """

    def __init__(self, columns: Sequence[Column], finishers: Sequence[Finish | None]) -> None:
        self.columns = tuple(columns)
        self._finish = [(i, f) for i, f in enumerate(finishers) if f is not None]

    def header(self) -> bytes:
        """Return the header record."""
        return self.encode([[field(c.header)] for c in self.columns])

    def finish(self, columns: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """Return the columns of a batch, each piece with a finisher finished as a whole."""
        fields = list(columns)
        for i, finish in self._finish:
            fields[i] = finish(fields[i])
        return fields

    @staticmethod
    def encode(fields: Sequence[Sequence[str]]) -> bytes:
        """Return the records of pieces given column by column."""
        lines = list(map(",".join, zip(*fields, strict=True)))
        return ("\r\n".join(lines) + "\r\n").encode("utf-8") if lines else b""
