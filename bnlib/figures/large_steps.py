"""Figures of the chapter "Large learning rates": each takes an experiment's DataFrame
(:mod:`bnlib.experiments.large_steps`) and draws it; none trains."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from bnlib.figures.style import PALETTE, legend_below
from bnlib.step import DIVERGENCE_RATIO

__all__ = [
    "NORM_LABELS",
    "activation_growth",
    "activations_along_step",
    "change_along_step",
    "gradients_at_init",
    "one_network",
    "output_heatmap",
    "predicted_shares",
    "softmax_spread",
    "relative_loss",
    "stable_step_sizes",
]

#: How the experiments' ``norm`` values are named in figures.
NORM_LABELS = {"none": "no BN", "torch": "BN", "bnlib": "BN"}
#: Line styles of the mini-batches probed by :func:`relative_loss`.
BATCH_STYLES = {1: "-", 4: "--", 7: ":"}
#: Line styles and names of the initialization recipes (:data:`bnlib.setups.RESNET_INITS`).
INIT_STYLES = {"he": "-", "he-fan-in": (0, (6, 2)), "lecun": "--", "default": ":"}
INIT_LABELS = {
    "he": "He: N(0, 2/fan-out)",
    "he-fan-in": "N(0, 2/fan-in)",
    "lecun": "N(0, 1/fan-in)",
    "default": "PyTorch default",
}
#: Relative losses above this are drawn at this height (marked): beyond it, and for an
#: infinite loss, the exact value says nothing more.
CEILING = 1e12


def stable_step_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """The largest step size of the grid up to which no step diverges, per network and
    mini-batch (``0`` when even the smallest diverges).

    Args:
        df: :func:`bnlib.experiments.large_steps.relative_loss` or
            :func:`~bnlib.experiments.large_steps.init_ablation` output: every column but
            ``step_size, relative_loss, diverged, loss_before`` names the network.

    Returns:
        One row per network: its naming columns (for ``relative_loss``: ``seed, init,
        norm, depth, batch``), ``loss_before`` (the loss before the step),
        ``largest_stable`` and ``grid_end`` (whether it is the grid's largest step size:
        stable over the whole grid).
    """
    rows = []
    keys = [c for c in df.columns if c not in _MEASURED]
    for key, part in df.sort_values("step_size").groupby(keys):
        diverged = part["diverged"].to_numpy()
        first = int(np.argmax(diverged)) if diverged.any() else len(part)
        largest = float(part["step_size"].iloc[first - 1]) if first else 0.0
        rows.append(
            {
                **dict(zip(keys, key)),
                "loss_before": float(part["loss_before"].iloc[0]),
                "largest_stable": largest,
                "grid_end": first == len(part),
            }
        )
    return pd.DataFrame(rows)


#: The columns of a step-size probe that are measured, not the network's name.
_MEASURED = ("step_size", "relative_loss", "diverged", "loss_before")


def relative_loss(df: pd.DataFrame, init: str = "he", seed: int = 0) -> Figure:
    """Relative loss of one gradient step against its size: one column per depth, one
    row per normalization (without BN above, with BN below, each row on its own y
    range, as the BN curves span a few decades where the others span a dozen), line
    style for the mini-batch. A mini-batch whose loss before the step is not finite has
    no curve.

    Args:
        df: :func:`bnlib.experiments.large_steps.relative_loss` output.
        init: which initialization's networks to draw.
        seed: which seed's.
    """
    d = df[(df["init"] == init) & (df["seed"] == seed)]
    depths = sorted(d["depth"].unique())
    norms = [n for n in ("none", "torch", "bnlib") if n in set(d["norm"])]
    fig, axes = plt.subplots(
        len(norms),
        len(depths),
        figsize=(max(9, 3.7 * len(depths)), 1.2 + 3.2 * len(norms)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    for row, norm in zip(axes, norms):
        color = PALETTE[NORM_LABELS[norm]]
        ratios = d[d["norm"] == norm]["relative_loss"]
        finite = ratios[np.isfinite(ratios)]
        # Rows whose curves stay below the divergence threshold get a y range of their
        # own: the threshold's dozen decades would flatten them.
        stays_low = (
            bool(len(finite)) and finite.max() < DIVERGENCE_RATIO and len(finite) == len(ratios)
        )
        top = 10 ** np.ceil(np.log10(finite.max()) + 0.3) if stays_low else CEILING * 30
        bottom = min(0.05, 10 ** np.floor(np.log10(finite.min()))) if len(finite) else 0.05
        for ax, depth in zip(row, depths):
            for batch, part in d[(d["depth"] == depth) & (d["norm"] == norm)].groupby("batch"):
                if not np.isfinite(part["loss_before"]).any():
                    continue  # no loss to compare with: the step size says nothing here
                y = part["relative_loss"].clip(upper=CEILING).fillna(CEILING)
                ax.plot(part["step_size"], y, BATCH_STYLES.get(batch, "-."), color=color, lw=2)
                over = part["relative_loss"].isna() | (part["relative_loss"] >= CEILING)
                ax.plot(part["step_size"][over], y[over], "^", color=color, ms=5)
            ax.axhline(1, color="0.4", lw=0.8)
            if not stays_low:
                ax.axhline(DIVERGENCE_RATIO, color="k", lw=1, ls="-.")
            ax.set(xscale="log", yscale="log", ylim=(bottom, top))
            if not stays_low:
                ax.set_yticks(10.0 ** np.arange(0, np.log10(CEILING) + 1, 3))
            ax.set_title(f"ResNet-{depth}, {NORM_LABELS[norm]}", color=color)
        row[0].set_ylabel("loss after / loss before")
    for ax in axes[-1]:
        ax.set_xlabel("step size $\\eta$")
    handles = [Line2D([], [], color="k", ls=s, lw=2) for s in BATCH_STYLES.values()]
    handles += [Line2D([], [], color="k", ls="-.", lw=1), Line2D([], [], color="0.4", lw=0.8)]
    labels = [*(f"mini-batch {b}" for b in BATCH_STYLES), "divergence (1e3)", "no change (1)"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def activation_growth(df: pd.DataFrame, seed: int = 0) -> Figure:
    """Mean absolute channel mean and mean channel standard deviation of each residual
    block's output against depth, at initialization (log scale).

    Args:
        df: :func:`bnlib.experiments.large_steps.activation_growth` output.
    """
    d = df[df["seed"] == seed]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, metric, title in (
        (axes[0], "mean_abs", "|channel mean|"),
        (axes[1], "std", "channel standard deviation"),
    ):
        for (norm, init), part in d.groupby(["norm", "init"]):
            ax.plot(
                part["layer"],
                part[metric],
                ls=INIT_STYLES[init],
                color=PALETTE[NORM_LABELS[norm]],
                lw=2,
            )
        ax.set(yscale="log", xlabel="layer", title=title)
    axes[0].set_ylabel("average over channels")
    inits = [i for i in INIT_STYLES if i in set(d["init"])]
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=INIT_STYLES[i], lw=2) for i in inits]
    legend_below(fig, handles, ["no BN", "BN", *(INIT_LABELS[i] for i in inits)], ncol=3)
    return fig


def activations_along_step(df: pd.DataFrame, norm: str = "none") -> Figure:
    """Heatmaps of the channel means and variances (log10 of their size) of three blocks
    along one update, from 0% to 100% of the step.

    Args:
        df: :func:`bnlib.experiments.large_steps.activations_along_step` output.
        norm: which network's update to draw.
    """
    d = df[df["norm"] == norm]
    layers = sorted(d["layer"].unique())
    fig, axes = plt.subplots(2, len(layers), figsize=(11, 6.4))
    for col, layer in enumerate(layers):
        part = d[d["layer"] == layer]
        for row, metric in enumerate(("mean", "variance")):
            grid = part.pivot(index="channel", columns="fraction", values=metric)
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.log10(np.abs(grid.to_numpy()))
            ax = axes[row, col]
            image = _step_heatmap(ax, values, f"layer {layer}: {metric}", cmap="magma")
            fig.colorbar(
                image, ax=ax, label=f"log10 |{metric}|" if col == len(layers) - 1 else None
            )
            if row == 1:
                ax.set_xlabel("% of the step")
            if col == 0:
                ax.set_ylabel("channel")
    return fig


def _step_heatmap(ax: Axes, values: np.ndarray, title: str, **colours) -> AxesImage:
    """Draw a ``(channels, fractions)`` grid of ``values`` over 0-100% of the step."""
    image = ax.imshow(
        values,
        aspect="auto",
        origin="lower",
        extent=(0, 100, -0.5, len(values) - 0.5),
        interpolation="nearest",
        **colours,
    )
    ax.set_title(title)
    ax.grid(False)  # the style's grid lines would read as data on a heatmap
    return image


def change_along_step(df: pd.DataFrame) -> Figure:
    """How much each channel's mean changes along one update, relative to its value at
    the start: log10(|mean at f| / |mean at 0|) for f from 0% to 100% of the step, one
    row of panels per network and one column per block, all on one colour scale (white:
    no change; black: the channel outputs exactly zero on the whole mini-batch), so that
    the networks can be compared directly.

    Args:
        df: :func:`bnlib.experiments.large_steps.activations_along_step` output.
    """
    norms = [n for n in ("none", "torch") if n in set(df["norm"])]
    layers = sorted(df["layer"].unique())
    grids, dead = {}, {}
    for (norm, layer), part in df.groupby(["norm", "layer"]):
        grid = part.pivot(index="channel", columns="fraction", values="mean").to_numpy()
        variance = part.pivot(index="channel", columns="fraction", values="variance").to_numpy()
        dead[norm, layer] = (grid == 0) & (variance == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            grids[norm, layer] = np.log10(np.abs(grid) / np.abs(grid[:, :1]))
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    limit = max(float(np.ceil(np.abs(finite).max())), 1.0)
    fig, axes = plt.subplots(len(norms), len(layers), figsize=(11, 3.3 * len(norms)), squeeze=False)
    for (row, norm), (col, layer) in itertools.product(enumerate(norms), enumerate(layers)):
        values = np.clip(
            np.nan_to_num(grids[norm, layer], posinf=limit, neginf=-limit), -limit, limit
        )
        ax = axes[row, col]
        image = _step_heatmap(
            ax,
            # a dead channel (exactly zero on the whole mini-batch) in a colour of its own,
            # apart from a channel that merely shrinks
            np.ma.masked_array(values, mask=dead[norm, layer]),
            f"{NORM_LABELS[norm]}, layer {layer}",
            cmap=plt.get_cmap("RdBu_r").with_extremes(bad="black"),
            vmin=-limit,
            vmax=limit,
        )
        if row == len(norms) - 1:
            ax.set_xlabel("% of the step")
        if col == 0:
            ax.set_ylabel("channel")
    fig.colorbar(image, ax=axes, label="log10 (|mean| / |mean at 0%|)", shrink=0.85)
    return fig


def _predicted_share(out: pd.DataFrame) -> float:
    """Fraction of images whose predicted class is the most frequent prediction."""
    p = out["value"] + (out["class"] == out["label"])
    predicted = out.assign(p=p).loc[lambda o: o.groupby("image")["p"].idxmax()]["class"]
    return float(predicted.value_counts(normalize=True).iloc[0])


def predicted_shares(df: pd.DataFrame) -> pd.DataFrame:
    """Fraction of the images assigned to the most frequent predicted class, per network.

    Args:
        df: :func:`bnlib.experiments.large_steps.gradients_at_init` output.

    Returns:
        Columns ``seed, depth, norm, share``.
    """
    out = df[df["quantity"] == "output"]
    rows = [
        {"seed": seed, "depth": depth, "norm": norm, "share": _predicted_share(part)}
        for (seed, depth, norm), part in out.groupby(["seed", "depth", "norm"])
    ]
    return pd.DataFrame(rows)


def softmax_spread(df: pd.DataFrame) -> pd.DataFrame:
    """How much each network's output gradient changes from image to image: the standard
    deviation across images of its softmax output (the gradient plus the one-hot label),
    averaged over the classes. 0 when every image gets the same probabilities.

    Args:
        df: output rows in the layout of
            :func:`bnlib.experiments.large_steps.gradients_at_init`.

    Returns:
        Columns ``seed, depth, norm, spread``.
    """
    out = df[df["quantity"] == "output"]
    out = out.assign(p=out["value"] + (out["class"] == out["label"]))
    rows = [
        {
            "seed": seed,
            "depth": depth,
            "norm": norm,
            "spread": float(part.pivot(index="image", columns="class", values="p").std().mean()),
        }
        for (seed, depth, norm), part in out.groupby(["seed", "depth", "norm"])
    ]
    return pd.DataFrame(rows)


def output_heatmap(ax: Axes, out: pd.DataFrame, title: str) -> AxesImage:
    """Draw one network's output gradients as an image x class heatmap on ``ax``, titled
    ``title`` and, on a second line, the share of images given the most frequent
    predicted class.

    Args:
        out: the ``quantity == "output"`` rows of one network (one seed, depth, norm).

    Returns:
        The heatmap, for a colorbar (range -1 to 1).
    """
    matrix = out.pivot(index="image", columns="class", values="value").to_numpy()
    image = ax.imshow(
        matrix, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
    )
    ax.set(
        title=f"{title}\nmost frequent class {_predicted_share(out):.0%}",
        xlabel="class",
        xticks=range(matrix.shape[1]),
    )
    ax.grid(False)
    return image


def gradients_at_init(df: pd.DataFrame, depth: int | None = None, seed: int = 0) -> Figure:
    """The output gradient (softmax minus one-hot) of every image and class, with and
    without BN, and the middle block's weight gradients as histograms.

    Args:
        df: :func:`bnlib.experiments.large_steps.gradients_at_init` output.
        depth: which networks (default: the deepest); seed: which seed's.
    """
    depth = df["depth"].max() if depth is None else depth
    df = df[(df["depth"] == depth) & (df["seed"] == seed)]
    fig = plt.figure(figsize=(11, 7.2))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.4, 1))
    for col, norm in enumerate(("none", "torch")):
        out = df[(df["norm"] == norm) & (df["quantity"] == "output")]
        ax = fig.add_subplot(grid[0, col])
        image = output_heatmap(ax, out, NORM_LABELS[norm])
        ax.set(ylabel="test image" if col == 0 else None)
        if col == 1:
            fig.colorbar(image, ax=ax, label="softmax - one-hot")
        weights = df[(df["norm"] == norm) & (df["quantity"] == "weight")]["value"]
        power = int(np.floor(np.log10(weights.abs().max())))  # the unit, in the label
        ax = fig.add_subplot(grid[1, col])
        ax.hist(weights / 10.0**power, bins=60, color=PALETTE[NORM_LABELS[norm]])
        ax.set(
            yscale="log",
            xlabel=f"weight gradient ($\\times 10^{{{power}}}$)",
            ylabel="count" if col == 0 else None,
        )
    return fig


def one_network(relative: pd.DataFrame, growth: pd.DataFrame, step_size: float) -> Figure:
    """One network at initialization: the relative loss of one gradient step against its
    size, with ``step_size`` marked, and the size of its activations against depth (the
    explorer's figure).

    Args:
        relative: :func:`bnlib.experiments.large_steps.relative_loss` output for one network
            and one mini-batch.
        growth: :func:`bnlib.experiments.large_steps.activation_growth` output for the same
            network.
        step_size: the step size to mark.
    """
    norm, init, depth = relative[["norm", "init", "depth"]].iloc[0]
    color = PALETTE[NORM_LABELS[norm]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    curve = relative.sort_values("step_size")
    y = curve["relative_loss"].clip(upper=CEILING).fillna(CEILING)
    left.plot(curve["step_size"], y, "-o", color=color, lw=2, ms=4)
    left.axhline(DIVERGENCE_RATIO, color="k", lw=1, ls="-.")
    left.axvline(step_size, color="k", lw=1, ls=":")
    at = np.interp(np.log10(step_size), np.log10(curve["step_size"]), np.log10(y))
    left.set(
        xscale="log",
        yscale="log",
        ylim=(0.05, CEILING * 30),
        xlabel="step size $\\eta$",
        ylabel="loss after / loss before",
        title=(
            f"one step: over 1e12 at $\\eta$ = {step_size:g}"
            if 10**at >= CEILING
            else f"one step: {10**at:.3g} at $\\eta$ = {step_size:g}"
        ),
    )
    right.plot(growth["layer"], growth["std"], "-", color=color, lw=2, label="std")
    right.plot(growth["layer"], growth["mean_abs"], "--", color=color, lw=2, label="|mean|")
    right.set(yscale="log", xlabel="layer", title="activations at initialization")
    fig.suptitle(f"ResNet-{depth}, {NORM_LABELS[norm]}, {INIT_LABELS[init]}")
    handles = [
        Line2D([], [], color="k", ls="-.", lw=1),
        Line2D([], [], color="k", ls=":", lw=1),
        Line2D([], [], color=color, lw=2),
        Line2D([], [], color=color, ls="--", lw=2),
    ]
    labels = ["divergence (1e3)", "chosen step size", "channel std", "|channel mean|"]
    legend_below(fig, handles, labels, ncol=4)
    return fig
