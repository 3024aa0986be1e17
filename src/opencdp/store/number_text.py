"""The texts the stores keep for a JSON number, so property filters match numbers alike.

An event's ``rawData`` is stored as msgspec encodes it: an integer as its digits, a
float in its shortest form (``1e16``, ``1e-7``, ``-0.0``). SQLite keeps that text;
PostgreSQL's ``jsonb`` keeps the number and prints it in plain decimals
(``10000000000000000``, ``0.0000001``, ``0.0``).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

_encode = msgspec.json.encode


def number_forms(value: str, *, plain: bool) -> list[str] | None:
    """The texts a store holds for the numbers a filter ``value`` names; None: no number.

    PostgreSQL keeps a number in plain decimals (``1e16`` → ``10000000000000000``,
    ``-0.0`` → ``0.0``); SQLite keeps it as it was written, which for an event is how
    its ``rawData`` was encoded: an integer's digits or a float's shortest form.
    """
    try:
        number = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    decimal = _plain(value)
    if plain:
        return [decimal]
    written = [decimal, "-0.0"] if decimal == "0.0" else [decimal]
    try:
        written.append(_encode(float(number)).decode())
    except OverflowError:  # an integer too large for any float
        pass
    return sorted({form for form in written if _plain(form) == decimal})


def _plain(number: str) -> str:
    """A JSON number in decimals without exponent, as PostgreSQL prints it (no ``-0``)."""
    decimal = Decimal(number)
    return format(decimal.copy_abs() if decimal.is_zero() else decimal, "f")
