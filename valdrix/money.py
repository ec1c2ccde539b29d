"""Money is Decimal: monthly amounts at 4 dp, hourly at 6 dp, never floats."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MONTHLY_QUANTUM = Decimal("0.0001")
HOURLY_QUANTUM = Decimal("0.000001")
ZERO = Decimal("0.0000")
HOURS_PER_MONTH = Decimal("730")
# Amounts beyond this are treated as input errors rather than costs (and fit NUMERIC(18,6)).
MAX_AMOUNT = Decimal("1000000000000")


def monthly(value: Decimal | int | str) -> Decimal:
    """Return `value` quantised to 4 decimal places (half-even)."""
    return Decimal(value).quantize(MONTHLY_QUANTUM, rounding=ROUND_HALF_EVEN)


def hourly(value: Decimal | int | str) -> Decimal:
    """Return `value` quantised to 6 decimal places (half-even)."""
    return Decimal(value).quantize(HOURLY_QUANTUM, rounding=ROUND_HALF_EVEN)


def parse_amount(raw: object) -> Decimal:
    """Return a finite Decimal parsed from `raw`; raise ValueError if it is not a finite number in range."""
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
