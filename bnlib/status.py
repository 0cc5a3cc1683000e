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

import os
import sys
import time
from typing import TYPE_CHECKING

import pandas as pd

from bnlib import experiments
from bnlib.book import FullResult, format_duration, full_result
from bnlib.provenance import device_description
from bnlib.results import load, results_dir

if TYPE_CHECKING:
    from bnlib.distributed import RayRunner

__all__ = [
    "estimate_seconds",
    "format_status",
    "full_arguments",
    "pending",
    "run_all",
    "status",
    "work",
]


def work(config: dict) -> float:
    """The amount of work a config asks for, in arbitrary units (see the module docstring).

    ``config`` should hold every argument (:func:`full_arguments`), defaults included.
    """
    steps = sum(config[k] for k in experiments.STEP_ARGUMENTS if k in config)
    total = float(steps) if steps else 1.0
    for key in experiments.SWEEP_ARGUMENTS:
        if isinstance(config.get(key), list | tuple):
            total *= max(1, len(config[key]))
    for key, (_, multiplies) in experiments.COUNT_ARGUMENTS.items():
        if multiplies and isinstance(config.get(key), int):
            total *= config[key]
    if "lr_count" in config:
        total *= config["lr_count"]
    return total


def full_arguments(name: str, profile: str) -> dict:
    """Experiment ``name``'s arguments in ``profile``, with the function's defaults filled in."""
    experiment = experiments.get(name)
    return experiment.with_defaults(experiment.profiles[profile])


def _cached_meta(name: str, profile: str) -> dict | None:
    """The metadata of ``name``'s cached result in ``profile`` for the current code, if it
    is usable (an unusable one is reported with a warning and counts as absent)."""
    experiment = experiments.get(name)
    stored = load(name, profile, experiment.profiles[profile], experiments.code_hash(name))
    return None if stored is None else stored.meta


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
        "stale: older code", or "-" for none committed), ``full took`` (the committed full
        result's measured wall time on the machine that computed it, "-" for none),
        ``ray shards`` (the tasks ``run --ray`` splits its full profile into,
        :mod:`bnlib.distributed`) and ``full run here`` (the estimated wall time on
        ``device``, or "unknown").
    """
    from bnlib.distributed import shards

    experiments.load_all()
    rows = []
    for name in sorted(experiments.REGISTRY):
        stored, state = _committed(name)
        rows.append(
            {
                "experiment": name,
                "chapter": experiments.REGISTRY[name].chapter,
                "quick": "cached" if _cached_meta(name, "quick") else "-",
                "full": state,
                "full took": format_duration(stored.meta["wall_time_s"]) if stored else "-",
                "ray shards": len(shards(name, experiments.get(name).profiles["full"])),
                "full run here": format_duration(estimate_seconds(name, device)),
            }
        )
    return pd.DataFrame(rows)


def full_cost() -> tuple[float, int]:
    """Seconds the committed full results took in all (each on the machine that computed
    it, as its JSON records), and how many results that sums."""
    experiments.load_all()
    found = [stored for stored, _ in map(_committed, sorted(experiments.REGISTRY)) if stored]
    return sum(float(s.meta["wall_time_s"]) for s in found), len(found)


def _committed(name: str) -> tuple[FullResult | None, str]:
    """The committed full result of ``name`` (None if none or unusable) and the ``full``
    column of :func:`status` for it."""
    try:
        stored = full_result(name)
    except ValueError as error:  # unreadable or edited: say so, and go on with the others
        return None, f"unusable: {error}"
    if stored is None:
        return None, "-"
    if not stored.current:
        return stored, "stale: older code"
    if stored.clean_commit is None:
        return stored, "current, no clean commit"
    if stored.validation is not None:
        return stored, f"reproduced at {stored.clean_commit[:7]}"
    return stored, "current"


def format_status(table: pd.DataFrame) -> str:
    """The status table as plain text, with a line saying what the columns mean (and,
    below it, why a result is unusable, or that the results folder is missing)."""
    unusable = table["full"].str.startswith("unusable: ")
    problems = [text.removeprefix("unusable: ") for text in table.loc[unusable, "full"]]
    shown = table.assign(full=table["full"].where(~unusable, "unusable (see below)"))
    notes = "".join(f"\n\n{problem}" for problem in problems)
    folder = results_dir()
    if not folder.is_dir():
        notes += (
            f"\n\nThe results folder {folder} "
            + ("is a file" if folder.exists() else "does not exist")
            + " (BNLIB_RESULTS="
            + repr(os.environ.get("BNLIB_RESULTS"))
            + "): every result shows as missing. Set BNLIB_RESULTS to the folder that holds "
            "them, or unset it to use the repository's results/."
        )
    return (
        shown.to_string(index=False)
        + "\n\nquick: cached for the current code; full: committed in results/full "
        "(current = computed by the current code; reproduced = computed by older code and "
        "reproduced by the current code at that commit; stale = computed by older code and "
        "not reproduced: `python -m bnlib status --revalidate` checks it, and the book is not "
        "built until it is current; no clean commit = computed from a tree with "
        "uncommitted changes, which --revalidate also fixes); full took: the committed "
        "result's wall time where it was computed; ray shards: the tasks `run NAME --profile "
        "full --ray` splits it into; full run here: estimated from the quick run's wall time "
        "on this device (unknown: no quick result from this device yet)." + _cost_line() + notes
    )


def _cost_line() -> str:
    seconds, count = full_cost()
    if not count:
        return ""
    return (
        f"\n\nThe {count} committed full results took {format_duration(seconds)} in all, "
        "each on the machine its JSON names (one process each; `run --all --profile full "
        "--ray ADDRESS` spreads the shards over a cluster)."
    )


def pending(profile: str, force: bool = False) -> list[str]:
    """The experiments ``run --all`` would run at ``profile``: those whose result is
    missing, or (full) not current or reproduced; all of them with ``force``. Sorted."""
    experiments.load_all()
    names = sorted(experiments.REGISTRY)
    if force:
        return names
    if profile == "full":
        return [n for n in names if not _committed(n)[1].startswith(("current", "reproduced"))]
    return [n for n in names if _cached_meta(n, profile) is None]


def run_all(
    profile: str,
    device: str | None,
    force: bool = False,
    runner: RayRunner | None = None,
    names: list[str] | None = None,
) -> list[str]:
    """Run every experiment whose ``profile`` result is missing or stale (all if ``force``).

    Prints the plan first (on a CPU, with the estimated total time), then each
    experiment's own progress bars and, between experiments, the estimated time left.
    With a ``runner`` (:class:`bnlib.distributed.RayRunner`, which the caller closes)
    every experiment's shards are put on the Ray cluster at once, each result is stored
    once its shards are in, and an experiment that fails (a shard, or storing its result)
    does not stop the others: the failures are reported at the end.

    Args:
        names: the experiments to run, if the caller has already asked :func:`pending`
            (default: ask it).

    Returns:
        The names run.

    Raises:
        ShardFailedError: (with a runner) experiments that failed, named.
    """
    names = pending(profile, force) if names is None else names
    if not names:
        print(f"every {profile} result is present and current; nothing to run")
        return []
    if profile == "full":
        experiments.ensure_committable(names[0])  # before any work, not after it
    if runner is not None:
        return _run_all_on_ray(profile, device, force, runner, names)
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


def _run_all_on_ray(
    profile: str, device: str | None, force: bool, runner: RayRunner, names: list[str]
) -> list[str]:
    from bnlib.distributed import ShardFailedError, shards

    configs = {n: experiments.get(n).profiles[profile] for n in names}
    count = sum(len(shards(n, c)) for n, c in configs.items())
    print(
        f"{len(names)} experiment(s) to run at the {profile} profile on {runner.description()},"
        f" {count} shards: {', '.join(names)}"
    )
    sys.stdout.flush()
    failed = []
    for name in names:  # all at once: the cluster runs whole experiments side by side
        runner.submit(name, configs[name], device)
    for i, name in enumerate(names, 1):
        try:
            result = experiments.run(
                name, profile, device=device, force=force, compute=runner.compute
            )
        # a failed shard, a bad device, a result that could not be stored: that
        # experiment's problem, reported at the end; its shards have stopped
        except (ShardFailedError, ValueError, OSError) as error:
            runner.cancel(name, configs[name])
            failed.append(str(error) if str(error).startswith(name) else f"{name}: {error}")
            print(f"[{i}/{len(names)}] {name}: failed (the others go on)")
            continue
        print(f"[{i}/{len(names)}] {name} -> {result.path}")
        sys.stdout.flush()
    if failed:
        raise ShardFailedError(
            f"{len(failed)} of {len(names)} experiments failed; the others were stored:\n"
            + "\n".join(failed)
        )
    return names
