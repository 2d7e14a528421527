"""Field checks shared by the term sheets, the market and the loader.

Each check raises :class:`InputError` naming the field and the value, and
returns the cleaned value so that ``__post_init__`` can store it.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from .errors import InputError


def number(field: str, value: Any, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number in [lo, hi] (open ends if asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, value, "must be a number")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond the float range (TOML integers are unbounded)
        v = math.inf
    if not math.isfinite(v):
        raise InputError(field, value, "must be finite (not NaN or infinity)")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise InputError(field, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise InputError(field, value, f"must be {'<' if hi_open else '<='} {hi:g}")
    return v


def positive(field: str, value: Any) -> float:
    return number(field, value, lo=0.0, lo_open=True)


def non_negative(field: str, value: Any) -> float:
    return number(field, value, lo=0.0)


def fraction(field: str, value: Any) -> float:
    return number(field, value, lo=0.0, hi=1.0)


def integer(field: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(field, value, "must be an integer")
    if lo is not None and value < lo:
        raise InputError(field, value, f"must be >= {lo}")
    if hi is not None and value > hi:
        raise InputError(field, value, f"must be <= {hi}")
    return int(value)


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(field, value, "must be true or false")
    return value


def text(field: str, value: Any, *, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, value, "must be a non-empty string")
    if choices is not None and value not in choices:
        raise InputError(field, value, f"must be one of {', '.join(choices)}")
    return value


#: Dates QuantLib can represent (ql.Date's range).
FIRST_DATE, LAST_DATE = date(1901, 1, 1), date(2199, 12, 31)


def a_date(field: str, value: Any) -> date:
    if isinstance(value, datetime):
        raise InputError(field, value, "must be a date (YYYY-MM-DD), not a date-time")
    d = None
    if isinstance(value, date):
        d = value
    elif isinstance(value, str):
        try:
            d = date.fromisoformat(value)
        except ValueError:
            pass
    if d is None:
        raise InputError(field, value, "must be a date (YYYY-MM-DD)")
    if not FIRST_DATE <= d <= LAST_DATE:
        raise InputError(field, d.isoformat(), f"must lie between {FIRST_DATE.isoformat()} "
                         f"and {LAST_DATE.isoformat()} (QuantLib's date range)")
    return d


def dates(field: str, value: Any, *, increasing: bool = True) -> tuple[date, ...]:
    if not isinstance(value, list | tuple):
        raise InputError(field, value, "must be a list of dates")
    out = tuple(a_date(f"{field}[{i}]", v) for i, v in enumerate(value))
    if increasing:
        for i in range(1, len(out)):
            if out[i] <= out[i - 1]:
                raise InputError(f"{field}[{i}]", out[i].isoformat(),
                                 "dates must be strictly increasing")
    return out


def numbers(field: str, value: Any, check=number) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise InputError(field, value, "must be a non-empty list of numbers")
    return tuple(check(f"{field}[{i}]", v) for i, v in enumerate(value))
