"""Figures of the chapter "Internal covariate shift": each takes an experiment's DataFrame."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bnlib.figures.style import PALETTE, PERCENTILE_STYLES, legend_below

__all__ = [
    "ics",
    "ioffe_figure1",
    "noisy_bn",
    "percentiles_over_training",
    "sigmoid_saturation",
]


def sigmoid_saturation(df: pd.DataFrame) -> Figure:
    """The sigmoid's derivative and input distributions at several shifts.

    Args:
        df: :func:`bnlib.experiments.covariate_shift.sigmoid_saturation` output.
    """
    fig, ax = plt.subplots(figsize=(9, 4.6))
    first = df[df["shift"] == df["shift"].iloc[0]]
    ax.plot(first["x"], first["sigmoid_grad"], "k", lw=2, label=r"$\sigma'(a)$")
    for shift, part in df.groupby("shift"):
        expected = part["expected_grad"].iloc[0]
        ax.fill_between(
            part["x"],
            0,
            part["density"] * 0.25 / part["density"].max(),
            alpha=0.35,
            label=rf"$a \sim \mathcal{{N}}({shift:g}, 1)$: "
            rf"$\mathrm{{E}}[\sigma'(a)] = {expected:.3f}$",
        )
    ax.set(
        xlabel="input $a$ of the sigmoid", ylabel=r"$\sigma'(a)$ (densities scaled)", xlim=(-6, 10)
    )
    legend_below(fig, *ax.get_legend_handles_labels(), ncol=2)
    return fig


def _percentile_lines(ax, part: pd.DataFrame, color, label: str | None = None) -> None:
    """The p15, p50 and p85 rows of ``part`` as three lines (p50 solid); ``label`` names
    the p50 line, or each line by its percentile when ``None``."""
    for metric, style in PERCENTILE_STYLES.items():
        line = part[part["metric"] == metric]
        name = metric if label is None else (f"{label}: {metric}" if metric == "p50" else None)
        ax.plot(line["step"], line["value"], style, color=color, label=name)


def _band(ax, part: pd.DataFrame, x: str, y: str, color, label: str, style="-") -> None:
    stats = part.groupby(x)[y].agg(["mean", "min", "max"])
    ax.plot(stats.index, stats["mean"], style, color=color, label=label)
    if (stats["min"] != stats["max"]).any():
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2)


def ioffe_figure1(df: pd.DataFrame, channel: int | None = None) -> Figure:
    """(a) test accuracy over training, with and without BN (mean over seeds, band: min to
    max), on a log step axis so that the first steps show; (b, c) the 15th, 50th and 85th
    percentiles of one sigmoid's input, first seed.

    Args:
        df: :func:`bnlib.experiments.covariate_shift.ioffe_figure1` output.
        channel: the unit for (b, c); default the first one measured.
    """
    fig = plt.figure(figsize=(10, 7.6))
    grid = fig.add_gridspec(2, 2)
    axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0])]
    axes.append(fig.add_subplot(grid[1, 1], sharey=axes[1]))
    acc = df[(df["metric"] == "test accuracy") & (df["step"] > 0)]
    batch = df[(df["metric"] == "test accuracy (batch statistics)") & (df["step"] > 0)]
    for norm in ("no BN", "BN"):
        _band(axes[0], acc[acc["norm"] == norm], "step", "value", PALETTE[norm], norm)
    _band(
        axes[0],
        batch[batch["norm"] == "BN"],
        "step",
        "value",
        PALETTE["BN"],
        "BN, test batch's statistics",
        style=":",
    )
    axes[0].set(
        xscale="log", xlabel="training step (log scale)", ylabel="test accuracy", ylim=(0, 1.0)
    )
    axes[0].set_title("(a) test accuracy", loc="left")
    axes[0].legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=3, frameon=False)
    channel = df["channel"].dropna().min() if channel is None else channel
    seed = df["seed"].min()
    for ax, norm, letter in ((axes[1], "no BN", "b"), (axes[2], "BN", "c")):
        part = df[(df["norm"] == norm) & (df["channel"] == channel) & (df["seed"] == seed)]
        _percentile_lines(ax, part, PALETTE[norm])
        ax.set(
            xlabel="training step",
            title=f"({letter}) {norm}: input to a sigmoid",
            ylabel="percentiles",
        )
    _percentile_legend(fig)
    return fig


def _percentile_legend(fig: Figure) -> None:
    """One legend for the percentile line styles, below the panels."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.2", ls=style) for style in PERCENTILE_STYLES.values()]
    legend_below(fig, handles, list(PERCENTILE_STYLES), title="percentile of the unit's input")


def ics(df: pd.DataFrame, network: str, layers: list[int] | None = None) -> Figure:
    """ICS (the L2 distance between G and G') and the cosine between them, over training,
    with and without BN, for a few layers of one network (one legend, below the panels).

    Args:
        df: :func:`bnlib.experiments.covariate_shift.ics_over_training` output.
        network: ``"MLP"`` or ``"deep linear"``.
        layers: layer indices to draw (0 = first, labelled "layer 1"); default: the
            second, a middle one and the last.
    """
    d = df[(df["network"] == network) & (df["step"] > 0)]
    every = sorted(d["layer"].unique())
    layers = layers or sorted({every[1], every[len(every) // 2], every[-1]})
    d = d[d["layer"].isin(layers)].assign(layer=lambda t: "layer " + (t["layer"] + 1).astype(str))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, y, label in ((left, "ics", r"ICS $\|G - G'\|_2$"), (right, "cosine", "cosine(G, G')")):
        sns.lineplot(
            d,
            x="step",
            y=y,
            hue="norm",
            style="layer",
            palette=PALETTE,
            ax=ax,
            markers=True,
            dashes=True,
            markersize=5,
        )
        ax.set(xscale="log", xlabel="training step (log scale)", ylabel=label)
    handles, labels = left.get_legend_handles_labels()
    for ax in (left, right):
        ax.get_legend().remove()
    legend_below(fig, handles, labels)
    left.set(yscale="log", title=f"{network}: internal covariate shift")
    right.set(title=f"{network}: alignment of G and G'", ylim=(-1.05, 1.05))
    return fig


def noisy_bn(df: pd.DataFrame, channel: int | None = None) -> Figure:
    """One panel per learning rate: training accuracy of the four networks (mean over
    seeds, band from lowest to highest); last panel: the percentiles of one sigmoid's
    input over training at the first learning rate, standard network against BN + noise.

    Args:
        df: :func:`bnlib.experiments.covariate_shift.noisy_bn` output.
        channel: the unit drawn in the last panel; default the first one measured. The
            last panel shows the first seed at learning rate 0.1 (else the first rate).
    """
    colors = {**PALETTE, "standard": PALETTE["no BN"], "noise without BN": "#666666"}
    lrs = sorted(df["lr"].unique())
    fig = plt.figure(figsize=(10, 8))
    grid = fig.add_gridspec(2, len(lrs))
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(lrs))]
    axes.append(fig.add_subplot(grid[1, :]))
    acc = df[(df["metric"] == "train accuracy") & (df["step"] > 0)]
    for i, (ax, lr) in enumerate(zip(axes, lrs)):
        for variant, part in acc[acc["lr"] == lr].groupby("variant", sort=False):
            _band(ax, part, "step", "value", colors[variant], variant)
        ax.set(
            xscale="log",
            # with more than two panels a row, the labels would collide: say it once
            xlabel="training step (log scale)" if len(lrs) <= 2 else "step",
            ylabel="training accuracy" if i == 0 else "",
            ylim=(0, 1),
            title=f"learning rate {lr:g}" if len(lrs) <= 2 else f"lr {lr:g}",
        )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=len(labels), frameon=False)
    channel = df["channel"].dropna().min() if channel is None else channel
    seed = df["seed"].min()
    lr = 0.1 if 0.1 in lrs else lrs[0]  # Santurkar et al.'s learning rate, where it was run
    right = axes[-1]
    for variant in ("standard", "BN + noise"):
        part = df[
            (df["variant"] == variant)
            & (df["step"] > 0)  # the log step axis cannot show step 0
            & (df["channel"] == channel)
            & (df["seed"] == seed)
            & (df["lr"] == lr)
        ]
        _percentile_lines(right, part, colors[variant], label=variant)
    right.set(xscale="log", xlabel="training step (log scale)", ylabel="input to a sigmoid")
    handles, _ = right.get_legend_handles_labels()
    legend_below(
        fig,
        handles,
        ["standard", "BN + noise"],
        title=f"input percentiles at learning rate {lr:g}: p85 dashed, p50 solid, p15 dotted",
    )
    return fig


def percentiles_over_training(df: pd.DataFrame) -> Figure:
    """One network (the first norm and seed in ``df``): the percentiles of its measured
    unit's input over training (left) and its test accuracy (right).

    Args:
        df: :func:`bnlib.experiments.covariate_shift.ioffe_figure1` output.
    """
    norm, seed = df["norm"].iloc[0], df["seed"].min()
    d = df[(df["norm"] == norm) & (df["seed"] == seed)]
    channel = d["channel"].dropna().min()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    _percentile_lines(left, d[d["channel"] == channel], PALETTE[norm])
    left.set(
        xlabel="training step",
        ylabel="input to the unit",
        title=f"{norm}: unit {int(channel)}, percentiles",
    )
    _percentile_legend(fig)
    acc = d[(d["metric"] == "test accuracy") & (d["step"] > 0)]
    right.plot(acc["step"], acc["value"], "o-", color=PALETTE[norm])
    right.set(
        xscale="log", xlabel="training step", ylabel="test accuracy", title=f"{norm}: test accuracy"
    )
    return fig
