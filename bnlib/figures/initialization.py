"""Figures of the chapter "Random initialization": each takes an experiment's DataFrame
(:mod:`bnlib.experiments.initialization`) and draws it, or summarizes it as a table;
none trains."""

from __future__ import annotations

import itertools
import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnlib.figures.large_steps import NORM_LABELS, output_heatmap
from bnlib.figures.style import PALETTE, legend_below
from bnlib.spectra import (
    product_edge,
    quarter_circle_cdf,
    quarter_circle_density,
    singular_value_summary,
)

__all__ = [
    "ARCHITECTURE_LABELS",
    "NEAR_ONE",
    "VARIANT_LABELS",
    "YANG_FACTOR",
    "depth_trainability",
    "fresh_network",
    "gaussian_products",
    "gradient_explosion",
    "growth_factors",
    "init_schemes",
    "jacobian_summary",
    "jacobians_over_training",
    "mlp_output_gradients",
    "output_collapse",
    "residual_variance",
    "skipinit_sweep",
    "spectrum_statistics",
    "spectrum_table",
]

ARCHITECTURE_LABELS = {
    "mlp": "plain MLP",
    "residual": "residual MLP",
    "resnet": "CIFAR ResNet (conv.)",
}
INIT_STYLES = {"he": "-", "default": ":"}
INIT_LABELS = {"he": "He", "default": "PyTorch default"}
#: Colors of the initialization schemes of :func:`init_schemes` (colorblind-safe).
SCHEME_COLORS = {
    "default": "#999999",
    "xavier": "#0072B2",
    "he": "#009E73",
    "orthogonal": "#E69F00",
    "he x 1.2": "#CC79A7",
}
#: The networks of the SkipInit sweep, by the experiment's variant names.
VARIANT_LABELS = {"none": "no BN", "bn": "BN", "skipinit": "SkipInit", "fixup": "Fixup"}
#: Yang et al.'s growth of the squared gradient norm per layer, going backwards, in a
#: deep ReLU MLP with BN at initialization.
YANG_FACTOR = math.pi / (math.pi - 1)
#: A singular value "near 1" (Ioffe & Szegedy's conjecture), for :func:`jacobian_summary`.
NEAR_ONE = (0.5, 2.0)
#: The vertical range of :func:`jacobians_over_training`'s root mean square panels.
RMS_RANGE = (0.01, 10.0)


def _band(ax, x, values: pd.DataFrame, color, style="-", label=None, hatch="///") -> None:
    """Mean over seeds (columns) as a line, min-max as a band: shaded under a solid line,
    hatched (with ``hatch``) under any other, so that two bands of one colour can be told
    apart."""
    ax.plot(x, values.mean(axis=1), style, color=color, lw=2, label=label)
    if values.shape[1] > 1:
        low, high = values.min(axis=1), values.max(axis=1)
        if style == "-":
            ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
        else:
            ax.fill_between(
                x, low, high, facecolor="none", edgecolor=color, alpha=0.5, hatch=hatch, lw=0
            )


def mlp_output_gradients(df: pd.DataFrame, seed: int = 0) -> Figure:
    """The output gradient (softmax minus one-hot) of every image and class of fresh
    plain MLPs: one heatmap per depth (rows) and normalization (columns).

    Args:
        df: :func:`bnlib.experiments.output_gradients.mlp_output_gradients` output.
        seed: which seed's networks.
    """
    df = df[df["seed"] == seed]
    depths, norms = sorted(set(df["depth"])), [n for n in NORM_LABELS if n in set(df["norm"])]
    fig, axes = plt.subplots(
        len(depths), len(norms), figsize=(9.5, 4.0 * len(depths)), squeeze=False
    )
    for (row, depth), (col, norm) in itertools.product(enumerate(depths), enumerate(norms)):
        ax = axes[row, col]
        out = df[(df["depth"] == depth) & (df["norm"] == norm)]
        image = output_heatmap(ax, out, f"{depth} layers, {NORM_LABELS[norm]}")
        ax.set(ylabel="test image" if col == 0 else None)
        if row < len(depths) - 1:
            ax.set(xlabel=None)
    fig.colorbar(image, ax=axes, label="softmax - one-hot", shrink=0.8)
    return fig


def output_collapse(df: pd.DataFrame) -> Figure:
    """The share of test images given the most frequent class, against depth, per
    architecture: lines are the mean over seeds, bands the range.

    Args:
        df: :func:`bnlib.experiments.initialization.output_collapse` output.
    """
    archs = [a for a in ARCHITECTURE_LABELS if a in set(df["architecture"])]
    fig, axes = plt.subplots(
        len(archs), 1, figsize=(7.5, 3.0 * len(archs)), sharey=True, squeeze=False
    )
    for ax, arch in zip(axes[:, 0], archs):
        part = df[df["architecture"] == arch]
        for (norm, init), one in part.groupby(["norm", "init"]):
            wide = one.pivot_table(index="depth", columns="seed", values="majority")
            _band(ax, wide.index, wide, PALETTE[NORM_LABELS[norm]], INIT_STYLES[init])
        ax.set(xscale="log", ylim=(0, 1.05), title=ARCHITECTURE_LABELS[arch], ylabel="majority")
        depths = sorted(part["depth"].unique())
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
    axes[-1, 0].set_xlabel("depth (layers)")
    inits = [i for i in INIT_STYLES if i in set(df["init"])]
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=INIT_STYLES[i], lw=2) for i in inits]
    legend_below(fig, handles, ["no BN", "BN", *(INIT_LABELS[i] for i in inits)], ncol=2)
    return fig


def gaussian_products(df: pd.DataFrame, depths=(1, 3, 5), bins: int = 50) -> Figure:
    """Histograms of the singular values of Gaussian products of ``depths`` matrices,
    with the quarter-circle law (one matrix) and each product's theoretical largest
    singular value.

    Args:
        df: :func:`bnlib.experiments.initialization.gaussian_products` output.
    """
    depths = [d for d in depths if d in set(df["depth"])]
    if not depths:
        raise ValueError("none of the requested depths is in the data")
    fig, axes = plt.subplots(1, len(depths), figsize=(10, 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    top = max(product_edge(d) for d in depths) * 1.08
    edges = np.linspace(0, top, bins + 1)
    for ax, depth in zip(axes, depths):
        values = df.loc[df["depth"] == depth, "value"]
        ax.hist(values, edges, density=True, color=PALETTE["no BN"], alpha=0.75)
        if depth == 1:
            s = np.linspace(0, 2, 200)
            ax.plot(s, quarter_circle_density(s), "k-", lw=1.8)
        ax.axvline(product_edge(depth), color="k", ls="--", lw=1.5)
        ax.set(title=f"L = {depth}", xlabel="singular value", yscale="log", ylim=(1e-3, 30))
    axes[0].set_ylabel("density")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=PALETTE["no BN"], alpha=0.75),
        Line2D([], [], color="k", lw=1.8),
        Line2D([], [], color="k", ls="--", lw=1.5),
    ]
    labels = ["simulation", "quarter-circle law (L = 1)", "theory's largest value"]
    legend_below(fig, handles, labels)
    return fig


def spectrum_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """:func:`bnlib.spectra.singular_value_summary` of the ``value`` column per group.

    Returns:
        One row per group of ``by``: the group's columns, ``largest``, ``median``,
        ``fraction_small``, ``rms`` (root mean square singular value), and two
        scale-free measures of the spread: ``spread`` (largest over root mean square)
        and ``fraction_small_relative`` (the share below 0.1 times the root mean
        square); and ``fraction_zero``, the share below 1e-6 times the root mean square
        (zeros up to round-off, such as those of inactive ReLU units).
    """
    rows = []
    for key, part in df.groupby(by):
        key = key if isinstance(key, tuple) else (key,)
        rms = float(np.sqrt((part["value"] ** 2).mean()))
        summary = singular_value_summary(part["value"])
        rows.append(
            {
                **dict(zip(by, key)),
                **summary,
                "rms": rms,
                "spread": summary["largest"] / rms,
                "fraction_small_relative": float((part["value"] < 0.1 * rms).mean()),
                "fraction_zero": float((part["value"] < 1e-6 * rms).mean()),
            }
        )
    return pd.DataFrame(rows)


def spectrum_statistics(products: pd.DataFrame, networks: pd.DataFrame | None = None) -> Figure:
    """The largest singular value, the median and the share below 0.1 against the
    number of matrices: Gaussian products with the theory, and optionally real
    networks' Jacobians across as many layers (for them the share below 0.1 times their
    root mean square singular value, which does not change with the Jacobian's size; a
    product's root mean square is about 1).

    Args:
        products: :func:`bnlib.experiments.initialization.gaussian_products` output.
        networks: :func:`bnlib.experiments.initialization.network_spectra` output.
    """
    stats = spectrum_table(products, ["depth"])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.9))
    depths = stats["depth"].to_numpy()
    grid = np.arange(1, depths.max() + 1)
    theory = {
        "largest": ([product_edge(d) for d in grid], grid),
        "median": ([_quarter_circle_median()], [1]),
        "fraction_small": ([float(quarter_circle_cdf(0.1))], [1]),
    }
    titles = {"largest": "largest", "median": "median", "fraction_small": "share below 0.1"}
    if networks is not None:  # scale-free for the networks, whose Jacobians grow with depth
        titles["fraction_small"] = "share < 0.1 × RMS"
    for ax, metric in zip(axes, titles):
        ax.plot(depths, stats[metric], "o", color="0.35", ms=6)
        values, at = theory[metric]
        ax.plot(at, values, "k-" if len(at) > 1 else "k*", lw=1.5, ms=12)
        ax.set(title=titles[metric], xlabel="matrices / layers L")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        if metric != "fraction_small":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(mpl.ticker.LogLocator(base=10, subs=(1.0, 3.0)))
            ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    handles = [
        Line2D([], [], color="0.35", marker="o", ls="none"),
        Line2D([], [], color="k", lw=1.5, marker="*", ms=10),
    ]
    labels = ["Gaussian product", "theory"]
    if networks is not None:
        net = spectrum_table(networks, ["activation", "norm", "depth"])
        markers = {"linear": "s", "relu": "^"}
        filled = {"linear": False, "relu": True}  # shape and fill: two cues, not one
        deepest = int(networks["depth"].max())
        log_depth = deepest > 2 * depths.max()  # deep networks: a log axis, see below
        # no BN a little left, BN a little right: where they agree, both stay visible
        dodge = {"no BN": 0.9, "BN": 1.1} if log_depth else {"no BN": -0.2, "BN": 0.2}
        for (act, norm), part in net.groupby(["activation", "norm"]):
            color = PALETTE[NORM_LABELS[norm]]
            shift = dodge.get(NORM_LABELS[norm], 1.0 if log_depth else 0.0)
            x = part["depth"] * shift if log_depth else part["depth"] + shift
            for ax, metric in zip(axes, titles):
                if metric == "median" and act == "relu":
                    continue  # about half the units are inactive: a median near 0
                column = "fraction_small_relative" if metric == "fraction_small" else metric
                ax.plot(
                    x,
                    part[column],
                    markers[act],
                    color=color,
                    ms=7,
                    mfc=color if filled[act] else "none",
                    mew=1.6,
                )
        for act, mk in markers.items():
            if act in set(networks["activation"]):
                for norm in ("no BN", "BN"):
                    fill = PALETTE[norm] if filled[act] else "none"
                    handles.append(
                        Line2D([], [], color=PALETTE[norm], marker=mk, ls="none", mfc=fill)
                    )
                    labels.append(f"{act} net, {norm}")
        if log_depth:  # deep networks: a log axis keeps the products legible
            ticks = [t for t in (1, 3, 10, 30, 100, 300, 1000) if t <= deepest]
            for ax in axes:
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(mpl.ticker.FixedLocator(ticks))
                ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    for ax, metric in zip(axes, titles):
        low, high = ax.get_ylim()
        if metric != "fraction_small" and high / low > 1e3:  # many decades: powers of ten
            ax.yaxis.set_major_locator(mpl.ticker.LogLocator(base=10, numticks=6))
            ax.yaxis.set_major_formatter(mpl.ticker.LogFormatterSciNotation())
    legend_below(fig, handles, labels, ncol=3)
    return fig


def _quarter_circle_median() -> float:
    """The quarter-circle law's median (about 0.808), by bisection on its CDF."""
    low, high = 0.0, 2.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if quarter_circle_cdf(mid) < 0.5 else (low, mid)
    return (low + high) / 2


def jacobian_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, norm, Jacobian, step, seed): the root mean square singular value
    and the share of singular values in :data:`NEAR_ONE`.

    Args:
        df: :func:`bnlib.experiments.initialization.jacobians_over_training` output.
    """
    keys = ["activation", "norm", "jacobian", "step", "seed"]
    low, high = NEAR_ONE
    grouped = df.groupby(keys)
    out = pd.DataFrame(
        {
            "rms": grouped["value"].apply(lambda v: float(np.sqrt((v**2).mean()))),
            "near_one": grouped["value"].apply(lambda v: float(v.between(low, high).mean())),
            "diverged": grouped["diverged"].any(),
        }
    )
    return out.reset_index()


def jacobians_over_training(
    df: pd.DataFrame, jacobian: str = "layer 2", controls: dict[str, pd.DataFrame] | None = None
) -> Figure:
    """One hidden layer's Jacobian over training: its root mean square singular value
    and the share of its singular values near 1, per activation, without and with BN.

    Args:
        df: :func:`bnlib.experiments.initialization.jacobians_over_training` output
            (solid lines, circles).
        jacobian: ``"layer i"`` or ``"end to end"``.
        controls: more runs of the same experiment, by legend label (for example
            ``{"ReLU at lr 0.064": frame}``), drawn dashed with squares, then dotted with
            triangles, in the colour of their normalization.
    """
    styles = [("-o", "///"), ("--s", "\\\\\\"), (":^", "...")]
    frames = [df, *(controls or {}).values()]
    if len(frames) > len(styles):
        raise ValueError(f"at most {len(styles) - 1} controls, got {len(frames) - 1}")
    runs = [(frame, *style) for frame, style in zip(frames, styles)]
    summaries = [jacobian_summary(frame) for frame, _, _ in runs]
    summaries = [part[part["jacobian"] == jacobian] for part in summaries]
    present = set().union(*(set(part["activation"]) for part in summaries))
    acts = [a for a in ("sigmoid", "relu") if a in present]
    fig, axes = plt.subplots(2, len(acts), figsize=(10, 6.4), sharex=True, squeeze=False)
    low, high = NEAR_ONE
    for summary, (_, style, hatch) in zip(summaries, runs):
        for col, act in enumerate(acts):
            for norm, part in summary[summary["activation"] == act].groupby("norm"):
                color = PALETTE[NORM_LABELS[norm]]
                running = part[~part["diverged"]]
                lost = part[part["diverged"]].groupby("seed")["step"].min()
                for row, metric in enumerate(("rms", "near_one")):
                    wide = running.pivot_table(index="step", columns="seed", values=metric)
                    wide = wide.dropna()  # steps that every seed reached without diverging
                    x = wide.index.to_numpy() + 1
                    _band(axes[row, col], x, wide, color, style, hatch=hatch)
                    top = RMS_RANGE[1] if row == 0 else 1.0
                    if lost.empty:  # (an empty line outside the clip box upsets the layout)
                        continue
                    axes[row, col].plot(
                        lost.to_numpy() + 1,
                        [top] * len(lost),
                        "x",
                        color=color,
                        ms=10,
                        mew=2,
                        clip_on=False,
                    )
    for col, act in enumerate(acts):
        axes[0, col].set(title=act, yscale="log", ylim=RMS_RANGE)
        axes[0, col].axhline(1, color="k", lw=1, ls="--")
        axes[1, col].set(ylim=(0, 1), xlabel="training step + 1", xscale="log")
    axes[0, 0].set_ylabel("RMS singular value")
    axes[1, 0].set_ylabel(f"share in [{low}, {high}]")
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    labels = ["no BN", "BN"]
    if controls:
        handles += [
            Line2D([], [], color="0.3", lw=1.5, marker=style[-1], ls=style[:-1])
            for _, style, _ in runs
        ]
        labels += ["the runs above", *controls]
    handles += [Line2D([], [], color="k", marker="x", ls="none", ms=9, mew=2)]
    labels += ["a seed diverged there (training stopped)"]
    legend_below(fig, handles, labels, ncol=3 if controls else None)
    return fig


def growth_factors(df: pd.DataFrame) -> pd.DataFrame:
    """The squared gradient norm's growth per layer going backwards, fitted per network.

    A least-squares line through ``log grad_sq`` against the layer; the first layer
    (whose input is the image, not a hidden layer) and the last hidden layer (next to
    the classifier, where the backward recursion starts) are left out. The factor is
    ``exp(-slope)``, above 1 when gradients grow toward the input.

    Args:
        df: :func:`bnlib.experiments.initialization.gradient_explosion` output.

    Returns:
        One row per (architecture, norm, depth, seed): ``factor`` and ``first_over_last``
        (the first layer's squared gradient norm over the last one's).
    """
    rows = []
    for key, part in df.groupby(["architecture", "norm", "depth", "seed"]):
        g = part.sort_values("layer")["grad_sq"].to_numpy()
        log_g = np.log(g)
        inner = np.arange(len(g))[1:-1]
        slope = np.polyfit(inner, log_g[1:-1], 1)[0]
        rows.append(
            {
                **dict(zip(["architecture", "norm", "depth", "seed"], key)),
                "factor": float(np.exp(-slope)),
                "first_over_last": float(g[0] / g[-1]),
            }
        )
    return pd.DataFrame(rows)


def gradient_explosion(df: pd.DataFrame, seed: int = 0) -> Figure:
    """Left: the squared gradient norm of each layer of the deepest networks, with Yang
    et al.'s rate for BN drawn from the last layer. Right: the fitted growth per layer
    against depth, for every network, with Yang et al.'s value.

    Args:
        df: :func:`bnlib.experiments.initialization.gradient_explosion` output.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    deepest = df["depth"].max()
    styles = {"mlp": "-", "residual": "--"}
    one = df[(df["depth"] == deepest) & (df["seed"] == seed)]
    for (arch, norm), part in one.groupby(["architecture", "norm"]):
        part = part.sort_values("layer")
        axes[0].plot(
            part["layer"], part["grad_sq"], styles[arch], color=PALETTE[NORM_LABELS[norm]], lw=2
        )
    bn = one[(one["architecture"] == "mlp") & (one["norm"] != "none")].sort_values("layer")
    if len(bn):
        layers = bn["layer"].to_numpy()
        anchor = bn["grad_sq"].iloc[-2]
        axes[0].plot(layers[:-1], anchor * YANG_FACTOR ** (layers[-2] - layers[:-1]), "k:", lw=2.2)
    axes[0].set(
        yscale="log",
        xlabel="layer (input side first)",
        ylabel="squared gradient norm",
        title=f"{deepest} layers, seed {seed}",
    )
    factors = growth_factors(df)
    for (arch, norm), part in factors.groupby(["architecture", "norm"]):
        wide = part.pivot_table(index="depth", columns="seed", values="factor")
        _band(axes[1], wide.index, wide, PALETTE[NORM_LABELS[norm]], styles[arch])
    axes[1].axhline(YANG_FACTOR, color="k", ls=":", lw=2.2)
    axes[1].set(xlabel="depth (layers)", ylabel="growth per layer", title="fit")
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=styles[a], lw=2) for a in ("mlp", "residual")]
    handles += [Line2D([], [], color="k", ls=":", lw=2.2)]
    labels = ["no BN", "BN", "plain MLP", "residual MLP", "Yang et al.: pi/(pi-1) per layer"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def depth_trainability(df: pd.DataFrame) -> Figure:
    """Test accuracy after a short training against depth, per learning rate, without
    and with BN: lines and bands over the seeds that did not diverge (a line stops
    where every seed diverged), crosses where every seed diverged.

    Args:
        df: :func:`bnlib.experiments.initialization.depth_trainability` output.
    """
    lrs = sorted(df["lr"].unique())
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (norm, lr), part in df.groupby(["norm", "lr"]):
        trained = part[~part["diverged"]]
        wide = trained.pivot_table(index="depth", columns="seed", values="test_accuracy")
        wide = wide.reindex(sorted(part["depth"].unique()))
        style = styles[lrs.index(lr) % len(styles)]
        _band(ax, wide.index, wide, PALETTE[NORM_LABELS[norm]], style)
        # markers too: a depth between two diverged ones has no line to sit on
        ax.plot(wide.index, wide.mean(axis=1), "o", color=PALETTE[NORM_LABELS[norm]], ms=4)
        gone = part.groupby("depth")["diverged"].all()
        gone = gone[gone].index
        if len(gone):  # one row of crosses per learning rate, the smallest lowest
            height = 0.03 + 0.035 * lrs.index(lr)
            ax.plot(gone, [height] * len(gone), "x", color=PALETTE[NORM_LABELS[norm]], ms=8)
    depths = sorted(df["depth"].unique())
    ax.set(xscale="log", ylim=(0, 1), xlabel="depth (hidden layers)", ylabel="test accuracy")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=styles[i % 4], lw=2) for i in range(len(lrs))]
    handles += [Line2D([], [], color="k", marker="x", ls="none")]
    labels = ["no BN", "BN", *(f"lr {lr:.3g}" for lr in lrs), "every seed diverged"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def init_schemes(df: pd.DataFrame, seed: int = 0) -> Figure:
    """The activations' root mean square against depth for each initialization, without
    BN (left) and with BN (right), same axes.

    Args:
        df: :func:`bnlib.experiments.initialization.init_schemes` output.
    """
    d = df[df["seed"] == seed]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, norm in zip(axes, ("none", "torch")):
        for scheme, part in d[d["norm"] == norm].groupby("scheme", sort=False):
            ax.plot(part["layer"], part["rms"], color=SCHEME_COLORS.get(scheme, "k"), lw=2)
        ax.set(yscale="log", xlabel="hidden layer", title=NORM_LABELS[norm])
    axes[0].set_ylabel("RMS activation")
    schemes = [s for s in SCHEME_COLORS if s in set(d["scheme"])]
    handles = [Line2D([], [], color=SCHEME_COLORS[s], lw=2) for s in schemes]
    legend_below(fig, handles, schemes, ncol=5)
    return fig


def residual_variance(df: pd.DataFrame, seed: int = 0) -> Figure:
    """Left: the residual stream's variance against the number of blocks (log scale),
    with 2^b. Right: each branch's variance relative to the stream it joins, with 1/b.

    Args:
        df: :func:`bnlib.experiments.initialization.residual_variance` output.
    """
    d = df[df["seed"] == seed]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for norm, part in d.groupby("norm"):
        color = PALETTE[NORM_LABELS[norm]]
        axes[0].plot(part["block"], part["stream"], color=color, lw=2)
        later = part[part["block"] >= 1]
        previous = part.set_index("block")["stream"].reindex(later["block"] - 1).to_numpy()
        axes[1].plot(later["block"], later["branch"].to_numpy() / previous, color=color, lw=2)
    blocks = np.arange(0, d["block"].max() + 1)
    start = d.loc[(d["block"] == 0) & (d["norm"] == "none"), "stream"]
    if len(start):
        axes[0].plot(blocks, start.iloc[0] * 2.0**blocks, "k:", lw=1.8)
    axes[0].set(yscale="log", xlabel="block b", ylabel="variance of the stream h_b")
    b = blocks[1:]
    axes[1].plot(b, 1.0 / b, "k--", lw=1.5)
    axes[1].set(xscale="log", yscale="log", xlabel="block b", ylabel="branch / stream variance")
    handles = [Line2D([], [], color=PALETTE[n], lw=2) for n in ("no BN", "BN")]
    handles += [Line2D([], [], color="k", ls=":", lw=1.8), Line2D([], [], color="k", ls="--")]
    legend_below(fig, handles, ["no BN", "BN", "doubling per block", "1 / b"], ncol=4)
    return fig


def skipinit_sweep(df: pd.DataFrame) -> Figure:
    """Test accuracy against the learning rate for the residual MLP without BN, with BN,
    with SkipInit and with Fixup, those of them ``df`` holds (mean over the seeds that did
    not diverge, range shaded; x: every seed diverged, at one height per network).

    Args:
        df: :func:`bnlib.experiments.initialization.skipinit_sweep` output, or it and
            :func:`~bnlib.experiments.initialization.fixup_sweep`'s concatenated.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for row, variant in enumerate(VARIANT_LABELS):
        part = df[df["variant"] == variant]
        if part.empty:
            continue
        color = PALETTE[VARIANT_LABELS[variant]]
        wide = part.pivot_table(index="lr", columns="seed", values="test_accuracy", dropna=False)
        trained = wide.dropna(how="all")
        _band(ax, trained.index, trained, color)
        gone = part.groupby("lr")["diverged"].all()
        gone = gone[gone].index
        # one height per network, so that crosses at the same rate do not hide each other
        ax.plot(gone, [0.02 + 0.03 * row] * len(gone), "x", color=color, ms=7, mew=2)
    ax.axhline(0.1, color="0.5", lw=1, ls=":")
    ax.set(xscale="log", ylim=(0, 1), xlabel="learning rate", ylabel="test accuracy")
    shown = [v for v in VARIANT_LABELS if v in set(df["variant"])]
    handles = [Line2D([], [], color=PALETTE[VARIANT_LABELS[v]], lw=2) for v in shown]
    handles += [Line2D([], [], color="k", marker="x", ls="none", mew=2)]
    labels = [VARIANT_LABELS[v] for v in shown]
    legend_below(fig, handles, [*labels, "every seed diverged"], ncol=len(shown) + 1)
    return fig


def _plain(value: float) -> str:
    """A singular value for a title: 0 when it is zero up to float round-off."""
    return "0" if abs(value) < 1e-6 else f"{value:.2g}"


def fresh_network(df: pd.DataFrame, title: str = "") -> Figure:
    """One fresh network (the explorer's): its activations' size against depth, and
    its Jacobian's singular values; the title gives the share of test images given the
    most frequent class.

    Args:
        df: :func:`bnlib.experiments.initialization.fresh_network` output.
        title: what the network is (shown before the share).
    """
    rms = df[df["quantity"] == "rms"]
    values = df.loc[df["quantity"] == "singular value", "value"].to_numpy()
    majority = float(df.loc[df["quantity"] == "majority", "value"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    axes[0].plot(rms["layer"], rms["value"], color="k", lw=2)
    axes[0].set(yscale="log", xlabel="layer", ylabel="RMS activation", title="activations")
    floor = 1e-4
    logged = np.log10(np.clip(values, floor, None))
    low = min(-4.0, math.floor(logged.min()))
    high = max(1.0, math.ceil(logged.max()))
    axes[1].hist(logged, np.linspace(low, high, 41), color="0.35")
    axes[1].axvline(0, color="k", ls="--", lw=1.2)
    axes[1].set(
        xlabel="log10 singular value (zeros at -4)",
        ylabel="count",
        title=f"Jacobian: largest {values.max():.3g}, median {_plain(np.median(values))}",
    )
    fig.suptitle(f"{title}{'; ' if title else ''}majority class: {majority:.0%} of test images")
    return fig
