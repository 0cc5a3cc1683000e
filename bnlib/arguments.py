"""Checks of the arguments users pass, shared across bnlib.

Two kinds:

- :func:`whole_number` returns the value in the type the code needs, or raises.
- The ``check_*`` functions are **guards**: they inspect their arguments, raise an error
  that names the argument and the fix, and otherwise do nothing (they return ``None`` and
  change nothing). A guard cannot change what a computation that completes computes, so a
  bare call to one (``arguments.check_number(gain, "gain")`` as a statement of its own)
  is left out of the code hash that keys stored results
  (:func:`bnlib.provenance.computation_hash`): checks can be added to the models, the
  normalization layers and the trainer without staling hours of committed results.
  ``tests/test_arguments.py`` holds every ``check_*`` function to that contract.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "REDUCED_PRECISION",
    "check_full_precision",
    "check_nonempty",
    "check_number",
    "check_numbers",
    "check_same_length",
    "check_whole_number",
    "check_whole_numbers",
    "whole_number",
]


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


def check_whole_number(
    value: object, name: str, low: int, high: int | None = None, note: str = ""
) -> None:
    """A guard: :func:`whole_number`'s check, for code that goes on using ``value`` as is.

    Raises:
        TypeError: not a whole number (a string of digits is told its int). ValueError:
            outside ``low..high``.
    """
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        raise TypeError(
            f"{name} must be a whole number (an int), got the string {value!r}. "
            f"Fix: pass {name}={int(value)}"
        )
    whole_number(value, name, low, high, note)


def check_whole_numbers(
    values: Sequence[object], name: str, low: int, high: int | None = None, note: str = ""
) -> None:
    """A guard: :func:`check_whole_number` on each of ``values``; ``name`` is a template
    with ``{}`` for the position (``"members[{}].seed"``)."""
    for i, value in enumerate(values):
        check_whole_number(value, name.format(i), low, high, note)


#: The largest float32: a number beyond it cannot reach a float32 computation (torch's
#: optimizers refuse such a learning rate with an overflow error deep inside a step).
FLOAT32_MAX = 3.4028234663852886e38


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> None:
    """A guard: ``value`` must be a real number (not a bool, a string or NaN) in range.

    Args:
        value: what the user passed.
        name: the argument's name, for the message.
        low, high: inclusive bounds (``None``: none).
        above: an exclusive lower bound (``above=0``: positive).
        allow_none: ``None`` is a valid value (it means something, as momentum's
            cumulative average does).
        allow_inf: infinity is a valid value (a threshold that never triggers).

    Raises:
        TypeError: not a real number (the message suggests one).
        ValueError: NaN, infinite, beyond float32's range, or out of range.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fallback = above + 1 if above is not None else low if low is not None else high
        example = 1.0 if fallback is None else float(fallback)
        try:
            parsed = float(value)  # "0.1" -> 0.1, if that is a valid value
            if math.isfinite(parsed) and _within(parsed, low, high, above):
                example = parsed
        except (TypeError, ValueError):
            pass
        also = " or None" if allow_none else ""
        raise TypeError(
            f"{name} must be a number{also}, got {value!r} ({type(value).__name__}). "
            f"Fix: pass a float, e.g. {name}={example!r}"
        )
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value}")
    if math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ValueError(
            f"{name} must be within float32's range (at most {FLOAT32_MAX:.3g} in size), the "
            f"precision bnlib computes in, got {value:g}"
        )
    bounds = [
        f">= {low}" if low is not None and value < low else "",
        f"<= {high}" if high is not None and value > high else "",
        f"> {above}" if above is not None and not value > above else "",
    ]
    if any(bounds):
        raise ValueError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {value}")


def _within(value: float, low: float | None, high: float | None, above: float | None) -> bool:
    """Whether ``value`` lies within :func:`check_number`'s bounds."""
    return (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (above is None or value > above)
    )


def check_numbers(values: Sequence[object], name: str, **bounds: float | bool | None) -> None:
    """A guard: :func:`check_number` on each of ``values``, with the same ``bounds``;
    ``name`` is a template with ``{}`` for the position (``"members[{}].lr"``)."""
    for i, value in enumerate(values):
        check_number(value, name.format(i), **bounds)


def check_nonempty(values: Sequence[object], name: str) -> None:
    """A guard: ``values`` must hold at least one item.

    Raises:
        ValueError: ``values`` is empty.
    """
    if len(values) == 0:
        raise ValueError(
            f"{name} must hold at least one item, got an empty {type(values).__name__}"
        )


#: Floating-point types too narrow for bnlib's statistics (float16 overflows above 6.5e4,
#: so ``(x - mean)**2`` does for activations above ~256; bfloat16 keeps 8 bits of mantissa).
REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def check_full_precision(dtype: torch.dtype | None, name: str) -> None:
    """A guard: bnlib's normalization computes its statistics in the input's own dtype, so
    float16 and bfloat16 (autocast's types) are refused rather than silently overflowed.

    Raises:
        TypeError: ``dtype`` is float16 or bfloat16.
    """
    if dtype in REDUCED_PRECISION:
        raise TypeError(
            f"{name} is {dtype}: bnlib's BatchNorm computes its batch statistics in the "
            "input's dtype; in float16 (x - mean)**2 overflows for activations above ~256 "
            "(every channel then outputs 0), and bfloat16's 8-bit mantissa is too coarse "
            "for a mean and a variance. Fix: run the model in float32 "
            "(model.float(), or leave BN out of torch.autocast), or use torch.nn.BatchNorm1d/2d, "
            "which computes the statistics in float32 under mixed precision"
        )


def check_same_length(first: Sequence[object], second: Sequence[object], names: str) -> None:
    """A guard: ``first`` and ``second`` pair up one to one (inputs and their labels).

    Args:
        names: how the message names the two, e.g. ``"data.x and data.y"``.

    Raises:
        ValueError: their lengths differ.
    """
    if len(first) != len(second):
        raise ValueError(
            f"{names} must have the same length (one label per input), got {len(first)} and "
            f"{len(second)}. Fix: build the split from matching slices, e.g. Split(x[:n], y[:n])"
        )
