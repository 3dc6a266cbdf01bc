"""Checks of single settings, each raising the one-line `InputError` that names the field, the value and the range
that makes sense. Settings classes call these from `__post_init__`, so a value is checked where it is defined."""

from __future__ import annotations

import math

from dti.core.errors import InputError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(field: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum] (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, value, "must be an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InputError(field, value, f"must be an integer in {_interval(minimum, maximum, True, True)}")
    return value


def number(field: str, value, minimum: float | None = None, maximum: float | None = None,
           open_min: bool = False, open_max: bool = False) -> float:
    """A finite number within the interval; `open_min`/`open_max` exclude the bound itself."""
    interval = _interval(minimum, maximum, not open_min, not open_max)
    if not _is_number(value) or not math.isfinite(value):
        raise InputError(field, value, f"must be a finite number in {interval}")
    low_ok = minimum is None or (value > minimum if open_min else value >= minimum)
    high_ok = maximum is None or (value < maximum if open_max else value <= maximum)
    if not (low_ok and high_ok):
        raise InputError(field, value, f"must be in {interval}")
    return float(value)


def choice(field: str, value, options) -> str:
    if value not in options:
        raise InputError(field, value, f"choose from {', '.join(map(str, options))}")
    return value


def _interval(low, high, closed_low: bool, closed_high: bool) -> str:
    left = "[" if closed_low and low is not None else "("
    right = "]" if closed_high and high is not None else ")"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
