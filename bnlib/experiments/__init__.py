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

import collections.abc
import inspect
import math
import numbers
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import UnionType
from typing import Union

import numpy as np
import pandas as pd

from bnlib.provenance import clean_revision, computation_hash, git_revision
from bnlib.results import Result, committed_store, load_or_compute, prune_others

__all__ = [
    "COUNT_ARGUMENTS",
    "OVERRIDES_STORE",
    "PROFILES",
    "REGISTRY",
    "Experiment",
    "Reproduction",
    "SIZE_ARGUMENTS",
    "STEP_ARGUMENTS",
    "SWEEP_ARGUMENTS",
    "check_arguments",
    "ensure_committable",
    "get",
    "load_all",
    "profile_name",
    "register",
    "run",
]

PROFILES = ("smoke", "quick", "full")
#: Where full-profile runs with replaced arguments (``--set``) are stored, apart from the
#: committed full results the book shows: ``<results>/full-overrides/<experiment>/``.
OVERRIDES_STORE = "full-overrides"

#: What the experiments' arguments mean, for the code that reads a config without running
#: it (the drift check cuts the step arguments, :mod:`bnlib.status` estimates the work,
#: :mod:`bnlib.book` labels a result's scale). Step arguments, with their labels:
STEP_ARGUMENTS = {"steps": "steps", "mlp_steps": "MLP steps", "linear_steps": "deep linear steps"}
#: Sweeps: lists whose length multiplies the work, with their (singular, plural) labels.
SWEEP_ARGUMENTS = {
    "seeds": ("seed", "seeds"),
    "lrs": ("learning rate", "learning rates"),
    "momenta": ("momentum", "momenta"),
    "shifts": ("shift", "shifts"),
    "shapes": ("shape", "shapes"),
    "norms": ("normalization", "normalizations"),
}
#: Counts, with their labels and whether they multiply the work.
COUNT_ARGUMENTS = {
    "draws": ("draws", True),
    "batches": ("batches", True),
    "units": ("units", False),
    "batch_size": ("batch size", False),
}
#: Sizes shown in a result's label (they change the work in ways no count captures).
SIZE_ARGUMENTS = {"blocks": "residual blocks"}


@dataclass(frozen=True)
class Reproduction:
    """How to check, without recomputing it whole, that the current code still computes an
    experiment's committed full result (:mod:`bnlib.validation`).

    Attributes:
        subset: arguments that replace the full profile's to compute **a part of the full
            run at its full length** (one seed, a few sweep points; never fewer steps):
            every row it returns is a row of the full result, which ``python -m bnlib
            status --revalidate`` compares with the committed one. ``{}`` recomputes the
            whole full run (for experiments of seconds).
        prefix: further arguments for the drift check that ``make test`` runs on every
            committed result (the subset's first :data:`bnlib.validation.PREFIX_STEPS`
            steps; step arguments are cut to that anyway), e.g. fewer checkpoints; ``None``
            when a shorter run has no rows in common with the full one (``why`` says why).
        rtol, atol: the tolerance of the comparison (relative and absolute, per value).
            The default absorbs float32 round-off between torch versions and thread
            counts; a change to the computation moves values by far more.
        seed_spread: where set, the values need not agree one by one: a column agrees
            when its median deviation is at most this many times the seeds' standard
            deviation of the rows (:func:`bnlib.validation.compare`). For runs whose
            subset cannot repeat the full run's arithmetic (random draws or float32
            round-off that depend on how many models are trained stacked, amplified over
            thousands of steps): such a reproduction detects changes larger than the
            seeds' spread (a flipped update, a broken normalization), not subtler ones,
            which the drift check's prefix (where one exists) compares exactly.
        why: why ``prefix`` is None, or why the tolerance is wider than the default.
    """

    subset: dict = field(default_factory=dict)
    prefix: dict | None = field(default_factory=dict)
    rtol: float = 2e-3
    atol: float = 2e-3
    seed_spread: float | None = None
    why: str = ""


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its function, its profiles and where the book uses it."""

    name: str
    function: Callable[..., pd.DataFrame]
    profiles: dict[str, dict]
    chapter: str
    reproduction: Reproduction = field(default_factory=Reproduction)
    shard_on: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        return (self.function.__doc__ or "").strip().splitlines()[0]

    @property
    def takes_device(self) -> bool:
        """Whether the function has a ``device`` argument (pure NumPy ones do not)."""
        return "device" in inspect.signature(self.function).parameters

    def with_defaults(self, config: dict) -> dict:
        """``config`` with the function's defaults for the arguments it leaves out (a
        sweep a profile does not set, such as the normalizations compared)."""
        parameters = inspect.signature(self.function).parameters.values()
        defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        return {**defaults, **config}

    def call(self, config: dict, device: str | None = None) -> pd.DataFrame:
        """The function run on ``config``, on ``device`` where it takes one."""
        return self.function(**config, **({"device": device} if self.takes_device else {}))


REGISTRY: dict[str, Experiment] = {}


def register(
    name: str,
    chapter: str,
    *,
    smoke: dict,
    quick: dict,
    full: dict,
    reproduce: Reproduction | None = None,
    shard_on: Sequence[str] = (),
):
    """Decorator: register ``function`` as experiment ``name``: everything about it in one
    place.

    Args:
        name: the experiment's name (``python -m bnlib run NAME``, ``book.result(NAME)``).
        chapter: the title of the chapter that shows it.
        smoke, quick, full: its three profiles, each a dict of keyword arguments of the
            function (see the module docstring).
        reproduce: how a code change is checked against its committed full result
            (:class:`Reproduction`); default: the whole full run, for cheap experiments.
        shard_on: list arguments along which its rows are computed independently: run on
            part of such a list, it returns exactly those rows of the whole run
            (``tests/test_distributed.py`` checks it for every experiment that names one).
            ``run --ray`` splits the run along the first of them that holds two values or
            more (:mod:`bnlib.distributed`); none: the run is one task.

    The same function may be registered under several names (one per figure), each with
    its own profiles.
    """

    def wrap(function: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        profiles = {"smoke": smoke, "quick": quick, "full": full}
        reproduction = reproduce or Reproduction()
        parameters = inspect.signature(function).parameters
        checked = {**profiles, "reproduction subset": reproduction.subset}
        checked["reproduction prefix"] = reproduction.prefix or {}
        checked["shard_on"] = dict.fromkeys(shard_on)
        for profile, config in checked.items():
            unknown = sorted(set(config) - set(parameters))
            if unknown:
                raise TypeError(
                    f"experiment {name!r}, profile {profile!r}: {function.__name__}() takes no "
                    f"argument {', '.join(map(repr, unknown))}"
                )
        REGISTRY[name] = Experiment(
            name, function, profiles, chapter, reproduction, tuple(shard_on)
        )
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
    load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; experiments: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def run(
    name: str,
    profile: str | None = None,
    device: str | None = None,
    force: bool = False,
    compute: Callable[[str, dict, str | None], tuple[pd.DataFrame, dict]] | None = None,
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
        compute: computes the frame elsewhere instead of in this process:
            ``compute(name, config, device)`` returns the frame and what to add to its
            metadata (:meth:`bnlib.distributed.RayRunner.compute`: shards on a Ray
            cluster, the same rows as one process; ``"provenance"`` entries replace the
            driver's, so that the device recorded is the one that computed).
        overrides: arguments that replace the profile's (part of the cache key). A full
            profile with replaced arguments is stored in ``<results>/full-overrides``,
            never with the committed full results the book shows.

    Returns:
        The :class:`bnlib.results.Result`: ``.frame`` (tidy data) and ``.meta``
        (config and provenance).
    """
    experiment = get(name)
    chosen = profile_name(profile)
    config = {**experiment.profiles[chosen], **check_arguments(name, overrides)}
    committed = chosen == "full" and config == experiment.profiles["full"]
    if committed:
        ensure_committable(name)
    takes_device = experiment.takes_device
    where: dict = {}

    def computed() -> pd.DataFrame:
        # data that load but are not the published files would train and be stored under
        # the published data's key: checked before any computation
        from bnlib.data import verify_files

        verify_files()
        if compute is None:
            return experiment.call(config, device)
        frame, record = compute(name, config, device if takes_device else None)
        # the workers' device and versions replace the driver's in the provenance
        where.update(record)
        return frame

    result = load_or_compute(
        name,
        chosen,
        config,
        computed,
        annotate=lambda: dict(where),
        # with compute, this process only merges: the provenance's device is the workers'
        device=device if takes_device and compute is None else "cpu",
        force=force,
        code=code_hash(name),
        # a full profile with replaced arguments is not the book's full result: kept apart
        store=OVERRIDES_STORE if chosen == "full" and not committed else chosen,
    )
    if committed:
        prune_others(result)  # committed: one full result per experiment, the current one
    return result


def ensure_committable(name: str) -> None:
    """Refuse, before any work, to compute a full result of ``name`` that would be committed
    (the repository's own results folder) from a git tree with uncommitted changes: a
    committed result names the commit whose code computed it.

    Raises:
        ValueError: the tree has uncommitted changes.
    """
    if committed_store() and clean_revision() is None:
        raise ValueError(
            f"a full result of {name!r} would be committed in results/full, but the git tree "
            f"has uncommitted changes ({git_revision()}): commit them first, so that the "
            "result names the commit whose code computed it (or set BNLIB_RESULTS to "
            "another folder for a trial run)"
        )


#: Whole-number arguments that may be 0 (an index or a seed); all others must be >= 1.
_MAY_BE_ZERO = frozenset({"seed", "seeds", "checkpoints", "units", "layer"})
#: Real-number arguments that must be > 0 (besides every learning rate: a name with "lr").
_POSITIVE = frozenset(
    {"std", "scales", "factors", "contrasts", "step_range", "epochs", "step_size"}
)
#: Real-number arguments that must be >= 0.
_NOT_NEGATIVE = frozenset({"weight_decay", "weight_decays", "eps_values", "momentum", "rates"})


def check_arguments(name: str, arguments: dict) -> dict:
    """Arguments given to experiment ``name`` (``--set`` or :func:`run`'s overrides),
    checked against its function's annotations before any work.

    Whole numbers must be whole (``1e3`` becomes 1000; ``2.5`` is refused) and at least 1
    (0 for seeds and indices); real numbers finite, learning rates and scales positive;
    lists non-empty lists of such values; ``None`` only where the function accepts it.
    Arguments of other types are passed through unchecked.

    Returns:
        The arguments, with whole numbers given as floats made ints.

    Raises:
        ValueError: an unknown argument or a value that does not fit, naming the argument,
            what it takes and what was given.
    """
    function = get(name).function
    parameters = [p for p in inspect.signature(function).parameters if p != "device"]
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that cannot be resolved here: check names only
        hints = {}
    checked = {}
    sweeps = {"seeds", *get(name).shard_on}  # each value is its own runs: one of each
    for key, value in arguments.items():
        if key not in parameters:
            raise ValueError(f"{name} has no argument {key!r}; it takes {', '.join(parameters)}")
        checked[key] = _check_value(name, key, value, hints.get(key))
        if key in sweeps and isinstance(checked[key], list):
            repeated = sorted({repr(v) for v in checked[key] if checked[key].count(v) > 1})
            if repeated:
                raise ValueError(
                    f"{name}: {key} holds {', '.join(repeated)} more than once; each value is "
                    "a run of its own, and a repeat would count the same run twice in every "
                    "mean and spread. Give each value once"
                )
    return checked


def _check_value(name: str, key: str, value: object, hint: object) -> object:
    def refuse(what: str) -> ValueError:
        return ValueError(f"{name}: {key} must be {what}, got {value!r}")

    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        rest = [o for o in options if o is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    origin = typing.get_origin(hint)
    if origin in (tuple, list, Sequence, collections.abc.Sequence) and hint is not str:
        if not isinstance(value, (list, tuple)) or not value:
            raise refuse("a non-empty list, e.g. [1, 2]")
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else None
        return [_check_value(name, key, item, inner) for item in value]
    if hint is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
            raise refuse("a whole number")
        value = int(value)
        if value < (0 if key in _MAY_BE_ZERO else 1):
            raise refuse("at least 0" if key in _MAY_BE_ZERO else "at least 1")
        return value
    if hint is float:
        if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
            raise refuse("a number")
        if not math.isfinite(value):
            raise refuse("a finite number")
        if ("lr" in key or key in _POSITIVE) and value <= 0:
            raise refuse("positive")
        if key in _NOT_NEGATIVE and value < 0:
            raise refuse("at least 0")
        return value
    if hint is str and not isinstance(value, str):
        raise refuse("a string")
    if hint is bool and not isinstance(value, bool):
        raise refuse("true or false")
    return value


def code_hash(name: str) -> str:
    """The hash of the code that computes experiment ``name``: the bnlib definitions its
    function reaches (:func:`bnlib.provenance.computation_hash`); part of its results'
    key."""
    function = get(name).function
    return computation_hash(function.__module__, function=function.__name__)


def load_all() -> None:
    """Import the experiment modules, which register their experiments (the CLI, ``status``
    and the benchmarks need all of them; a chapter imports only its own)."""
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


#: Why a shorter run has no rows in common with the full one (:attr:`Reproduction.why`).
MEASURES_AT_FRACTIONS = (
    "it measures at fractions of the run's length, so a shorter run measures at other steps"
)
MEASURES_AT_END = (
    "it measures once, at the end of the run (or of runs whose length its other arguments "
    "set), which a shorter run reaches sooner"
)
