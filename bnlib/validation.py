"""Is a committed full result still what the current code computes?

A committed full result (``results/full/<experiment>/``) is keyed by the hash of the code
its experiment reaches (:func:`bnlib.experiments.code_hash`). Any edit to that code, a pure
refactor included, changes the hash; recomputing hours of results for a refactor would make
every fix expensive. Instead, a result stays current through a change **exactly when the
new code reproduces it**:

- :func:`reproduce` recomputes the experiment's registered reproduction subset
  (:class:`bnlib.experiments.Reproduction`: one seed, a few sweep points, at the full
  run's length) and compares its rows with the committed ones, value by value, within the
  registered tolerance.
- :func:`revalidate` (``python -m bnlib status --revalidate``) does this for every
  committed result that is not current, or that names no clean commit, from a clean git
  tree. Where the rows agree, the result's JSON takes the new code hash and key (its files
  are renamed to the new key) and records the validation in ``validations``: commit, date,
  device, torch version, the subset, rows compared, the largest deviation. Where they do
  not, the result stays stale, and the book's build fails on its claims' ``stale`` label
  until it is recomputed (``python -m bnlib run NAME --profile full --force``).
- :func:`drift` is the cheap check ``make test`` runs on every committed result: the
  subset's first :data:`PREFIX_STEPS` steps, compared with the stored rows at those steps,
  so that a change the code hash cannot see (a new torch version, say) is caught too.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bnlib import experiments
from bnlib.book import full_result
from bnlib.provenance import clean_revision, git_revision
from bnlib.results import cache_key, committed_store, record_validation

__all__ = [
    "IDENTIFIERS",
    "PREFIX_STEPS",
    "Comparison",
    "Outcome",
    "compare",
    "drift",
    "prefix_config",
    "reproduce",
    "revalidate",
    "revalidation_reason",
]

#: Steps of a drift check's prefix run (see :func:`drift`).
PREFIX_STEPS = 40

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


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing recomputed rows with stored ones.

    Attributes:
        rows: rows compared (recomputed rows matched to a stored row).
        max_abs: the largest absolute difference of a measured value (0 if none).
        max_rel: the largest difference relative to the stored value's size.
        problem: None if every compared value is within tolerance; else the first that is
            not (column, row, stored and new values), or why the rows cannot be matched.
    """

    rows: int
    max_abs: float
    max_rel: float
    problem: str | None

    @property
    def agrees(self) -> bool:
        return self.problem is None


def prefix_config(config: dict, steps: int = PREFIX_STEPS) -> dict:
    """``config`` with every step argument cut to at most ``steps``: the first steps of the
    same run (same seeds, data order and logging density)."""
    return {k: (min(v, steps) if k in experiments.STEP_ARGUMENTS else v) for k, v in config.items()}


def _measured(frame: pd.DataFrame) -> list[str]:
    return [
        c for c in frame.columns if pd.api.types.is_float_dtype(frame[c]) and c not in IDENTIFIERS
    ]


def compare(
    stored: pd.DataFrame,
    fresh: pd.DataFrame,
    *,
    rtol: float,
    atol: float,
    prefix: bool = False,
    seed_spread: float | None = None,
) -> Comparison:
    """Compare ``fresh`` (recomputed rows) with the rows of ``stored`` they match.

    Rows are matched on every column that is not a measured float (:data:`IDENTIFIERS`
    count as keys). Every fresh row must have its stored counterpart, unless ``prefix``:
    then ``fresh`` is the first steps of the run, and only rows logged before its last
    step (where a run ends, and final evaluations differ) are compared. A value agrees
    when ``|new - stored| <= atol + rtol * |stored|``, or both are NaN. With
    ``seed_spread``, values need not agree one by one: each deviation is measured in units
    of the seeds' standard deviation of its row (over the stored rows that differ from it
    only in ``seed``), and a column agrees when the median deviation is at most
    ``seed_spread`` such units (two independent seeds differ by about 0.95 at the median).
    """
    numeric = _measured(fresh)
    spread = _seed_spread(stored, numeric) if seed_spread else None
    keys = [c for c in fresh.columns if c not in numeric]
    missing = [c for c in fresh.columns if c not in stored.columns]
    if missing:
        return Comparison(0, 0.0, 0.0, f"the stored result has no column {missing}")
    if prefix and "step" in keys:  # rows past the prefix's last step exist only in stored
        stored = stored[stored["step"] <= fresh["step"].max()]
        fresh = fresh[fresh["step"] < fresh["step"].max()]
    if not keys or fresh[keys].duplicated().any():  # no unique key: compare in order
        if len(fresh) != len(stored):
            return Comparison(
                0, 0.0, 0.0, f"{len(fresh)} rows now, {len(stored)} stored, with no unique key"
            )
        fresh, stored = fresh.reset_index(drop=True), stored.reset_index(drop=True)
        keys = ["row"]
        fresh, stored = fresh.assign(row=fresh.index), stored.assign(row=stored.index)
    both = fresh.merge(stored, on=keys, suffixes=("_fresh", "_stored"), how="inner")
    if spread is not None:
        group = [k for k in spread.index.names]
        both = both.merge(
            spread.add_suffix("_spread").reset_index(), on=group, how="left", validate="m:1"
        )
    if both.empty:
        return Comparison(0, 0.0, 0.0, "no rows in common (the result's layout changed)")
    if not prefix and len(both) != len(fresh):
        return Comparison(
            len(both),
            0.0,
            0.0,
            f"{len(fresh) - len(both)} of {len(fresh)} recomputed rows have no stored "
            "counterpart (the result's layout changed)",
        )
    max_abs = max_rel = 0.0
    problem = None
    for column in numeric:
        a = both[f"{column}_fresh"].to_numpy(dtype=float)
        b = both[f"{column}_stored"].to_numpy(dtype=float)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a - b)
            same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
            diff = np.where(same_inf | (nan_a & nan_b), 0.0, diff)
            diff = np.where(nan_a ^ nan_b, np.inf, diff)
            allowed = atol + rtol * np.abs(np.where(np.isinf(b), 0.0, b))
            close = (diff <= allowed) | same_inf | (nan_a & nan_b)
            if spread is not None:  # the typical deviation, in the seeds' spread
                sd = np.nan_to_num(both[f"{column}_spread"].to_numpy(dtype=float), nan=0.0)
                ratio = np.where(close, 0.0, diff / (allowed + sd))
                typical = float(np.median(ratio))
        finite = np.isfinite(diff)
        if finite.any():
            max_abs = max(max_abs, float(diff[finite].max()))
            rel = diff[finite] / np.maximum(np.abs(b[finite]), 1e-300)
            rel = np.where(diff[finite] == 0, 0.0, rel)
            max_rel = max(max_rel, float(rel.max()))
        if not finite.all():
            max_abs = max_rel = math.inf
        if problem is None and spread is not None:
            if typical > seed_spread:
                i = int(np.argmax(ratio))
                row = ", ".join(f"{k}={both[k].iloc[i]}" for k in keys)
                problem = (
                    f"{column} deviates by {typical:.2g} times the seeds' standard deviation "
                    f"at the median (at most {seed_spread:g} allowed); the most at ({row}): "
                    f"stored {b[i]!r}, now {a[i]!r}"
                )
        elif problem is None and not close.all():
            i = int((~close).argmax())
            row = ", ".join(f"{k}={both[k].iloc[i]}" for k in keys)
            problem = f"{column} at ({row}): stored {b[i]!r}, now {a[i]!r}"
    return Comparison(len(both), max_abs, max_rel, problem)


def _seed_spread(stored: pd.DataFrame, numeric: list[str]) -> pd.DataFrame | None:
    """The standard deviation over seeds of each measured column, per group of rows that
    differ only in ``seed`` (None without a ``seed`` column)."""
    if "seed" not in stored.columns:
        return None
    measured = set(_measured(stored))
    group = [c for c in stored.columns if c not in measured and c != "seed"]
    columns = [c for c in numeric if c in stored.columns]
    return stored.groupby(group, dropna=False)[columns].std()


def _regenerate(name: str) -> str:
    return (
        f"regenerate it with `python -m bnlib run {name} --profile full --force` (from a "
        f"clean, committed tree) and commit results/full/{name}"
    )


def drift(name: str, device: str = "cpu") -> tuple[int, str | None]:
    """Recompute the first steps of ``name``'s committed full result and compare them with
    the stored rows (the cheap check ``make test`` runs on every committed result).

    The run is the full profile with the registered reproduction subset and prefix
    (:class:`bnlib.experiments.Reproduction`) and every step argument cut to
    :data:`PREFIX_STEPS`. Where a shorter run has nothing in common with the full one
    (``prefix=None``), only the code hash is compared.

    Returns:
        ``(rows compared, problem)``: problem is None if they agree, else a message naming
        the experiment, the first differing value and the command that regenerates it.

    Raises:
        ValueError: no full result of ``name`` is committed.
    """
    stored = full_result(name)
    if stored is None:
        raise ValueError(f"no full result of {name!r} is committed")
    spec = experiments.get(name).reproduction
    if spec.prefix is None:
        if stored.current:
            return 0, None
        return 0, f"{name}: the committed full result was computed by older code; " + (
            _regenerate(name) + ", or revalidate it: `python -m bnlib status --revalidate`"
        )
    config = prefix_config({**stored.meta["config"], **spec.subset, **spec.prefix})
    fresh = experiments.get(name).call(config, device)
    result = compare(stored.frame, fresh, rtol=spec.rtol, atol=spec.atol, prefix=True)
    if result.agrees:
        return result.rows, None
    return result.rows, (
        f"{name}: the current code no longer reproduces the first steps of the committed full "
        f"result ({result.problem}); {_regenerate(name)}"
    )


def reproduce(name: str, device: str = "cpu") -> tuple[Comparison, dict, float]:
    """Recompute ``name``'s reproduction subset at the full run's length with the current
    code and compare it with the committed full result.

    Returns:
        ``(comparison, subset config, wall time in seconds)``.

    Raises:
        ValueError: no full result of ``name`` is committed.
    """
    stored = full_result(name)
    if stored is None:
        raise ValueError(f"no full result of {name!r} is committed")
    spec = experiments.get(name).reproduction
    config = {**stored.meta["config"], **spec.subset}
    start = time.perf_counter()
    fresh = experiments.get(name).call(config, device)
    wall = time.perf_counter() - start
    comparison = compare(
        stored.frame, fresh, rtol=spec.rtol, atol=spec.atol, seed_spread=spec.seed_spread
    )
    return comparison, config, wall


def revalidation_reason(name: str) -> str | None:
    """Why ``name``'s committed full result needs revalidating, or None.

    It does when it is not current (computed or last validated by other code) or when
    neither its computation nor a validation for the current code names a clean commit.
    None also when no full result is committed (there is nothing to revalidate).
    """
    stored = full_result(name)
    if stored is None:
        return None
    if not stored.current:
        return "computed by older code"
    if stored.clean_commit is None:
        return "computed from a tree with uncommitted changes"
    return None


@dataclass(frozen=True)
class Outcome:
    """What :func:`revalidate` did with one result."""

    name: str
    reason: str
    comparison: Comparison | None
    wall_time_s: float
    validated: bool
    message: str


def revalidate(
    names: Sequence[str] | None = None,
    device: str = "cpu",
    *,
    require_clean: bool | None = None,
    report: Callable[[str], None] = print,
) -> list[Outcome]:
    """Revalidate committed full results against the current code (module docstring).

    Args:
        names: the experiments to consider (default: all registered); of these, those
            :func:`revalidation_reason` names are recomputed.
        device: where the subsets are computed (the CPU by default, where the committed
            results were computed: a GPU's float32 sums differ).
        require_clean: refuse to run from a tree with uncommitted changes (outside
            ``results/``), so that a validation always names a commit that reproduces it.
            Default: when the results folder is the repository's own (committed) one.
        report: called with one line per result (progress and outcome).

    Returns:
        One :class:`Outcome` per result considered for revalidation.

    Raises:
        ValueError: ``require_clean`` and the tree has uncommitted changes.
    """
    if require_clean is None:
        require_clean = committed_store()
    commit = clean_revision()
    if require_clean and commit is None:
        raise ValueError(
            f"the git tree has uncommitted changes ({git_revision()}): commit them first, so "
            "that each validation names the commit whose code reproduced the result"
        )
    experiments.load_all()
    chosen = sorted(experiments.REGISTRY) if names is None else list(names)
    todo = [(n, r) for n in chosen if (r := revalidation_reason(n)) is not None]
    if not todo:
        report("every committed full result is current and names a clean commit")
        return []
    report(f"{len(todo)} committed full result(s) to revalidate on {device}")
    outcomes = []
    for i, (name, reason) in enumerate(todo, 1):
        report(f"[{i}/{len(todo)}] {name} ({reason}): recomputing its reproduction subset")
        comparison, config, wall = reproduce(name, device)
        stored = full_result(name)
        if comparison.agrees:
            code = experiments.code_hash(name)
            key = cache_key(name, experiments.get(name).profiles["full"], code)
            spec = experiments.get(name).reproduction
            record_validation(
                stored.result,
                key=key,
                code_hash=code,
                validation={
                    "code_hash": code,
                    "previous_code_hash": stored.meta.get("code_hash"),
                    "git_revision": commit or git_revision(),
                    "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "device": _device_line(device),
                    "torch_version": _torch_version(),
                    "subset": {k: config[k] for k in spec.subset} if spec.subset else "whole",
                    "rows_compared": comparison.rows,
                    "max_abs_deviation": comparison.max_abs,
                    "max_rel_deviation": comparison.max_rel,
                    "rtol": spec.rtol,
                    "atol": spec.atol,
                    "seed_spread": spec.seed_spread,
                    "wall_time_s": round(wall, 2),
                },
            )
            message = (
                f"  reproduced: {comparison.rows} rows within rtol {spec.rtol:g}, atol "
                f"{spec.atol:g} (largest deviation {comparison.max_abs:.3g}) in {wall:.0f} s"
            )
        else:
            message = (
                f"  NOT reproduced ({comparison.problem}); the result stays stale: "
                + _regenerate(name)
            )
        report(message)
        outcomes.append(Outcome(name, reason, comparison, wall, comparison.agrees, message))
    return outcomes


def _device_line(device: str) -> str:
    from bnlib.provenance import device_description

    return device_description(device)


def _torch_version() -> str:
    import torch

    return torch.__version__
