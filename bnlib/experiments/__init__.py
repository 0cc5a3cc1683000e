"""Experiments: one function per figure of the book, each returning a tidy DataFrame.

Experiments never plot; :mod:`bnlib.figures` draws what they return. One module per
chapter (:mod:`bnlib.experiments.algorithm` for "The BN algorithm") plus the sweeps that
several chapters share (:mod:`bnlib.experiments.learning_rate`).

Every experiment is registered with three **profiles**, sets of arguments:

- ``smoke``: seconds; the same code paths and the same shapes of result (layers, units,
  seeds...) with very few steps, for tests that only need the chapters to execute;
- ``quick``: what the book executes on a 2-core CPU (seconds to a few minutes);
- ``full``: the papers' scale (50,000 steps, 5 seeds...), whose results are committed in
  ``results/full/`` and shown beside the quick ones (:mod:`bnlib.book`).

:func:`run` runs an experiment in a profile (chosen by argument, else ``BNLIB_PROFILE``,
else ``quick``) through the on-disk cache of :mod:`bnlib.results`, and returns its
:class:`bnlib.results.Result` (data + provenance). ``python -m bnlib list`` lists them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bnlib.provenance import computation_hash
from bnlib.results import Result, load_or_compute, prune_others

__all__ = ["PROFILES", "REGISTRY", "Experiment", "get", "profile_name", "register", "run"]

PROFILES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its function, its profiles and where the book uses it."""

    name: str
    function: Callable[..., pd.DataFrame]
    profiles: dict[str, dict]
    chapter: str

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        return (self.function.__doc__ or "").strip().splitlines()[0]


REGISTRY: dict[str, Experiment] = {}


def register(name: str, chapter: str, *, smoke: dict, quick: dict, full: dict):
    """Decorator: register ``function`` as experiment ``name`` with its three profiles.

    The same function may be registered under several names (one per figure), each with
    its own profiles. Each profile's dict holds keyword arguments of the function.
    """

    def wrap(function: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        profiles = {"smoke": smoke, "quick": quick, "full": full}
        parameters = inspect.signature(function).parameters
        for profile, config in profiles.items():
            unknown = sorted(set(config) - set(parameters))
            if unknown:
                raise TypeError(
                    f"experiment {name!r}, profile {profile!r}: {function.__name__}() takes no "
                    f"argument {', '.join(map(repr, unknown))}"
                )
        REGISTRY[name] = Experiment(name, function, profiles, chapter)
        return function

    return wrap


def profile_name(profile: str | None = None) -> str:
    """The profile to use: ``profile``, else ``$BNLIB_PROFILE``, else ``"quick"``."""
    chosen = profile or os.environ.get("BNLIB_PROFILE") or "quick"
    if chosen not in PROFILES:
        raise ValueError(
            f"unknown profile {chosen!r}: use one of {', '.join(PROFILES)} "
            "(set by argument or by the BNLIB_PROFILE environment variable)"
        )
    return chosen


def get(name: str) -> Experiment:
    """The registered experiment called ``name`` (a clear error lists the others)."""
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; experiments: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def run(
    name: str,
    profile: str | None = None,
    device: str | None = None,
    force: bool = False,
    **overrides,
) -> Result:
    """Run (or load from the cache) experiment ``name`` in a profile.

    Args:
        name: a registered experiment (``python -m bnlib list``).
        profile: ``"smoke"``, ``"quick"`` or ``"full"``; default ``$BNLIB_PROFILE`` or
            ``"quick"``.
        device: where to compute; ``None`` picks the best. Recorded in the provenance,
            not part of the cache key.
        force: compute even if a cached result exists.
        overrides: arguments that replace the profile's (part of the cache key).

    Returns:
        The :class:`bnlib.results.Result`: ``.frame`` (tidy data) and ``.meta``
        (config and provenance).
    """
    experiment = get(name)
    chosen = profile_name(profile)
    config = {**experiment.profiles[chosen], **overrides}
    takes_device = "device" in inspect.signature(experiment.function).parameters
    extra = {"device": device} if takes_device else {}
    result = load_or_compute(
        name,
        chosen,
        config,
        lambda: experiment.function(**config, **extra),
        device=device if takes_device else "cpu",
        force=force,
        code=code_hash(name),
    )
    if chosen == "full" and not overrides:
        prune_others(result)  # committed: one full result per experiment, the current one
    return result


def code_hash(name: str) -> str:
    """The hash of the code that computes experiment ``name``: the bnlib definitions its
    function reaches (:func:`bnlib.provenance.computation_hash`); part of its results'
    key."""
    function = get(name).function
    return computation_hash(function.__module__, function=function.__name__)


def _load_all() -> None:
    """Import the experiment modules, which register their experiments."""
    from bnlib.experiments import (  # noqa: F401
        algorithm,
        covariate_shift,
        factors,
        gradient_noise,
        initialization,
        landscape,
        large_steps,
        learning_rate,
        noise_controls,
        output_gradients,
    )
