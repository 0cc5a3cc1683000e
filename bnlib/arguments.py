"""Checks of the arguments users pass, shared across bnlib: each returns the value in the
type the code needs, or raises an error that names the argument and the fix."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["whole_number"]


def whole_number(
    value: object, name: str, low: int, high: int | None = None, note: str = ""
) -> int:
    """``value`` as an int in ``low..high``, else a clear error naming ``name``.

    Args:
        value: what the user passed (an int or a NumPy integer; not a bool or a float).
        name: the argument's name, for the message.
        low, high: the bounds (inclusive); ``high=None`` for none.
        note: appended to the range in the message (why the bound).

    Raises:
        TypeError: not a whole number (the message suggests one).
        ValueError: out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        example = low
        if isinstance(value, float) and math.isfinite(value):
            example = max(low, round(value))
        raise TypeError(
            f"{name} must be a whole number (an int), got {value!r} "
            f"({type(value).__name__}). Fix: pass an int, e.g. {name}={example}"
        )
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}{note}, got {value}")
    return int(value)
