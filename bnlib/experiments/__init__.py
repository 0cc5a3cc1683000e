"""Experiments: one function per figure of the book, each returning a tidy DataFrame.

Experiments never plot; :mod:`bnlib.figures` draws what they return. One module per
chapter (:mod:`bnlib.experiments.algorithm` for "The BN algorithm") plus the sweeps that
several chapters share (:mod:`bnlib.experiments.learning_rate`).

Every experiment is registered with two **profiles**, sets of arguments:

- ``quick``: what the book executes on a 2-core CPU (seconds to a minute);
- ``full``: the papers' scale, for a GPU.

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

from bnlib.results import Result, load_or_compute

__all__ = ["PROFILES", "REGISTRY", "Experiment", "get", "profile_name", "register", "run"]

PROFILES = ("quick", "full")


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


def register(name: str, chapter: str, quick: dict, full: dict):
    """Decorator: register ``function`` as experiment ``name`` with its two profiles."""

    def wrap(function: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        REGISTRY[name] = Experiment(name, function, {"quick": quick, "full": full}, chapter)
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
        profile: ``"quick"`` or ``"full"``; default ``$BNLIB_PROFILE`` or ``"quick"``.
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
    return load_or_compute(
        name,
        chosen,
        config,
        lambda: experiment.function(**config, **extra),
        device=device if takes_device else "cpu",
        force=force,
    )


def _load_all() -> None:
    """Import the experiment modules, which register their experiments."""
    from bnlib.experiments import algorithm, covariate_shift, learning_rate  # noqa: F401
