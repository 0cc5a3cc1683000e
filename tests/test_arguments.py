"""bnlib.arguments: the argument checks, and the guards' contract (they only raise), which
is what lets the code hash leave bare calls to them out."""

from __future__ import annotations

import ast
import inspect
import math

import numpy as np
import pytest

from bnlib import arguments


def _guards() -> list[str]:
    return sorted(name for name in vars(arguments) if name.startswith("check_"))


def test_every_guard_is_public_and_documented():
    assert set(_guards()) <= set(arguments.__all__)
    for name in _guards():
        assert inspect.getdoc(getattr(arguments, name)), name


#: The calls a guard (and :func:`bnlib.arguments.whole_number`, which guards delegate to)
#: may make: reading and formatting values, and each other.
ALLOWED_CALLS = {
    "whole_number", "check_whole_number", "check_number", "_within", "len", "enumerate",
    "isinstance", "float", "int", "round", "max", "any", "type", "repr", "TypeError", "ValueError",
    "math.isnan", "math.isinf", "math.isfinite", "format", "join", "strip", "lstrip",
    "isdigit", "abs",
}  # fmt: skip


@pytest.mark.parametrize("name", [*_guards(), "whole_number", "_within"])
def test_a_guard_returns_nothing_and_changes_nothing(name):
    """A guard's body may read values, format messages and raise; it may not return a
    value (whole_number aside: guards discard it), write into anything but its own local
    names, yield, or call anything but :data:`ALLOWED_CALLS`, so that leaving its bare
    calls out of the code hash cannot hide a change of what is computed."""
    tree = ast.parse(inspect.getsource(getattr(arguments, name)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and name.startswith("check_"):
            assert node.value is None, f"{name} returns a value"
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                assert isinstance(target, ast.Name), f"{name} writes into {ast.unparse(target)}"
        forbidden = (ast.AugAssign, ast.Global, ast.Nonlocal, ast.Delete, ast.Yield)
        assert not isinstance(node, forbidden), f"{name}: {ast.unparse(node)}"
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            short = called.rsplit(".", 1)[-1] if isinstance(node.func, ast.Attribute) else called
            assert called in ALLOWED_CALLS or short in ALLOWED_CALLS, f"{name} calls {called}"


@pytest.mark.parametrize(
    ("value", "bounds", "error", "message"),
    [
        ("0.1", {}, TypeError, r"lr must be a number, got '0.1' \(str\). Fix: .* lr=0.1"),
        ("abc", {"above": 0}, TypeError, r"e\.g\. lr=1\.0$"),  # a valid example
        ("-0.1", {"above": 0}, TypeError, r"e\.g\. lr=1\.0$"),  # not the refused -0.1
        ("nan", {}, TypeError, r"e\.g\. lr=1\.0$"),
        (True, {}, TypeError, "lr must be a number"),
        (None, {}, TypeError, "lr must be a number"),
        (float("nan"), {}, ValueError, "lr must be a number, got NaN"),
        (np.nan, {}, ValueError, "got NaN"),
        (math.inf, {}, ValueError, "lr must be finite"),
        (0.0, {"above": 0}, ValueError, "lr must be > 0, got 0.0"),
        (-1, {"low": 0}, ValueError, "lr must be >= 0, got -1"),
        (2.0, {"low": 0, "high": 1}, ValueError, "lr must be <= 1, got 2.0"),
    ],
)
def test_check_number_refuses(value, bounds, error, message):
    with pytest.raises(error, match=message):
        arguments.check_number(value, "lr", **bounds)


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        (0.1, {"above": 0}),
        (np.float32(0.5), {"low": 0, "high": 1}),
        (3, {}),
        (None, {"allow_none": True}),
        (math.inf, {"above": 1, "allow_inf": True}),
    ],
)
def test_check_number_takes(value, bounds):
    assert arguments.check_number(value, "x", **bounds) is None


def test_sequences_name_the_position():
    with pytest.raises(ValueError, match=r"members\[1\]\.lr must be > 0, got -1"):
        arguments.check_numbers([0.1, -1], "members[{}].lr", above=0)
    with pytest.raises(TypeError, match=r"members\[0\]\.seed must be a whole number"):
        arguments.check_whole_numbers([1.5], "members[{}].seed", low=0)
    with pytest.raises(ValueError, match="models must hold at least one item"):
        arguments.check_nonempty([], "models")
    assert arguments.check_whole_number(np.int64(3), "n", low=1) is None
    with pytest.raises(TypeError, match=r"got the string '4'\. Fix: pass n=4"):
        arguments.check_whole_number("4", "n", low=1)


def test_a_sequence_of_whole_numbers_tells_a_digit_string_its_int():
    with pytest.raises(
        TypeError, match=r"members\[1\]\.seed must be a whole number .* pass members\[1\]\.seed=1"
    ):
        arguments.check_whole_numbers([0, "1"], "members[{}].seed", low=0)


def test_a_number_beyond_float32_is_refused_with_its_reason():
    from bnlib.arguments import check_number

    check_number(3e38, "lr", above=0)
    with pytest.raises(ValueError, match="lr must be within float32's range"):
        check_number(1e308, "lr", above=0)
