"""Where every experiment stands: quick result cached? full result committed and current?

:func:`status` is what ``python -m bnlib status`` prints; :func:`run_all` is
``python -m bnlib run --all``: it runs, in one go, every experiment whose result in a
profile is missing or was computed by older code, and says first how long it expects that
to take on this device.

Time estimates scale the wall time of the cached quick result, measured on this device, by
the ratio of the two profiles' **work**: the number of training steps (summed over step
arguments such as ``mlp_steps`` and ``linear_steps``) times the number of seeds, learning
rates, momenta... (the lengths of the list arguments), or the number of draws or batches
for experiments that do not train. They are estimates: evaluation cost does not scale
exactly with the steps.
"""

from __future__ import annotations

import inspect
import json
import sys
import time

import pandas as pd

from bnlib import experiments
from bnlib.book import format_duration, full_result
from bnlib.provenance import device_description
from bnlib.results import cache_key, results_dir

__all__ = ["estimate_seconds", "format_status", "run_all", "status", "work"]

_STEP_KEYS = ("steps", "mlp_steps", "linear_steps")
_LIST_KEYS = ("seeds", "lrs", "momenta", "shapes", "shifts", "norms")
_COUNT_KEYS = ("draws", "batches")


def work(config: dict) -> float:
    """The amount of work a config asks for, in arbitrary units (see the module docstring).

    ``config`` should hold every argument (:func:`full_arguments`), defaults included.
    """
    steps = sum(config[k] for k in _STEP_KEYS if k in config)
    total = float(steps) if steps else 1.0
    for key in _LIST_KEYS:
        if isinstance(config.get(key), list | tuple):
            total *= max(1, len(config[key]))
    for key in _COUNT_KEYS:
        if isinstance(config.get(key), int):
            total *= config[key]
    if "lr_count" in config:
        total *= config["lr_count"]
    return total


def full_arguments(name: str, profile: str) -> dict:
    """Experiment ``name``'s arguments in ``profile``, with the function's defaults filled in."""
    experiment = experiments.get(name)
    defaults = {
        k: p.default
        for k, p in inspect.signature(experiment.function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **experiment.profiles[profile]}


def _cached_meta(name: str, profile: str) -> dict | None:
    """The metadata of ``name``'s cached result in ``profile`` for the current code."""
    experiment = experiments.get(name)
    key = cache_key(name, experiment.profiles[profile], experiments.code_hash(name))
    path = results_dir() / profile / name / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def estimate_seconds(name: str, device: str | None = None) -> float | None:
    """Estimated wall time of ``name``'s full profile on ``device``, in seconds.

    Returns:
        The estimate, or None when no quick result computed on this device is cached to
        scale from (``python -m bnlib run NAME`` makes one).
    """
    quick = _cached_meta(name, "quick")
    if quick is None or quick["provenance"]["device"] != device_description(device):
        return None
    ratio = work(full_arguments(name, "full")) / max(work(full_arguments(name, "quick")), 1e-9)
    return quick["wall_time_s"] * ratio


def status(device: str | None = None) -> pd.DataFrame:
    """One row per registered experiment.

    Returns:
        Columns ``experiment, chapter, quick`` ("cached" or "-"), ``full`` ("current",
        "stale: older code", or "-" for none committed) and ``full run here`` (the
        estimated wall time on ``device``, or "unknown").
    """
    experiments._load_all()
    rows = []
    for name in sorted(experiments.REGISTRY):
        stored = full_result(name)
        full = "-" if stored is None else ("current" if stored.current else "stale: older code")
        rows.append(
            {
                "experiment": name,
                "chapter": experiments.REGISTRY[name].chapter,
                "quick": "cached" if _cached_meta(name, "quick") else "-",
                "full": full,
                "full run here": format_duration(estimate_seconds(name, device)),
            }
        )
    return pd.DataFrame(rows)


def format_status(table: pd.DataFrame) -> str:
    """The status table as plain text, with a line saying what the columns mean."""
    return (
        table.to_string(index=False)
        + "\n\nquick: cached for the current code; full: committed in results/full "
        "(stale = computed by older code); full run here: estimated from the quick run's "
        "wall time on this device (unknown: no quick result from this device yet)."
    )


def _pending(profile: str, force: bool) -> list[str]:
    experiments._load_all()
    names = sorted(experiments.REGISTRY)
    if force:
        return names
    if profile == "full":
        return [n for n in names if (s := full_result(n)) is None or not s.current]
    return [n for n in names if _cached_meta(n, profile) is None]


def run_all(profile: str, device: str, force: bool = False) -> list[str]:
    """Run every experiment whose ``profile`` result is missing or stale (all if ``force``).

    Prints the plan first (on a CPU, with the estimated total time), then each
    experiment's own progress bars and, between experiments, the estimated time left.

    Returns:
        The names run.
    """
    names = _pending(profile, force)
    if not names:
        print(f"every {profile} result is present and current; nothing to run")
        return []
    estimates = {n: (estimate_seconds(n, device) if profile == "full" else None) for n in names}
    known = [v for v in estimates.values() if v is not None]
    total = sum(known)
    where = device_description(device)
    print(
        f"{len(names)} experiment(s) to run at the {profile} profile on {where}: {', '.join(names)}"
    )
    if profile == "full":
        unknown = [n for n, v in estimates.items() if v is None]
        print(
            f"estimated time: {format_duration(total)}"
            + (
                f" plus {len(unknown)} without an estimate ({', '.join(unknown)})"
                if unknown
                else ""
            )
            + (" (a CPU: expect hours for the larger ones)" if where.startswith("cpu") else "")
        )
    sys.stdout.flush()
    left = total
    for i, name in enumerate(names, 1):
        eta = estimates[name]
        print(
            f"[{i}/{len(names)}] {name}: estimated {format_duration(eta)}; "
            f"about {format_duration(left)} left in all"
        )
        sys.stdout.flush()
        start = time.perf_counter()
        result = experiments.run(name, profile, device=device, force=force)
        took = time.perf_counter() - start
        left = max(0.0, left - (eta if eta is not None else 0.0))
        print(f"  done in {format_duration(took)} -> {result.path}")
    return names


#: Steps of a drift check's prefix run (see :func:`drift`).
PREFIX_STEPS = 40
#: Experiments whose shorter run is not a prefix of the full one, with the reason; their
#: drift check compares the code hash only. (Known issue: noisy BN's measurements at the
#: logged steps draw from the same random stream as the training noise, so a run logged
#: at other steps trains with other noise. Fixing it changes the experiment's code and
#: needs its full run again.)
NO_PREFIX = {
    "noisy_bn": "its measurements at the logged steps draw from the training noise's random "
    "stream, so a run with other logged steps trains with other noise",
    "lr_sweep": "its learning-rate drop and its logged steps are fractions of the run's "
    "length, so a shorter run drops at another step and logs at other steps",
    "vgg_landscape": "its test accuracy is measured at the end of the run, which a shorter run "
    "ends sooner",
    "lp_normalization": "its test accuracy is measured at the end of the run, which a shorter "
    "run ends sooner",
    "factor_study": "it measures at fractions of the run's length, so a shorter run measures "
    "at other steps",
    "small_batches": "it measures once, at the end of a run whose length is set by the batch "
    "size and the number of examples",
    "batch_renorm": "it measures at fractions of the run's length, and renormalization's "
    "schedule is a fraction of it too",
    "ghost_batch_norm": "it measures at fractions of the run's length, so a shorter run "
    "measures at other steps",
    "dropout": "it measures at fractions of the run's length, so a shorter run measures at "
    "other steps",
    "bn_only": "it measures at fractions of the run's length, so a shorter run measures at "
    "other steps",
    "lr_batch_sweep": "it measures once, after hundreds to thousands of steps, and so far into "
    "training the accuracy moves in the third digit with the order of floating-point sums "
    "(threads, how many models are stacked): a subset run cannot be compared to 2e-3",
}

#: Experiments whose full run is too long to recompute whole in a test: the drift check
#: recomputes these arguments' part of it (the same networks, data and grid points, fewer
#: of them) and compares the rows it has in common with the stored result.
SUBSETS = {
    "relative_loss": {"depths": [20], "inits": ["lecun"], "seeds": [0]},
    "activation_growth": {"seeds": [0], "inits": ["lecun"]},
    "activations_along_step": {"fractions": 2},
    "activations_along_large_bn_step": {"fractions": 2},
    "gradients_at_init": {"depths": [20], "seeds": [0]},
    # the first batch sizes: the same draws as in the full run (rows at step 0 compared)
    "gradient_noise": {"seeds": [0], "checkpoints": [0, 300], "batch_sizes": [4, 8]},
    "frozen_statistics_noise": {"seeds": [0], "checkpoints": [0, 300], "batch_sizes": [4, 8]},
    "gradient_noise_small_lr": {"seeds": [0], "checkpoints": [0, 300], "batch_sizes": [4, 8]},
    "gradient_noise_large_lr": {"seeds": [0], "checkpoints": [0, 300], "batch_sizes": [4, 8]},
    "output_collapse": {
        "seeds": [0],
        "mlp_depths": [5, 100],
        "residual_depths": [10],
        "resnet_depths": [8],
    },
    "gaussian_products": {"depths": [1, 3]},
    "network_spectra": {"depths": [1, 3], "seeds": [0], "activations": ["linear"]},
    # rows at steps 0 and 10 compared; sigmoid only: ReLU without BN diverges within 10
    # steps at this learning rate, where float32 round-off is amplified without bound
    "jacobians_over_training": {
        "checkpoints": [0, 10, 100],
        "seeds": [0],
        "activations": ["sigmoid"],
    },
    # its controls: ReLU trains at this smaller rate, so its rows compare too
    "jacobians_relu_small_lr": {"checkpoints": [0, 10, 100], "seeds": [0]},
    "jacobians_sigmoid_gain": {"checkpoints": [0, 10, 100], "seeds": [0]},
    "gradient_explosion": {"seeds": [0], "depths": [10, 25]},
    "init_schemes": {"seeds": [0]},
    "residual_variance": {"seeds": [0]},
    "scale_invariance": {"seeds": [0, 1]},
    # rows at step 0 compared (the full run's first logged step after 0 is past the prefix)
    "effective_lr": {"seeds": [0]},
    # the rows at the first checkpoint compared (the subset's last one is its end)
    "inference_pitfalls": {"checkpoints": [10, 30], "seeds": [0]},
}

#: Float columns of tidy results that identify a row rather than measure something (some
#: are floats only because other rows leave them empty).
IDENTIFIERS = frozenset(
    {
        "step",
        "lr",
        "channel",
        "contrast",
        "shift",
        "x",
        "step_size",
        "fraction",
        "image",
        "label",
        "class",
        "index",
        "weight_decay",
        "eps",
        "scale",
        "base_lr",
        "dropout",
    }
)


def prefix_config(config: dict, steps: int = PREFIX_STEPS) -> dict:
    """``config`` with every step argument cut to at most ``steps``: the first steps of the
    same run (same seeds, data order and logging density)."""
    return {k: (min(v, steps) if k in _STEP_KEYS else v) for k, v in config.items()}


def _compare(stored: pd.DataFrame, fresh: pd.DataFrame, rtol: float, atol: float) -> str | None:
    """None if the rows of ``fresh`` that ``stored`` also has agree; else what differs."""
    numeric = [
        c for c in fresh.columns if pd.api.types.is_float_dtype(fresh[c]) and c not in IDENTIFIERS
    ]
    keys = [c for c in fresh.columns if c not in numeric]
    if "step" in keys:  # rows past the prefix's last step exist only in the stored run
        stored = stored[stored["step"] <= fresh["step"].max()]
        fresh = fresh[fresh["step"] < fresh["step"].max()]  # the prefix's last step is its end
    if fresh[keys].duplicated().any():  # rows without a unique key: compare in order
        if len(fresh) != len(stored):
            return f"{len(fresh)} rows now, {len(stored)} stored"
        fresh, stored = fresh.reset_index(drop=True), stored.reset_index(drop=True)
        keys = ["row"]
        fresh, stored = fresh.assign(row=fresh.index), stored.assign(row=stored.index)
    both = fresh.merge(stored, on=keys, suffixes=("_fresh", "_stored"), how="inner")
    if both.empty:
        return "no rows in common (the result's layout changed)"
    for column in numeric:
        a, b = both[f"{column}_fresh"].to_numpy(), both[f"{column}_stored"].to_numpy()
        close = (abs(a - b) <= atol + rtol * abs(b)) | (pd.isna(a) & pd.isna(b))
        if not close.all():
            i = int((~close).argmax())
            row = ", ".join(f"{k}={both[k].iloc[i]}" for k in keys)
            return f"{column} at ({row}): stored {b[i]!r}, now {a[i]!r}"
    return None


def drift(name: str, rtol: float = 2e-3, atol: float = 2e-3) -> tuple[int, str | None]:
    """Re-compute the first steps of ``name``'s committed full result on the CPU and
    compare them with the stored rows.

    The prefix run uses the full profile's config with the step arguments cut to
    :data:`PREFIX_STEPS` (an experiment without step arguments is recomputed whole, or
    the part of it named in :data:`SUBSETS`; one
    that trains and then measures only once at the end, with no ``step`` column, has no
    prefix in common with its full run, so only its code hash is compared, as for the
    experiments in :data:`NO_PREFIX`); rows logged
    at the same steps (before the prefix's last step,
    where a run ends and final evaluations differ) are compared within ``rtol``/``atol``
    (float32 results differ slightly between torch versions; a change to the computation
    changes them by far more).

    Returns:
        ``(rows compared, problem)``: problem is None if they agree, else a message naming
        the experiment, the first differing value and the command that regenerates it.

    Raises:
        ValueError: no full result of ``name`` is committed.
    """
    stored = full_result(name)
    if stored is None:
        raise ValueError(f"no full result of {name!r} is committed")
    experiment = experiments.get(name)
    config = {**prefix_config(stored.meta["config"]), **SUBSETS.get(name, {})}
    regenerate = (
        f"regenerate it with `python -m bnlib run {name} --profile full --force` and commit "
        f"results/full/{name}"
    )
    if name in NO_PREFIX or (
        "step" not in stored.frame.columns
        and config != stored.meta["config"]
        and name not in SUBSETS
    ):
        # trained, then measured once at the end: a prefix has nothing in common with it,
        # so only the code hash can be compared
        if stored.current:
            return 0, None
        return 0, f"{name}: the committed full result was computed by older code; {regenerate}"
    extra = {"device": "cpu"} if "device" in experiment.function.__code__.co_varnames else {}
    fresh = experiment.function(**config, **extra)
    problem = _compare(stored.frame, fresh, rtol, atol)
    compared = len(fresh)
    if problem is None:
        return compared, None
    return compared, (
        f"{name}: the current code no longer reproduces the first steps of the committed full "
        f"result ({problem}); {regenerate}"
    )
