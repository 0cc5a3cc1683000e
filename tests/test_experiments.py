"""bnlib.experiments: the registry, profiles and run() through the cache."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json

import pytest

from bnlib import experiments


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    monkeypatch.delenv("BNLIB_PROFILE", raising=False)
    return tmp_path


def test_every_experiment_has_three_profiles_that_fit_its_signature():
    from bnlib.status import full_arguments, work

    experiments.load_all()
    assert {"lr_sweep", "running_statistics", "bias_blowup"} <= set(experiments.REGISTRY)
    for name, exp in experiments.REGISTRY.items():
        assert set(exp.profiles) == {"smoke", "quick", "full"}, name
        for config in exp.profiles.values():
            json.dumps(config)  # stored as JSON
            inspect.signature(exp.function).bind(**config)
        assert exp.description and exp.chapter
        smoke, quick, full = (work(full_arguments(name, p)) for p in ("smoke", "quick", "full"))
        assert smoke <= quick <= full, name


def test_a_profile_with_an_argument_the_function_lacks_is_refused():
    with pytest.raises(TypeError, match="profile 'full'.*no argument 'stepz'"):

        @experiments.register("typo", "nowhere", smoke={}, quick={}, full={"stepz": 5})
        def typo(steps: int = 1):
            """An experiment with a typo in its full profile."""

    assert "typo" not in experiments.REGISTRY


def test_profile_choice_and_errors(monkeypatch):
    assert experiments.profile_name(None) == "quick"
    monkeypatch.setenv("BNLIB_PROFILE", "full")
    assert experiments.profile_name(None) == "full"
    assert experiments.profile_name("quick") == "quick"
    monkeypatch.setenv("BNLIB_PROFILE", "medium")
    with pytest.raises(ValueError, match="unknown profile 'medium'.*BNLIB_PROFILE"):
        experiments.profile_name(None)
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*lr_sweep"):
        experiments.get("nope")


@pytest.fixture
def gradient_check_calls(monkeypatch) -> list[dict]:
    """The real ``gradient_check`` experiment, wrapped to record each computation's
    arguments (so a test can tell a cache hit from a recomputation)."""
    experiments.load_all()
    real = experiments.REGISTRY["gradient_check"]
    calls: list[dict] = []

    @functools.wraps(real.function)
    def counted(**kwargs):
        calls.append(kwargs)
        return real.function(**kwargs)

    monkeypatch.setitem(
        experiments.REGISTRY, "gradient_check", dataclasses.replace(real, function=counted)
    )
    return calls


def test_run_caches_and_records_the_profile(results, gradient_check_calls):
    first = experiments.run("gradient_check", shapes=[[2, 3]])
    assert gradient_check_calls == [{"shapes": [[2, 3]]}]
    again = experiments.run("gradient_check", shapes=[[2, 3]])
    assert len(gradient_check_calls) == 1, "the second run computed instead of reading"
    assert first.path == again.path and first.path.is_relative_to(results / "quick")
    assert first.meta["config"] == {"shapes": [[2, 3]]}
    assert first.frame["passed"].all()
    assert again.meta["provenance"]["date"] == first.meta["provenance"]["date"]
    experiments.run("gradient_check", shapes=[[2, 3]], force=True)
    experiments.run("gradient_check", shapes=[[3, 2]])
    assert len(gradient_check_calls) == 3  # force, and a changed config, compute
