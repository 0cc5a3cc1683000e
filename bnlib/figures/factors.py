"""Figures and tables of the chapter "What else changes BN's effect": each takes an
experiment's DataFrame (:mod:`bnlib.experiments.factors`) and draws or summarizes it;
none trains."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter

from bnlib.figures.style import PALETTE, legend_below

__all__ = [
    "FACTORS",
    "NORM_LABELS",
    "batch_renorm",
    "best_learning_rates",
    "bn_only",
    "class_mismatch",
    "dropout",
    "factor_curves",
    "factor_effects",
    "factor_sort_key",
    "factor_table",
    "factor_value_label",
    "factor_values",
    "final_gain_per_seed",
    "ghost_batch_norm",
    "inference_pitfalls",
    "layer_diagnostics",
    "small_batches",
    "steps_to",
]

#: How the experiments' normalization names appear in figures.
NORM_LABELS = {
    "none": "no BN",
    "bn": "BN",
    "layer": "LayerNorm",
    "group": "GroupNorm",
    "renorm": "batch renorm",
}
#: The factors of the factor study: their column and their title.
FACTORS = {"activation": "activation", "optimizer": "optimizer", "batch_size": "batch size"}
#: The factor study's baseline: the NTU project's defaults.
BASELINE = {"activation": "sigmoid", "optimizer": "sgd", "batch_size": 64}
_ACTIVATION_NAMES = {"leaky_relu": "leaky ReLU", "relu": "ReLU", "softplus": "softplus"}


#: Columns that tell one run's setting from another's (the learning rate and seed aside).
_SETTINGS = ("activation", "optimizer", "batch_size", "norm", "mode", "dropout", "ghost_size")


def _final(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its last measured step (runs of different batch sizes may
    have different lengths)."""
    keys = [c for c in _SETTINGS if c in df.columns]
    last = df.groupby(keys)["step"].transform("max") if keys else df["step"].max()
    return df[df["step"] == last]


def factor_values(df: pd.DataFrame, factor: str) -> pd.DataFrame:
    """The factor study's runs in which only ``factor`` varies (the others at the baseline)."""
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}: choose one of {', '.join(FACTORS)}")
    keep = np.ones(len(df), dtype=bool)
    for other, value in BASELINE.items():
        if other != factor:
            keep &= (df[other] == value).to_numpy()
    return df[keep]


def best_learning_rates(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """For each group of ``keys`` (plus ``norm`` where there is one), the learning rate whose final
    validation accuracy, averaged over seeds, is highest (chosen on held-out training
    data, never on the test split).

    Returns:
        One row per group: ``keys, norm, lr``, the seed-mean final ``validation_accuracy``
        and ``test_accuracy``, their spread over seeds ``test_min, test_max``, and
        ``diverged`` (how many of the learning rates' runs diverged).
    """
    final = _final(df)
    group = [*keys, "norm"] if "norm" in df.columns else list(keys)
    per_lr = (
        final.groupby([*group, "lr"])
        .agg(
            validation_accuracy=("validation_accuracy", "mean"),
            test_accuracy=("test_accuracy", "mean"),
            test_min=("test_accuracy", "min"),
            test_max=("test_accuracy", "max"),
        )
        .reset_index()
    )
    best = per_lr.loc[per_lr.groupby(group)["validation_accuracy"].idxmax()]
    lost = final.groupby(group)["diverged"].sum().rename("diverged").reset_index()
    return best.merge(lost, on=group).reset_index(drop=True)


def final_gain_per_seed(df: pd.DataFrame, factors: list[str]) -> pd.Series:
    """BN's final test accuracy minus no BN's, per seed, each network at its own best
    learning rate (:func:`best_learning_rates`), for every value of each of ``factors``
    (the others at the baseline).

    Returns:
        Percentage points, indexed by ``(factor, value, seed)`` (raw values, e.g.
        ``("optimizer", "adam", 0)``).
    """
    parts = []
    for factor in factors:
        part = factor_values(df, factor)
        best = best_learning_rates(part, [factor])
        chosen = _final(part.merge(best[[factor, "norm", "lr"]], on=[factor, "norm", "lr"]))
        wide = chosen.pivot_table(index=[factor, "seed"], columns="norm", values="test_accuracy")
        gain = 100 * (wide["bn"] - wide["none"])
        gain.index = pd.MultiIndex.from_tuples(
            [(factor, value, seed) for value, seed in gain.index],
            names=["factor", "value", "seed"],
        )
        parts.append(gain)
    return pd.concat(parts)


def steps_to(df: pd.DataFrame, target: float, keys: list[str]) -> pd.Series:
    """The first measured step at which the seed-mean test accuracy reaches ``target``,
    per group of ``keys`` (NaN if never); ``df`` holds one learning rate per group."""
    curve = df.groupby([*keys, "step"])["test_accuracy"].mean().reset_index()
    hit = curve[curve["test_accuracy"] >= target]
    first = hit.groupby(keys)["step"].min()
    return first.reindex(curve.groupby(keys).size().index)


def factor_value_label(factor: str, value: object) -> str:
    """How a factor's value reads in a label: ``"relu"`` -> ``"ReLU"``, ``"sgd"`` -> ``"SGD"``."""
    if factor == "activation":
        return _ACTIVATION_NAMES.get(value, value)
    if factor == "optimizer":
        return {"sgd": "SGD", "adam": "Adam"}.get(value, value)
    return str(value)


def factor_table(df: pd.DataFrame, target: float = 0.95) -> pd.DataFrame:
    """The factor study in one table: per factor and value, each network at its best
    learning rate (:func:`best_learning_rates`).

    Returns:
        Columns ``factor, value``, ``lr BN``, ``lr no BN``, ``test acc. BN`` and ``test
        acc. no BN`` (%, seed mean), ``BN - no BN`` (percentage points), and ``steps to
        <target> BN`` / ``no BN`` (first measured step at that test accuracy; NaN: never).
    """
    rows = []
    for factor, title in FACTORS.items():
        part = factor_values(df, factor)
        best = best_learning_rates(part, [factor])
        chosen = part.merge(best[[factor, "norm", "lr"]], on=[factor, "norm", "lr"])
        reach = steps_to(chosen, target, [factor, "norm"])
        for value in best[factor].unique():
            one = best[best[factor] == value].set_index("norm")
            row = {"factor": title, "value": factor_value_label(factor, value)}
            for norm, label in (("bn", "BN"), ("none", "no BN")):
                row[f"lr {label}"] = one.loc[norm, "lr"]
                row[f"test acc. {label}"] = 100 * one.loc[norm, "test_accuracy"]
            row["BN - no BN"] = row["test acc. BN"] - row["test acc. no BN"]
            for norm, label in (("bn", "BN"), ("none", "no BN")):
                row[f"steps to {target:.0%} {label}"] = reach.get((value, norm), np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def factor_effects(df: pd.DataFrame) -> Figure:
    """Test error of the NTU network at its best learning rate, with and without BN, as
    each factor varies (the others at the baseline); ticks span the seeds."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.9), sharey=True, width_ratios=[5, 2, 4])
    for ax, (factor, title) in zip(axes, FACTORS.items()):
        best = best_learning_rates(factor_values(df, factor), [factor])
        values = list(dict.fromkeys(sorted(best[factor].unique(), key=factor_sort_key(factor))))
        x = np.arange(len(values))
        for shift, norm in ((-0.2, "none"), (0.2, "bn")):
            part = best[best["norm"] == norm].set_index(factor).loc[values]
            error = 100 * (1 - part["test_accuracy"].to_numpy())
            label = NORM_LABELS[norm]
            ax.bar(x + shift, error, width=0.4, color=PALETTE[label], label=label)
            low, high = 100 * (1 - part["test_max"]), 100 * (1 - part["test_min"])
            ax.errorbar(
                x + shift, error, yerr=[error - low, high - error], fmt="none", color="black", lw=1
            )
        ax.set_xticks(x, [factor_value_label(factor, v) for v in values], rotation=30, ha="right")
        ax.set_title(title)
    axes[0].set_ylabel("test error (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return fig


def factor_sort_key(factor: str) -> Callable[[object], object]:
    """The order in which a factor's values are listed: batch sizes by size, activations
    and optimizers in the book's order (sigmoid first, as in Ioffe & Szegedy)."""
    if factor == "batch_size":
        return float
    order = ["sigmoid", "tanh", "relu", "leaky_relu", "softplus", "sgd", "adam"]
    return lambda v: order.index(v) if v in order else len(order)


def factor_curves(df: pd.DataFrame, factor: str, value) -> Figure:
    """One setting of the factor study: final test accuracy against the learning rate
    (diverged runs marked at the bottom), and the test accuracy over training at each
    network's best learning rate."""
    part = factor_values(df, factor)
    part = part[part[factor] == value]
    if part.empty:
        raise ValueError(f"the factor study has no run with {factor} = {value!r}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    final = _final(part)
    best = best_learning_rates(part, [factor])
    for norm in ("none", "bn"):
        label = NORM_LABELS[norm]
        runs = final[final["norm"] == norm]
        mean = runs.groupby("lr")["test_accuracy"].mean()
        left.plot(mean.index, mean.to_numpy(), "o-", color=PALETTE[label], label=label)
        lost = runs[runs["diverged"]]["lr"].unique()
        left.plot(lost, [0.02] * len(lost), "x", color=PALETTE[label], ms=9, mew=2)
        lr = best.set_index("norm").loc[norm, "lr"]
        curve = part[(part["norm"] == norm) & (part["lr"] == lr)].groupby("step")["test_accuracy"]
        right.plot(
            curve.mean().index,
            curve.mean().to_numpy(),
            color=PALETTE[label],
            label=label,
        )
    left.set_xscale("log")
    left.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    left.set_ylim(0, 1)
    left.set_xlabel("learning rate (x: diverged)")
    left.set_ylabel("final test accuracy")
    right.set_xlabel("training step")
    right.set_ylabel("test accuracy")
    chosen = part.merge(best[["norm", "lr"]], on=["norm", "lr"])
    right.set_ylim(max(0.5, float(np.nanmin(chosen["test_accuracy"])) - 0.02), 1)
    right.set_title("at each one's best learning rate", fontsize="small")
    handles, labels = left.get_legend_handles_labels()
    legend_below(fig, handles, labels)
    rates = ", ".join(
        f"{NORM_LABELS[n]} {best.set_index('norm').loc[n, 'lr']:g}" for n in ("none", "bn")
    )
    fig.suptitle(
        f"{FACTORS[factor]}: {factor_value_label(factor, value)} (best learning rates: {rates})"
    )
    return fig


def layer_diagnostics(df: pd.DataFrame) -> Figure:
    """The NTU project's diagnostics: each layer's weight percentiles (5-95% and 25-75%
    bands, median) and gradient norm over training, with and without BN (seed 0)."""
    d = df[df["seed"] == df["seed"].min()]
    layers = list(dict.fromkeys(d["layer"]))
    fig, axes = plt.subplots(2, len(layers), figsize=(10, 6), sharex=True)
    for j, layer in enumerate(layers):
        top, bottom = axes[0, j], axes[1, j]
        for norm in ("none", "bn"):
            label = NORM_LABELS[norm]
            part = d[(d["layer"] == layer) & (d["norm"] == norm)].sort_values("step")
            color = PALETTE[label]
            top.fill_between(part["step"], part["w25"], part["w75"], color=color, alpha=0.25)
            for column in ("w5", "w95"):
                top.plot(part["step"], part[column], color=color, lw=1, ls="--")
            top.plot(part["step"], part["w50"], color=color)
            bottom.plot(part["step"], part["gradient_norm"], "o-", ms=3, color=color, label=label)
        top.set_title(layer)
        bottom.set_yscale("log")
        bottom.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        bottom.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.yaxis.set_minor_formatter(NullFormatter())
        bottom.set_xlabel("training step")
    axes[0, 0].set_ylabel("weights: 5, 25, 50,\n75, 95th percentiles")
    axes[1, 0].set_ylabel("gradient norm")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return fig


# The experiment's "population statistics" are the running averages of eval mode (not the
# recomputed ones of the inference-pitfalls figure): the titles say so.
_EVALUATION_TITLES = {
    "population statistics": "eval mode (running averages)",
    "test-set statistics": "train mode (test-set statistics)",
}


def class_mismatch(df: pd.DataFrame) -> Figure:
    """Accuracy on the zeros and on the ones of test sets with fewer and fewer ones,
    evaluated in eval mode (BN with its running averages) and in train mode with the test
    set's own statistics (seed mean; ticks span the seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    ratios = sorted(df["ratio"].unique())
    x = np.arange(len(ratios))
    for ax, evaluation in zip(axes, ["population statistics", "test-set statistics"]):
        for norm, offset in (("none", -0.09), ("bn", 0.03)):
            label = NORM_LABELS[norm]
            for digit, style, shift in ((0, "-o", 0.0), (1, "--s", 0.06)):
                part = df[(df["evaluation"] == evaluation) & (df["norm"] == norm)]
                stats = part[part["digit"] == digit].groupby("ratio")["accuracy"]
                mean = stats.mean().loc[ratios].to_numpy()
                spread = [mean - stats.min().loc[ratios], stats.max().loc[ratios] - mean]
                ax.errorbar(
                    x + offset + shift,
                    mean,
                    yerr=spread,
                    fmt=style,
                    color=PALETTE[label],
                    capsize=2,
                )
        ax.set_xticks(x, [f"1:{r}" for r in ratios])
        ax.set_xlabel("ones : zeros in the test set")
        ax.set_title(_EVALUATION_TITLES[evaluation])
    axes[0].set_ylabel("accuracy")
    handles = [
        Line2D([], [], color=PALETTE["no BN"], lw=6),
        Line2D([], [], color=PALETTE["BN"], lw=6),
        Line2D([], [], color="grey", ls="-", marker="o"),
        Line2D([], [], color="grey", ls="--", marker="s"),
    ]
    legend_below(fig, handles, ["no BN", "BN", "zeros (980)", "ones"], ncol=4)
    return fig


def small_batches(df: pd.DataFrame, base_lr: float | None = None) -> Figure:
    """Test error against the batch size for each normalization: at each one's best base
    learning rate (chosen on the validation split), or at ``base_lr`` for all. Seed
    means; ticks span the seeds."""
    if base_lr is None:
        best = best_learning_rates(df, ["batch_size"])
    else:
        part = df[np.isclose(df["base_lr"], base_lr)]
        if part.empty:
            raise ValueError(f"the sweep has no base learning rate {base_lr}")
        best = best_learning_rates(part, ["batch_size"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for norm in [n for n in NORM_LABELS if n in set(best["norm"])]:
        label = NORM_LABELS[norm]
        part = best[best["norm"] == norm].sort_values("batch_size")
        error = 100 * (1 - part["test_accuracy"])
        ax.errorbar(
            part["batch_size"],
            error,
            yerr=[error - 100 * (1 - part["test_max"]), 100 * (1 - part["test_min"]) - error],
            fmt="o-",
            color=PALETTE[label],
            label=label,
            capsize=2,
        )
    sizes = sorted(best["batch_size"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("test error (%)")
    ax.set_title(
        "each at its best base learning rate"
        if base_lr is None
        else f"base learning rate {base_lr:g}"
    )
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return fig


def batch_renorm(df: pd.DataFrame) -> Figure:
    """Batch renormalization against BN at batch 4: test accuracy over training at each
    network's best learning rate (eval mode), and at the end in eval mode and with the
    statistics of test batches of the training batch size."""
    best = best_learning_rates(df, ["batch_size"])
    final = _final(df)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[3, 2])
    small = df["batch_size"].min()
    rows = list(best.sort_values("batch_size", kind="stable").itertuples())
    for row in rows:
        label = NORM_LABELS[row.norm]
        runs = df[(df["norm"] == row.norm) & (df["batch_size"] == row.batch_size)]
        curve = runs[runs["lr"] == row.lr].groupby("step")["test_accuracy"].mean()
        left.plot(
            curve.index,
            curve.to_numpy(),
            ls="-" if row.batch_size == small else "--",
            color=PALETTE[label],
            label=f"{label}, batch {row.batch_size}",
        )
    left.set_xlabel("training step")
    left.set_ylabel("test accuracy")
    x = np.arange(len(rows))
    for shift, column, hatch in (
        (-0.2, "test_accuracy", None),
        (0.2, "test_accuracy_batch_statistics", "//"),
    ):
        values = [
            100
            * (
                1
                - final[
                    (final["norm"] == r.norm)
                    & (final["batch_size"] == r.batch_size)
                    & (final["lr"] == r.lr)
                ][column].mean()
            )
            for r in rows
        ]
        colors = [PALETTE[NORM_LABELS[r.norm]] for r in rows]
        right.bar(x + shift, values, width=0.4, color=colors, hatch=hatch, edgecolor="white")
    short = {"none": "none", "bn": "BN", "renorm": "renorm"}
    right.set_xticks(x, [f"{short.get(r.norm, r.norm)}\n{r.batch_size}" for r in rows])
    right.set_xlabel("normalization, batch size")
    right.set_ylabel("final test error (%)")
    handles, labels = left.get_legend_handles_labels()
    handles += [Patch(color="grey"), Patch(facecolor="grey", hatch="//", edgecolor="white")]
    labels += ["bars: eval mode", "bars: test batches' own statistics"]
    legend_below(fig, handles, labels, ncol=3)
    return fig


def ghost_batch_norm(df: pd.DataFrame) -> Figure:
    """Ghost BN: final test and training accuracy against the ghost batch size (one
    batch size, the same number of updates); the largest is plain BN."""
    final = _final(df).groupby("ghost_size")[["test_accuracy", "train_accuracy"]]
    mean, low, high = final.mean(), final.min(), final.max()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for column, style, label in (
        ("test_accuracy", "o-", "test"),
        ("train_accuracy", "s--", "training (5,000 examples)"),
    ):
        ax.errorbar(
            mean.index,
            mean[column],
            yerr=[mean[column] - low[column], high[column] - mean[column]],
            fmt=style,
            color=PALETTE["BN"],
            label=label,
            capsize=2,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(mean.index), [str(g) for g in mean.index])
    ax.set_xlabel("examples per ghost batch (the largest: plain BN)")
    ax.set_ylabel("final accuracy")
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return fig


#: The evaluations of :func:`bnlib.experiments.factors.inference_pitfalls`: colour, line,
#: marker and a short label.
PITFALL_STYLES = {
    "running statistics (eval mode)": ("#1b9e77", "-", "o", "eval mode (running averages)"),
    "recomputed population statistics": ("#1b9e77", ":", "^", "recomputed population stats"),
    "example included in the statistics": ("#66a61e", "--", "v", "example included"),
    "test-batch statistics, mixed batches": ("#7570b3", "-", "s", "train mode, mixed batches"),
    "test-batch statistics, one class per batch": ("#d95f02", "-", "D", "train mode, one class"),
    "test-batch statistics, batch of 1": ("#d95f02", "--", "x", "train mode, one image"),
}


def inference_pitfalls(df: pd.DataFrame) -> Figure:
    """Test accuracy of the same BN networks evaluated six ways, against the training
    step at which they were stopped (seed mean)."""
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for evaluation, (color, ls, marker, label) in PITFALL_STYLES.items():
        curve = df[df["evaluation"] == evaluation].groupby("step")["test_accuracy"].mean()
        ax.plot(curve.index, curve.to_numpy(), color=color, ls=ls, marker=marker, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(0, 1)
    ax.set_xlabel("training steps before evaluation")
    ax.set_ylabel("test accuracy")
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels, ncol=2)
    return fig


def dropout(df: pd.DataFrame) -> Figure:
    """BN and dropout: final test and training accuracy per dropout rate, with and
    without BN (dots: seed means; bars span the seeds)."""
    final = _final(df)
    rates = sorted(final["dropout"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    x = np.arange(len(rates))
    for ax, column, title in (
        (axes[0], "test_accuracy", "test"),
        (axes[1], "train_accuracy", "training (the 5,000 trained on)"),
    ):
        for shift, norm in ((-0.1, "none"), (0.1, "bn")):
            label = NORM_LABELS[norm]
            stats = final[final["norm"] == norm].groupby("dropout")[column]
            mean = 100 * stats.mean().loc[rates].to_numpy()
            low, high = 100 * stats.min().loc[rates], 100 * stats.max().loc[rates]
            ax.errorbar(
                x + shift,
                mean,
                yerr=[mean - low, high - mean],
                fmt="o",
                ms=8,
                color=PALETTE[label],
                label=label,
                capsize=3,
            )
        ax.set_xticks(x, [f"{r:g}" for r in rates])
        ax.set_xlabel("dropout rate")
        ax.set_title(title)
        values = 100 * final[column]
        # Up to 100.5, not 100: a training accuracy of 100% would sit on the frame.
        ax.set_ylim(max(0, values.min() - 3), min(100.5, values.max() + 1.5))
    axes[0].set_ylabel("final accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return fig


def bn_only(df: pd.DataFrame) -> Figure:
    """Training only some parameters of a random CNN with BN: final test accuracy at each
    mode's best learning rate, labelled with how many scalars it trains."""
    best = best_learning_rates(df, ["mode", "trainable"]).sort_values("trainable")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    y = np.arange(len(best))
    ax.barh(y, 100 * best["test_accuracy"], color=PALETTE["BN"])
    for i, (_, row) in enumerate(best.iterrows()):
        ax.text(
            100 * row["test_accuracy"] - 1,
            i,
            f"{100 * row['test_accuracy']:.1f}%",
            ha="right",
            va="center",
            color="white",
            fontsize="small",
        )
    names = {
        "all": "all parameters",
        "BN's gamma and beta": "BN's γ and β",
        "gamma, beta and output layer": "γ, β and output layer",
    }
    ax.set_yticks(
        y, [f"{names.get(m, m)}\n({t:,} trained)" for m, t in zip(best["mode"], best["trainable"])]
    )
    ax.set_xlim(0, 100)
    ax.axvline(10, color="grey", ls=":", lw=1)
    ax.set_xlabel("final test accuracy (%); dotted: chance")
    return fig
