"""Figures of the learning-rate sweeps (:mod:`bnlib.experiments.learning_rate` and
:mod:`bnlib.experiments.gradient_noise`): each takes an experiment's DataFrame and draws
it; none trains."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnlib.figures.large_steps import NORM_LABELS
from bnlib.figures.style import PALETTE, legend_below

__all__ = [
    "PAPER_RUNS",
    "accuracy_vs_lr",
    "batch_size_colors",
    "curve_spread",
    "frozen_statistics_noise",
    "gradient_noise",
    "lr_batch_sweep",
    "nearest_lr",
    "noise_at_learning_rates",
    "noise_terms",
    "one_learning_rate",
    "sweep_summary",
    "training_curves",
]

#: Bjorck et al.'s four training curves: (normalization, learning rate).
PAPER_RUNS = (("torch", 0.1), ("torch", 0.003), ("torch", 1e-4), ("none", 1e-4))
_SPLIT_STYLES = {"test_accuracy": "-", "train_accuracy": "--"}


def nearest_lr(lrs: Sequence[float], lr: float) -> float:
    """The learning rate of ``lrs`` nearest to ``lr`` on a log scale."""
    lrs = np.asarray(sorted(set(lrs)), dtype=float)
    return float(lrs[np.argmin(np.abs(np.log(lrs) - np.log(lr)))])


def sweep_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per normalization and learning rate, over seeds: the mean, smallest and largest
    final test and training accuracy of the models that did not diverge, and how many
    diverged.

    Args:
        df: :func:`bnlib.experiments.learning_rate.lr_sweep` output (all steps; the last
            step's rows are used).

    Returns:
        Columns ``norm, lr, seeds, diverged`` (count), and ``test_mean, test_min,
        test_max, train_mean, train_min, train_max`` (NaN where every seed diverged).
    """
    final = df[df["step"] == df["step"].max()]
    rows = []
    for (norm, lr), part in final.groupby(["norm", "lr"]):
        ok = part[~part["diverged"]]
        row = {"norm": norm, "lr": lr, "seeds": len(part), "diverged": int(part["diverged"].sum())}
        for split in ("test", "train"):
            values = ok[f"{split}_accuracy"]
            row |= {
                f"{split}_mean": values.mean(),
                f"{split}_min": values.min(),
                f"{split}_max": values.max(),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_vs_lr(df: pd.DataFrame) -> Figure:
    """Final test (solid) and training (dashed) accuracy against the learning rate, with
    and without BN: the mean over seeds, a band from the worst to the best seed; a cross
    at the bottom where every seed diverged.

    Args:
        df: :func:`bnlib.experiments.learning_rate.lr_sweep` output.
    """
    summary = sweep_summary(df)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    floor = 0.0
    for norm, part in summary.groupby("norm"):
        color = PALETTE[NORM_LABELS[norm]]
        for split, style in (("test", "-"), ("train", "--")):
            ax.plot(part["lr"], part[f"{split}_mean"], style, marker="o", color=color, lw=2)
            if split == "test":
                ax.fill_between(
                    part["lr"], part["test_min"], part["test_max"], color=color, alpha=0.2
                )
        lost = part[part["diverged"] == part["seeds"]]
        ax.plot(lost["lr"], np.full(len(lost), floor + 0.03), "x", color=color, ms=10, mew=2.5)
    ax.set(xscale="log", xlabel="learning rate (before the drop)", ylabel="final accuracy")
    ax.set_ylim(floor, 1.0)
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=s, lw=2) for s in ("-", "--")]
    handles += [Line2D([], [], color="k", ls="", marker="x", ms=9, mew=2.5)]
    labels = ["no BN", "BN", "test", "training", "every seed diverged"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def training_curves(
    df: pd.DataFrame, runs: Sequence[tuple[str, float]] = PAPER_RUNS, seed: int | None = None
) -> Figure:
    """Test (solid) and training (dashed) accuracy over training for chosen runs (by
    default Bjorck et al.'s four: BN at 0.1, 0.003 and 1e-4, no BN at 1e-4), each at the
    sweep's learning rate nearest to the one asked for.

    Args:
        df: :func:`bnlib.experiments.learning_rate.lr_sweep` output.
        runs: ``(norm, learning rate)`` pairs.
        seed: one seed's curves; ``None``: the mean over seeds.
    """
    d = df if seed is None else df[df["seed"] == seed]
    total = d["step"].max()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    handles, labels = [], []
    for norm, lr in runs:
        chosen = nearest_lr(d.loc[d["norm"] == norm, "lr"], lr)
        part = d[(d["norm"] == norm) & (d["lr"] == chosen) & ~d["diverged"]]
        curve = part.groupby("step")[list(_SPLIT_STYLES)].mean()
        color = _run_color(norm, chosen, [lr for n, lr in runs if n == norm])
        for column, style in _SPLIT_STYLES.items():
            ax.plot(100 * curve.index / total, curve[column], style, color=color, lw=2)
        handles.append(Line2D([], [], color=color, lw=2))
        labels.append(f"{NORM_LABELS[norm]}, lr {chosen:.2g}")
    ax.axvline(50, color="0.5", lw=1, ls=":")
    ax.set(xlabel="% of training", ylabel="accuracy", xlim=(0, 100))
    handles += [Line2D([], [], color="k", ls=s, lw=2) for s in ("-", "--")]
    labels += ["test", "training"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def _run_color(norm: str, lr: float, lrs: Sequence[float]) -> tuple:
    """The normalization's color, darker for a larger learning rate among ``lrs``."""
    import matplotlib.colors as mcolors

    base = np.array(mcolors.to_rgb(PALETTE[NORM_LABELS[norm]]))
    if len(lrs) < 2:
        return tuple(base)
    rank = sorted(lrs).index(min(lrs, key=lambda v: abs(np.log(v / lr))))
    t = rank / (len(lrs) - 1)  # 0: the smallest rate, drawn light; 1: the largest, dark
    light, dark = base + (1 - base) * 0.65, base * 0.35
    return tuple(light + (dark - light) * t)


def batch_size_colors(sizes: Sequence[int]) -> dict[int, tuple]:
    """One color per batch size, light to dark as the batch grows."""
    sizes = sorted(set(sizes))
    cmap = plt.get_cmap("viridis_r")
    return {b: cmap(0.15 + 0.75 * i / max(1, len(sizes) - 1)) for i, b in enumerate(sizes)}


def _scaled_variance_panels(df: pd.DataFrame, lines: dict[str, tuple[str, str]]) -> Figure:
    """Panels of ``scaled_variance`` against ``batch_size``, one per ``step``; one line per
    value of the column ``line`` (mean over seeds), drawn as ``lines[value]`` =
    ``(color, line style)`` in that order, and a legend below."""
    steps = sorted(df["step"].unique())
    fig, axes = plt.subplots(1, len(steps), figsize=(min(5 * len(steps), 11), 4.4), sharey=True)
    axes = np.atleast_1d(axes)
    sizes = sorted(df["batch_size"].unique())
    for ax, step in zip(axes, steps):
        part = df[df["step"] == step].groupby(["line", "batch_size"])["scaled_variance"].mean()
        for label, (color, style) in lines.items():
            if label in part.index.get_level_values("line"):
                line = part.xs(label, level="line")
                ax.plot(line.index, line.to_numpy(), "o", ls=style, color=color, lw=2)
        title = "at initialization" if step == 0 else f"after {step} training steps"
        ax.set(xscale="log", yscale="log", xlabel="batch size $|B|$", title=title)
        ax.set_xticks(sizes[:: max(1, len(sizes) // 4)], minor=False)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.minorticks_off()
    axes[0].set_ylabel(r"$|B| \cdot$ variance of the gradient")
    handles = [Line2D([], [], color=c, ls=ls, lw=2, marker="o") for c, ls in lines.values()]
    legend_below(fig, handles, list(lines), ncol=min(3, len(lines)))
    return fig


def gradient_noise(df: pd.DataFrame) -> Figure:
    r"""Batch size times the variance of the mini-batch gradient, against the batch size:
    one panel per training step measured, one line per normalization (mean over seeds).
    A flat line is the :math:`1/|B|` law of Bjorck et al.'s bound.

    Args:
        df: :func:`bnlib.experiments.gradient_noise.gradient_noise` output.
    """
    lines = {label: (PALETTE[label], "-") for label in ("no BN", "BN")}
    return _scaled_variance_panels(df.assign(line=df["norm"].map(NORM_LABELS)), lines)


def frozen_statistics_noise(noise: pd.DataFrame, frozen: pd.DataFrame) -> Figure:
    r"""As :func:`gradient_noise`, with a third line: the BN network with its statistics
    frozen, on the same mini-batches as its line with batch statistics.

    Args:
        noise: :func:`bnlib.experiments.gradient_noise.gradient_noise` output (its
            unnormalized network is drawn).
        frozen: :func:`bnlib.experiments.noise_controls.frozen_statistics_noise` output
            (both of its lines are drawn).
    """
    lines = {
        "no BN": (PALETTE["no BN"], "-"),
        "BN, batch statistics": (PALETTE["BN"], "-"),
        "BN, frozen statistics": (PALETTE["BN"], "--"),
    }
    rows = pd.concat(
        [
            noise[noise["norm"] == "none"].assign(line="no BN"),
            frozen.assign(line="BN, " + frozen["statistics"] + " statistics"),
        ],
        ignore_index=True,
    )
    return _scaled_variance_panels(rows, lines)


#: Line styles of the learning rates the noise is measured after (small to large).
_LR_STYLES = (":", "-", "--", "-.")


def _by_learning_rate(frames: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """The frames of :func:`bnlib.experiments.gradient_noise.gradient_noise` run after
    training at each learning rate (the keys), stacked with an ``lr`` column."""
    return pd.concat([frame.assign(lr=lr) for lr, frame in frames.items()], ignore_index=True)


def noise_at_learning_rates(frames: dict[float, pd.DataFrame]) -> Figure:
    r"""As :func:`gradient_noise`, for networks trained at several learning rates: colour
    for the normalization, line style for the learning rate (dotted, solid, dashed from
    the smallest), one panel per training step measured.

    Args:
        frames: :func:`bnlib.experiments.gradient_noise.gradient_noise` outputs, keyed by
            the learning rate the network trained at (at most four).
    """
    rates = sorted(frames)
    if len(rates) > len(_LR_STYLES):
        raise ValueError(f"at most {len(_LR_STYLES)} learning rates, got {len(rates)}")
    rows = _by_learning_rate(frames)
    rows = rows.assign(line=rows["norm"].map(NORM_LABELS) + ", lr " + rows["lr"].map("{:g}".format))
    lines = {
        f"{label}, lr {lr:g}": (PALETTE[label], style)
        for label in ("no BN", "BN")
        for lr, style in zip(rates, _LR_STYLES)
        if f"{label}, lr {lr:g}" in set(rows["line"])
    }
    return _scaled_variance_panels(rows, lines)


def noise_terms(frames: dict[float, pd.DataFrame], batch_size: int | None = None) -> pd.DataFrame:
    r"""The noise term of Bjorck et al.'s bound, :math:`lpha^2 \cdot` variance of the
    mini-batch gradient, at one batch size, for networks trained at several learning
    rates :math:`lpha` (mean over seeds).

    Args:
        frames: :func:`bnlib.experiments.gradient_noise.gradient_noise` outputs, keyed by
            the learning rate the network trained at.
        batch_size: the batch size; by default the one the networks train with, 128, or,
            where it was not measured (the smoke profile), the largest measured.

    Returns:
        One row per (norm, lr, step): ``variance``, ``scaled_variance`` (:math:`|B|
        \cdot` variance, the bound's :math:`C` if the :math:`1/|B|` law holds) and
        ``noise`` (:math:`lpha^2 \cdot` variance).
    """
    rows = _by_learning_rate(frames)
    if batch_size is None:
        measured = set(rows["batch_size"])
        batch_size = 128 if 128 in measured else max(measured)
    rows = rows[rows["batch_size"] == batch_size]
    if rows.empty:
        raise ValueError(f"no measurement at batch size {batch_size}")
    table = rows.groupby(["norm", "lr", "step"])[["variance", "scaled_variance"]].mean()
    table["noise"] = table.index.get_level_values("lr") ** 2 * table["variance"]
    return table.reset_index()


def lr_batch_sweep(df: pd.DataFrame, metric: str = "test_accuracy") -> Figure:
    r"""Accuracy over the grid of learning rate and batch size: rows for no BN and BN,
    columns against the learning rate :math:`\alpha` and against :math:`\alpha / |B|`;
    one line per batch size (mean over seeds); crosses at the bottom where every seed
    diverged. If accuracy depended on :math:`\alpha / |B|` only, the right-hand lines
    would coincide.

    Args:
        df: :func:`bnlib.experiments.gradient_noise.lr_batch_sweep` or
            :func:`bnlib.experiments.noise_controls.fixed_steps_batch_sweep` output.
        metric: ``"test_accuracy"`` or ``"train_accuracy"``.
    """
    colors = batch_size_colors(df["batch_size"])
    heights = {b: 0.02 + 0.035 * i for i, b in enumerate(colors)}  # crosses apart, per size
    norms = [n for n in ("none", "torch") if n in set(df["norm"])]
    fig, axes = plt.subplots(len(norms), 2, figsize=(10, 3.6 * len(norms) + 0.8), sharey=True)
    axes = np.atleast_2d(axes)
    for row, norm in zip(axes, norms):
        for b, part in df[df["norm"] == norm].groupby("batch_size"):
            ok = part[~part["diverged"]].groupby("lr")[metric].mean()
            lost = part.groupby("lr")["diverged"].all()
            lost = lost[lost].index.to_numpy()
            for ax, scale in zip(row, (1.0, 1.0 / b)):
                ax.plot(ok.index * scale, ok.to_numpy(), "o-", color=colors[b], lw=2, ms=4)
                ax.plot(lost * scale, np.full(len(lost), heights[b]), "x", color=colors[b], mew=2)
        row[0].set_ylabel(f"{NORM_LABELS[norm]}\n{metric.split('_')[0]} accuracy")
        for ax in row:
            ax.set(xscale="log", ylim=(0, 1))
    axes[-1, 0].set_xlabel(r"learning rate $\alpha$")
    axes[-1, 1].set_xlabel(r"$\alpha / |B|$")
    handles = [Line2D([], [], color=c, lw=2, marker="o") for c in colors.values()]
    handles.append(Line2D([], [], color="k", ls="", marker="x", mew=2))
    labels = [f"|B| = {b}" for b in colors] + ["every seed diverged"]
    legend_below(fig, handles, labels, ncol=4)
    return fig


def one_learning_rate(df: pd.DataFrame, lr: float, seed: int | None = None) -> Figure:
    """One learning rate of the sweep: where it sits on the accuracy-against-learning-rate
    curves (left), and the test and training accuracy of its runs with and without BN
    over training (right; a run that diverged is drawn until it diverged, and the title
    says when).

    Args:
        df: :func:`bnlib.experiments.learning_rate.lr_sweep` output.
        lr: a learning rate; the sweep's nearest is shown.
        seed: one seed's runs; ``None``: the mean over seeds.
    """
    d = df if seed is None else df[df["seed"] == seed]
    chosen = nearest_lr(d["lr"], lr)
    summary = sweep_summary(d)
    total = d["step"].max()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    notes = []
    for norm, part in summary.groupby("norm"):
        color = PALETTE[NORM_LABELS[norm]]
        left.plot(part["lr"], part["test_mean"], "-", marker="o", ms=4, color=color, lw=2)
        run = d[(d["norm"] == norm) & (d["lr"] == chosen)]
        if run["diverged"].any():
            at = run.loc[run["diverged_at"] >= 0].groupby("seed")["diverged_at"].first()
            seeds = run["seed"].nunique()
            which = "diverged" if seeds == 1 else f"{len(at)} of {seeds} seeds diverged, first"
            notes.append(f"{NORM_LABELS[norm]} {which} at step {int(at.min())}")
        curve = run[~run["diverged"]].groupby("step")[list(_SPLIT_STYLES)].mean()
        for column, style in _SPLIT_STYLES.items():
            right.plot(100 * curve.index / total, curve[column], style, color=color, lw=2)
    left.axvline(chosen, color="k", lw=1.5, ls=":")
    left.set(xscale="log", xlabel="learning rate", ylabel="accuracy", ylim=(0, 1))
    left.set_title("final test accuracy")
    right.axvline(50, color="0.5", lw=1, ls=":")
    right.set(xlabel="% of training", xlim=(0, 100))
    right.set_title("\n".join([f"learning rate {chosen:.2g}", *notes]), fontsize="small")
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=s, lw=2) for s in ("-", "--")]
    legend_below(fig, handles, ["no BN", "BN", "test", "training"])
    return fig


def curve_spread(df: pd.DataFrame, norm: str, against: str, metric: str = "test_accuracy") -> float:
    r"""How far apart the batch sizes' accuracy curves lie when drawn against ``against``
    (``"lr"`` or ``"lr_per_example"``): the largest minus the smallest accuracy across
    batch sizes, averaged over 50 points evenly spaced in :math:`\log_{10}` of
    ``against`` where at least two curves are defined (each curve linearly interpolated
    between its runs that did not diverge, mean over seeds). 0: the curves coincide.

    Args:
        df: :func:`bnlib.experiments.gradient_noise.lr_batch_sweep` or
            :func:`bnlib.experiments.noise_controls.fixed_steps_batch_sweep` output.
        norm: the normalization whose curves are compared.
    """
    curves = {}
    for b, part in df[(df["norm"] == norm) & ~df["diverged"]].groupby("batch_size"):
        line = part.groupby(against)[metric].mean()
        if len(line) >= 2:
            curves[b] = (np.log10(line.index.to_numpy(dtype=float)), line.to_numpy())
    if len(curves) < 2:
        return float("nan")
    low = min(x.min() for x, _ in curves.values())
    high = max(x.max() for x, _ in curves.values())
    gaps = []
    for point in np.linspace(low, high, 50):
        values = [np.interp(point, x, y) for x, y in curves.values() if x[0] <= point <= x[-1]]
        if len(values) >= 2:
            gaps.append(max(values) - min(values))
    return float(np.mean(gaps)) if gaps else float("nan")
