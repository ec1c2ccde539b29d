"""Money is Decimal: monthly amounts at 4 dp, hourly at 6 dp, never floats."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

MONTHLY_QUANTUM = Decimal("0.0001")
HOURLY_QUANTUM = Decimal("0.000001")
ZERO = Decimal("0.0000")
HOURS_PER_MONTH = Decimal("730")
# Amounts beyond this are treated as input errors rather than costs (and fit NUMERIC(18,6)).
MAX_AMOUNT = Decimal("1000000000000")


def monthly(value: Decimal | int | str) -> Decimal:
    """Return `value` quantised to 4 decimal places (half-even)."""
    # Rounding is passed by position: the C implementation's keyword parsing more than doubled the call's cost,
    # and the gate and a simulation's replay quantise a dozen amounts per decision.
    return Decimal(value).quantize(MONTHLY_QUANTUM, ROUND_HALF_EVEN)


def hourly(value: Decimal | int | str) -> Decimal:
    """Return `value` quantised to 6 decimal places (half-even)."""
    return Decimal(value).quantize(HOURLY_QUANTUM, ROUND_HALF_EVEN)


def parse_amount(raw: object) -> Decimal:
    """Return a finite Decimal parsed from `raw`; raise ValueError if it is not a finite number in range.

    For third-party documents (price books, billing exports, Terraform plans), which write numbers their own
    way (exponents, floats); amounts in our own API follow the strict grammar of `Amount` below.
    """
    if isinstance(raw, bool) or raw is None:
        raise ValueError("not a number")
    if isinstance(raw, float):
        raw = repr(raw)
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a decimal number: {raw!r}") from exc
    if not value.is_finite():
        raise ValueError("not a finite number")
    if abs(value) > MAX_AMOUNT:
        raise ValueError(f"amount exceeds {MAX_AMOUNT}")
    return value


# The one grammar for amounts in API requests and CLI options: ASCII digits, an optional minus sign where the
# field may be negative, an optional fraction of at most 6 digits (the hourly quantum), no leading zeros, no
# exponent, no whitespace or digit separators, at most 12 integer digits (below MAX_AMOUNT, and what a
# NUMERIC(18, 6) column holds). JSON integers in range are accepted too;
# JSON fractions are not, because a binary float no longer says which decimal the client wrote.
_INTEGER = r"(?:0|[1-9][0-9]{0,11})"
_FRACTION = r"(?:\.[0-9]{1,6})"
_POSITIVE_FRACTION = "|".join(f"0{{{n}}}[1-9][0-9]{{0,{5 - n}}}" for n in range(6))
_NON_NEGATIVE = rf"{_INTEGER}{_FRACTION}?"
_POSITIVE = rf"[1-9][0-9]{{0,11}}{_FRACTION}?|0\.(?:{_POSITIVE_FRACTION})"
AMOUNT_PATTERN = rf"^(?:{_NON_NEGATIVE})$"
POSITIVE_AMOUNT_PATTERN = rf"^(?:{_POSITIVE})$"
SIGNED_AMOUNT_PATTERN = rf"^-?(?:{_NON_NEGATIVE})$"
_LIMIT = int(MAX_AMOUNT) - 1  # the largest integer with 12 digits
_FLOORS = {"non_negative": 0, "positive": 1, "signed": -_LIMIT}


def _amount_parser(pattern: str, sign: str) -> Callable[[object], Decimal]:
    compiled = re.compile(pattern, re.ASCII)

    def parse(raw: object) -> Decimal:
        if isinstance(raw, Decimal | int) and not isinstance(raw, bool):
            # JSON integers, and Decimals built in Python (never from JSON, which yields no Decimal).
            value = Decimal(raw)
            in_range = value.is_finite() and abs(value) < MAX_AMOUNT and (
                sign == "signed" or value > 0 or (sign == "non_negative" and value == 0))
            if not in_range:
                raise ValueError(f"amount must be {sign.replace('_', '-')} and below {MAX_AMOUNT} in magnitude")
            return value
        if not isinstance(raw, str) or not compiled.fullmatch(raw):
            raise ValueError("amount must be a decimal string such as \"12.50\" (ASCII digits, at most 12 before "
                             "and 6 after the point, no exponent or spaces) or an integer, within range")
        value = Decimal(raw)
        return value.copy_abs() if value.is_zero() else value  # "-0" is zero, never echoed as -0.0000

    return parse


def _amount_schema(pattern: str, sign: str) -> dict[str, Any]:
    bound = {"exclusiveMinimum": 0} if sign == "positive" else {"minimum": _FLOORS[sign]}
    return {"anyOf": [{"type": "string", "pattern": pattern},
                      {"type": "integer", **bound, "maximum": _LIMIT}]}


# An amount of money in a request: ≥ 0, > 0, or signed.
Amount = Annotated[Decimal, BeforeValidator(_amount_parser(AMOUNT_PATTERN, "non_negative")),
                   WithJsonSchema(_amount_schema(AMOUNT_PATTERN, "non_negative"))]
PositiveAmount = Annotated[Decimal, BeforeValidator(_amount_parser(POSITIVE_AMOUNT_PATTERN, "positive")),
                           WithJsonSchema(_amount_schema(POSITIVE_AMOUNT_PATTERN, "positive"))]
SignedAmount = Annotated[Decimal, BeforeValidator(_amount_parser(SIGNED_AMOUNT_PATTERN, "signed")),
                         WithJsonSchema(_amount_schema(SIGNED_AMOUNT_PATTERN, "signed"))]


def parse_money(raw: str) -> Decimal:
    """Return the signed amount `raw` written in the request grammar; raise ValueError otherwise."""
    return _amount_parser(SIGNED_AMOUNT_PATTERN, "signed")(raw)
