"""Figures of the chapter "Why BN tolerates large steps": each takes an experiment's
DataFrame (:mod:`bnlib.experiments.landscape`) and draws it; none trains."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from bnlib.figures.style import PALETTE, decade_labels, legend_below

__all__ = [
    "NORM_LABELS",
    "distribution_drift",
    "explorer_view",
    "effective_lr",
    "landscape_over_training",
    "landscape_summary",
    "lp_normalization",
]

#: How the experiments' normalization names appear in figures.
NORM_LABELS = {"none": "no BN", "bn": "BN", "l1": "ℓ1", "l2": "ℓ2", "linf": "ℓ∞"}
#: Effective learning rates above this are drawn at it (a triangle): beyond it the
#: weights have shrunk to almost nothing, and the exact value says nothing more.
EFFECTIVE_LR_CEILING = 1e3
#: RMS unit norms below this are off the bottom of :func:`effective_lr`'s first panel.
NORM_FLOOR = 1e-2
#: Line styles of the weight decays in :func:`effective_lr`.
DECAY_STYLES = ["-", "--", ":", "-."]


def landscape_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Santurkar et al.'s three measurements per network and training step, over the
    probed step sizes.

    Args:
        df: :func:`bnlib.experiments.landscape.landscape` output.

    Returns:
        Columns ``network, norm, step`` and ``loss_min, loss_max`` (the range of the loss
        along the gradient, the start included), ``rise`` (the largest loss on the line
        over the loss at the start: how far the loss climbs), ``change_min, change_max``
        (of ``grad_change``), ``beta_max`` (effective beta-smoothness), ``grad_norm``.
    """
    keys = ["network", "norm", "step"]
    d = df.copy()
    groups = d.groupby(keys, sort=False)
    out = groups.agg(
        loss_min=("loss", "min"),
        loss_max=("loss", "max"),
        loss_start=("loss_start", "first"),
        change_min=("grad_change", "min"),
        change_max=("grad_change", "max"),
        beta_max=("beta", "max"),
        grad_norm=("grad_norm", "first"),
    ).reset_index()
    out["loss_min"] = np.minimum(out["loss_min"], out["loss_start"])
    out["loss_max"] = np.maximum(out["loss_max"], out["loss_start"])
    out["rise"] = out["loss_max"] / out["loss_start"]
    return out.drop(columns="loss_start")


def landscape_over_training(df: pd.DataFrame, title: str | None = None) -> Figure:
    """Santurkar et al.'s Figure 4 for one network: over training, the range of the loss
    along the gradient, the range of the gradient's change (predictiveness) and the
    largest change per distance moved (effective beta-smoothness), with and without BN.

    Args:
        df: :func:`bnlib.experiments.landscape.landscape` output (one network).
        title: the figure's title; default none.
    """
    s = landscape_summary(df)
    # stacked: three panels side by side would be too small to read in the text column
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 9.5), sharex=True)
    panels = [
        ("loss_min", "loss_max", "loss along the gradient"),
        ("change_min", "change_max", "change of the gradient"),
        (None, "beta_max", "effective β-smoothness"),
    ]
    handles = []
    for norm in dict.fromkeys(s["norm"]):
        label = NORM_LABELS.get(norm, norm)
        color = PALETTE.get(label)
        part = s[s["norm"] == norm].sort_values("step")
        for ax, (low, high, _) in zip(axes, panels):
            finite = part[np.isfinite(part[high])]
            if low is not None:
                ax.fill_between(
                    finite["step"], finite[low], finite[high], color=color, alpha=0.3, lw=0
                )
            ax.plot(finite["step"], finite[high], color=color, lw=1.8)
        handles.append(Line2D([], [], color=color, lw=6, alpha=0.5, label=label))
    for ax, (_, _, name) in zip(axes, panels):
        ax.set_yscale("log")
        ax.set_title(name)
        decade_labels(ax)
    axes[-1].set_xlabel("training step")
    legend_below(fig, handles, [h.get_label() for h in handles])
    if title:
        fig.suptitle(title)
    return fig


def distribution_drift(df: pd.DataFrame) -> pd.DataFrame:
    """How far each layer's ReLU inputs moved over training, per normalization.

    For each channel: the range over the measured steps of its mean, divided by its
    standard deviation averaged over those steps (``mean_drift``), and the range of the
    natural log of its standard deviation (``scale_drift``; 0.69 is a factor of 2).

    Args:
        df: :func:`bnlib.experiments.landscape.lp_normalization` output.

    Returns:
        Columns ``norm, seed, layer, mean_drift, scale_drift``: medians over the
        layer's channels.
    """
    d = df[np.isfinite(df["std"]) & (df["std"] > 0)].assign(log_std=lambda t: np.log(t["std"]))
    per_channel = d.groupby(["norm", "seed", "layer", "channel"], sort=False).agg(
        mean_lo=("mean", "min"),
        mean_hi=("mean", "max"),
        std_avg=("std", "mean"),
        log_lo=("log_std", "min"),
        log_hi=("log_std", "max"),
    )
    per_channel["mean_drift"] = (per_channel["mean_hi"] - per_channel["mean_lo"]) / per_channel[
        "std_avg"
    ]
    per_channel["scale_drift"] = per_channel["log_hi"] - per_channel["log_lo"]
    out = per_channel.groupby(["norm", "seed", "layer"], sort=False)[
        ["mean_drift", "scale_drift"]
    ].median()
    return out.reset_index()


def lp_normalization(df: pd.DataFrame) -> Figure:
    """Santurkar et al.'s l_p normalizations against BN and none: the training loss over
    steps (first seed), and how far each layer's ReLU inputs moved (:func:`distribution_drift`,
    mean over seeds).

    Args:
        df: :func:`bnlib.experiments.landscape.lp_normalization` output.
    """
    seed = df["seed"].min()
    norms = list(dict.fromkeys(df["norm"]))
    drift = distribution_drift(df).groupby(["norm", "layer"], sort=False).mean().reset_index()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    handles = []
    for norm in norms:
        label = NORM_LABELS.get(norm, norm)
        color = PALETTE.get(label)
        loss = (
            df[(df["norm"] == norm) & (df["seed"] == seed)]
            .groupby("step")["loss"]
            .first()
            .sort_index()
        )
        axes[0].plot(loss.index, loss.to_numpy(), color=color, lw=1.8)
        part = drift[drift["norm"] == norm].sort_values("layer")
        axes[1].plot(part["layer"] + 1, part["mean_drift"], "o-", color=color, lw=1.8)
        axes[2].plot(part["layer"] + 1, part["scale_drift"], "o-", color=color, lw=1.8)
        handles.append(Line2D([], [], color=color, lw=2.5, label=label))
    axes[0].set(yscale="log", xlabel="training step", title="training loss (its batch)")
    decade_labels(axes[0])
    axes[1].set(xlabel="convolution", title="movement of the mean (in std)")
    axes[2].set(xlabel="convolution", title="movement of log std")
    for ax in axes[1:]:
        ax.set_xticks(sorted(drift["layer"].unique() + 1))
        ax.set_ylim(bottom=0)
    legend_below(fig, handles, [h.get_label() for h in handles])
    return fig


def effective_lr(df: pd.DataFrame, lrs: list[float] | None = None) -> Figure:
    """Weight norms (the root mean square of the units' norms) and effective learning rates
    of BN networks: over training for a few learning rates (median over the hidden layers,
    first seed), and at the end of training against the nominal learning rate, one line
    per weight decay (median over layers and seeds). Diverged networks are left out;
    effective rates above :data:`EFFECTIVE_LR_CEILING` are drawn at it, as triangles in
    the last panel, and norms below :data:`NORM_FLOOR` are off the first panel's axis.

    Args:
        df: :func:`bnlib.experiments.landscape.effective_lr` output.
        lrs: the learning rates drawn over training; default: every other of the grid.
    """
    d = df[~df["diverged"]]
    grid = sorted(d["lr"].unique())
    lrs = lrs or grid[::2]
    decays = sorted(d["weight_decay"].unique())
    seed = d["seed"].min()
    per_step = (
        d[d["seed"] == seed]
        .groupby(["lr", "weight_decay", "step"])[["weight_norm", "effective_lr"]]
        .median()
        .reset_index()
    )
    cmap = plt.get_cmap("viridis")
    colors = {lr: cmap(i / max(len(lrs) - 1, 1)) for i, lr in enumerate(lrs)}
    # two panels over training above the end-of-run panel: three side by side would be
    # too small to read in the text column
    fig = plt.figure(figsize=(9, 9), layout="constrained")
    cells = fig.add_gridspec(2, 2)
    axes = [
        fig.add_subplot(cells[0, 0]),
        fig.add_subplot(cells[0, 1]),
        fig.add_subplot(cells[1, :]),
    ]
    for j, wd in enumerate(decays):
        for lr in lrs:
            part = per_step[(per_step["lr"] == lr) & (per_step["weight_decay"] == wd)]
            style = DECAY_STYLES[j % len(DECAY_STYLES)]
            axes[0].plot(part["step"], part["weight_norm"], style, color=colors[lr], lw=1.6)
            axes[1].plot(part["step"], part["effective_lr"], style, color=colors[lr], lw=1.6)
    last = d[d["step"] == d["step"].max()]
    final = last.groupby(["weight_decay", "lr"])["effective_lr"].median().reset_index()
    for j, wd in enumerate(decays):
        part = final[final["weight_decay"] == wd]
        shown = part["effective_lr"].clip(upper=EFFECTIVE_LR_CEILING)
        axes[2].plot(part["lr"], shown, DECAY_STYLES[j % 4] + "o", color="0.2")
        above = part["effective_lr"] > EFFECTIVE_LR_CEILING
        axes[2].plot(part["lr"][above], shown[above], "^", color="0.2", ms=11)
    axes[2].plot(grid, grid, color="0.6", lw=1.5, zorder=0)
    axes[0].set(yscale="log", xlabel="training step", title="RMS unit norm ‖w‖")
    axes[1].set(yscale="log", xlabel="training step", title="effective lr  η/‖w‖²")
    axes[2].set(
        xscale="log", yscale="log", xlabel="nominal learning rate η", title="effective lr at end"
    )
    # collapsed weights (norms toward 0, effective rates toward infinity) leave the axes
    # rather than squash everything else
    low = d.loc[d["effective_lr"] > 0, "effective_lr"].min()
    for ax in axes[1:]:
        ax.set_ylim(low / 3, EFFECTIVE_LR_CEILING * 3)
    axes[0].set_ylim(bottom=max(d["weight_norm"].min() / 1.5, NORM_FLOOR))
    handles = [Line2D([], [], color=colors[lr], lw=2.5, label=f"η = {lr:.2g}") for lr in lrs]
    handles += [
        Line2D([], [], color="0.2", ls=DECAY_STYLES[j % 4], label=f"weight decay {wd:g}")
        for j, wd in enumerate(decays)
    ]
    handles.append(Line2D([], [], color="0.6", lw=1.5, label="effective = nominal"))
    legend_below(fig, handles, [h.get_label() for h in handles], ncol=3)
    return fig


def explorer_view(df: pd.DataFrame, lr: float, at_step: int) -> Figure:
    """One network's training seen three ways (the chapter's explorer): the root mean
    square of its units' weight norms, the effective learning rate that gives, and the
    loss along the gradient at training step ``at_step``.

    Args:
        df: :func:`bnlib.experiments.landscape.landscape` output (one network, one norm).
        lr: the nominal learning rate it was trained with.
        at_step: a measured step.
    """
    norm = df["norm"].iloc[0]
    label = NORM_LABELS.get(norm, norm)
    color = PALETTE.get(label)
    per_step = df.groupby("step")["weight_norm"].first()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.0))
    axes[0].plot(per_step.index, per_step.to_numpy(), "o-", color=color)
    axes[1].plot(per_step.index, lr / per_step.to_numpy() ** 2, "o-", color=color)
    line = df[df["step"] == at_step].sort_values("factor")
    axes[2].plot(line["factor"], line["loss"] / line["loss_start"], "o-", color=color)
    axes[2].axhline(1.0, color="0.6", lw=1)
    axes[0].set(xlabel="training step", title="RMS unit norm ‖w‖")
    axes[1].set(
        xlabel="training step",
        title="η/‖w‖²" + ("" if norm != "none" else " (no BN: not invariant)"),
    )
    for ax in axes[:2]:  # short runs move these by percents: plain numbers read best
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.yaxis.set_major_locator(MaxNLocator(5))
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="step size / learning rate",
        ylabel="loss after / before",
        title=f"along the gradient, step {at_step}",
    )
    factors = line["factor"].to_numpy()
    ticks = [f for f in (0.01, 0.1, 0.5, 1, 2, 4, 10, 30) if factors.min() <= f <= factors.max()]
    axes[2].set_xticks(ticks, [f"{f:g}" for f in ticks])
    axes[2].xaxis.set_minor_formatter(NullFormatter())
    for ax in axes[:2]:
        ax.axvline(at_step, color="0.6", lw=1, ls=":")
    if df["diverged"].any():
        fig.suptitle(f"{label}: the training loss became non-finite; the run stopped")
    return fig
