"""Figures of the chapter "The BN algorithm": each takes an experiment's DataFrame.

Every function returns the :class:`matplotlib.figure.Figure` it drew (the notebook shows
it); none trains or computes anything but summaries of the data it is given.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bnlib.figures.style import color, legend_below

__all__ = [
    "batch_statistics_noise",
    "bias_blowup",
    "distribution_shift",
    "gradient_check_summary",
    "running_statistics",
    "transform_stages",
]

_STAGE_TITLES = {
    "x": r"input $x$",
    "x_hat": r"normalized $\hat x$",
    "y": r"$y = \gamma\hat x + \beta$",
}


def transform_stages(df: pd.DataFrame) -> Figure:
    """Histograms of each unit's values at the three stages of Algorithm 1 (one panel each).

    Args:
        df: :func:`bnlib.experiments.algorithm.transform_stages` output.
    """
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8), sharey=False)
    what = "channel" if (df["layer"] == "conv").all() else "unit"
    for ax, (stage, title) in zip(axes, _STAGE_TITLES.items()):
        part = df[df["stage"] == stage].assign(**{what: lambda d: d["unit"].astype(str)})
        sns.histplot(
            part,
            x="value",
            hue=what,
            ax=ax,
            bins=40,
            element="step",
            stat="density",
            common_norm=False,
            legend=ax is axes[-1],
        )
        ax.set_title(title)
        ax.set_xlabel("value")
    return fig


def gradient_check_summary(df: pd.DataFrame) -> pd.DataFrame:
    """A table: the largest relative error of each checked quantity, by dtype, and whether
    every shape passed.

    Args:
        df: :func:`bnlib.experiments.algorithm.gradient_check` output.
    """
    table = df.groupby(["dtype", "quantity"], sort=False).agg(
        shapes=("shape", "nunique"),
        largest_error=("max_abs_error", "max"),
        tolerance=("tolerance", "first"),
        all_passed=("passed", "all"),
    )
    return table


def running_statistics(df: pd.DataFrame) -> Figure:
    """Left: distance of the running statistics from the population's, over training
    (solid: mean, dashed: variance). Right: test accuracy in eval mode with the running
    statistics (solid) and in train mode with each test batch's statistics (dashed). One
    colour per momentum; the legend is below the panels.

    Args:
        df: :func:`bnlib.experiments.algorithm.running_statistics` output.
    """
    from matplotlib.lines import Line2D

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    d = df[df["step"] > 0]
    momenta = list(dict.fromkeys(d["momentum"]))
    colors = {m: color(m, i) for i, m in enumerate(momenta)}  # blue, orange, green, pink
    panels = (
        (left, {"mean error": "-", "var error": "--"}),
        (right, {"accuracy: running statistics": "-", "accuracy: batch statistics": "--"}),
    )
    for ax, styles in panels:
        for momentum in momenta:
            for metric, style in styles.items():
                part = d[(d["momentum"] == momentum) & (d["metric"] == metric)]
                ax.plot(
                    part["step"], part["value"], style, marker="o", ms=3.5, color=colors[momentum]
                )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="training step (log scale)",
        ylabel="relative distance (log scale)",
        title="running averages vs population",
    )
    right.set(
        xscale="log",
        xlabel="training step (log scale)",
        ylabel="test accuracy",
        title="eval mode vs batch statistics",
    )
    handles = [Line2D([], [], color=colors[m], lw=2) for m in momenta]
    labels = [f"momentum {m}" for m in momenta]
    handles += [Line2D([], [], color="0.2", ls="-"), Line2D([], [], color="0.2", ls="--")]
    labels += ["mean error / running statistics", "var error / batch statistics"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def distribution_shift(df: pd.DataFrame) -> Figure:
    """Test accuracy against the contrast of the test images, for each network.

    Args:
        df: :func:`bnlib.experiments.algorithm.distribution_shift` output.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sns.lineplot(
        df,
        x="contrast",
        y="accuracy",
        hue="network",
        style="network",
        markers=True,
        ax=ax,
        markersize=7,
    )
    ax.set(
        xlabel="contrast of the test images (1 = as in training)",
        ylabel="test accuracy",
        ylim=(0, 1),
    )
    ax.invert_xaxis()
    return fig


def bias_blowup(df: pd.DataFrame) -> Figure:
    """Left: the bias norm over training. Right: the loss on a fixed probe batch.

    Args:
        df: :func:`bnlib.experiments.algorithm.bias_blowup` output.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    d = df[df["step"] > 0]
    for ax, metric in ((left, "bias norm"), (right, "probe loss")):
        sns.lineplot(
            d[d["metric"] == metric],
            x="step",
            y="value",
            hue="gradient",
            style="gradient",
            markers=True,
            ax=ax,
            markersize=5,
        )
        ax.set(xscale="log", xlabel="training step", ylabel=metric)
    left.set(yscale="log", title=r"$\|b\|_2$: only $b$ is trained")
    loss = d.loc[d["metric"] == "probe loss", "value"]
    right.set(ylim=(0, 1.25 * loss.max()), title="loss: unchanged either way")
    right.ticklabel_format(axis="y", useOffset=False)
    return fig


def batch_statistics_noise(df: pd.DataFrame) -> Figure:
    r"""Spread (standard deviation over random batches) of the batch statistics and of one
    example's normalized value, against the batch size, with the law the batch mean's
    spread follows when one fixed example is in every batch, :math:`\sqrt{m-1}/m`, and the
    familiar :math:`1/\sqrt{m}` of a batch of independent draws.

    The spread is computed per unit over draws, then the median over units is drawn with
    a band from the 10th to the 90th percentile of units.

    Args:
        df: :func:`bnlib.experiments.algorithm.batch_statistics_noise` output.
    """
    per_unit = (
        df.groupby(["batch_size", "unit"])[["mean_error", "std_ratio", "x_hat"]]
        .std()
        .rename(
            columns={
                "mean_error": r"batch mean $(\mu_\mathcal{B}-\mu)/\sigma$",
                "std_ratio": r"batch std $\sigma_\mathcal{B}/\sigma$",
                "x_hat": r"one example's $\hat x$",
            }
        )
        .reset_index()
        .melt(id_vars=["batch_size", "unit"], var_name="quantity", value_name="spread")
    )
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for quantity, part in per_unit.groupby("quantity", sort=False):
        q = part.groupby("batch_size")["spread"].quantile([0.1, 0.5, 0.9]).unstack()
        (line,) = ax.plot(q.index, q[0.5], marker="o", label=quantity)
        ax.fill_between(q.index, q[0.1], q[0.9], color=line.get_color(), alpha=0.2)
    m = np.array(sorted(df["batch_size"].unique()), dtype=float)
    fixed_law = r"$\sqrt{m-1}/m$ (fixed example in every batch)"
    ax.plot(m, np.sqrt(m - 1) / m, "k--", lw=1.2, label=fixed_law)
    ax.plot(m, 1 / np.sqrt(m), ":", color="0.45", lw=1.2, label=r"$1/\sqrt{m}$ (independent draws)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size $m$",
        ylabel="std over batches",
    )
    # Two columns: the measured quantities, then the two laws.
    legend_below(fig, *ax.get_legend_handles_labels(), ncol=2)
    return fig
