"""Argument checks shared by the model API and the read side: counts, versions, TTLs."""

from __future__ import annotations

import operator
from typing import Any

from streamstore.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["MAX_EXACT", "MAX_TTL", "checked_count", "checked_int", "checked_ttl"]

#: Largest TTL in seconds (about 31,700 years). Redis's EXPIRE refuses more than about 9.2e15 s
#: (the expiry in ms must fit a signed 64-bit int), and the script keeps expiry times in epoch
#: ms as Lua numbers (doubles), exact only below 2**53 ms: 10**12 s stays far inside both.
MAX_TTL = 10**12
#: Largest count or version the script reads as a number: Lua numbers are doubles.
MAX_EXACT = 2**53 - 1


def checked_int(value: Any, name: str, *, low: int, high: int = MAX_EXACT) -> int:
    """Return ``value`` as an int from ``low`` to ``high``, or raise naming ``name``.

    Anything with ``__index__`` counts as an int (numpy's too); bools do not, nor do floats,
    even whole ones, nor numeric text. `ArgumentTypeError` (a TypeError) for the wrong type,
    `ArgumentValueError` (a ValueError) for one out of range.
    """
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    number = operator.index(value)
    if not low <= number <= high:
        raise ArgumentValueError(f"{name} must be from {low} to {high}, not {number}")
    return number


def checked_ttl(value: Any, name: str = "ttl") -> int:
    """Return a TTL in seconds checked: an int from 1 to `MAX_TTL` (see `checked_int`)."""
    return checked_int(value, name, low=1, high=MAX_TTL)


def checked_count(value: Any, name: str) -> int:
    """Return a count or version checked: an int from 0 to `MAX_EXACT` (see `checked_int`)."""
    return checked_int(value, name, low=0)
