"""Interactive figures that work without a kernel: plotly, rendered in the browser.

A reader of the built HTML book has no Python kernel, so an ipywidgets slider there would
be dead. These figures carry their data (a precomputed sweep) into the page and let the
browser do the interaction: hover shows values, clicking a legend item toggles a series,
a slider moves across the sweep. plotly.js comes from the ``plotly`` Python package and
is served by the book itself (:mod:`bnlib.sphinx_ext`): no CDN, the pages work offline.

Each function takes an experiment's tidy DataFrame (as the matplotlib figures in
:mod:`bnlib.figures` do) and returns a :class:`plotly.graph_objects.Figure`; :func:`show`
displays it (an HTML fragment in the book's build, the normal plotly output in Jupyter).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bnlib.figures.style import PALETTE, SEQUENCE, color

__all__ = [
    "accuracy_sweep",
    "batch_noise_slider",
    "distribution_shift",
    "in_book_build",
    "landscape_slider",
    "percentiles_slider",
    "relative_loss_menu",
    "running_statistics",
    "show",
    "small_batch_sweep",
    "spectrum_slider",
]


def in_book_build() -> bool:
    """True while the book is being built (``make book`` sets ``BNLIB_BOOK_BUILD=1``)."""
    return os.environ.get("BNLIB_BOOK_BUILD") == "1"


def show(fig):
    """Display a plotly figure.

    In the book's build: an HTML fragment that draws with the page's own plotly.js (no
    script from a CDN, no MathJax of plotly's own), marked so that the page's MathJax
    leaves it alone. In a kernel (Jupyter, Binder, Colab): the figure itself, shown by
    plotly's renderer.
    """
    if not in_book_build():
        return fig
    from IPython.display import HTML

    html = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        config={"displaylogo": False, "responsive": True},
    )
    return HTML(f'<div class="bnlib-interactive tex2jax_ignore mathjax_ignore">{html}</div>')


def _layout(fig, title: str, **axes):
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
        legend={"title": {"text": "click to hide or show"}},
        **axes,
    )
    return fig


def running_statistics(df: pd.DataFrame):
    """Distance of the running averages from the population statistics, and eval-mode
    accuracy, over training: one series per momentum and metric.

    Args:
        df: :func:`bnlib.experiments.algorithm.running_statistics` output.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = df[df["step"] > 0]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "running averages vs population statistics",
            "test accuracy, eval mode (running)",
        ),
    )
    for i, (momentum, part) in enumerate(d.groupby("momentum", sort=False)):
        shade = color(momentum, i)
        for metric, dash in (("mean error", "solid"), ("var error", "dash")):
            m = part[part["metric"] == metric]
            fig.add_trace(
                go.Scatter(
                    x=m["step"],
                    y=m["value"],
                    mode="lines+markers",
                    legendgroup=str(momentum),
                    name=f"momentum {momentum}: {metric}",
                    line={"color": shade, "dash": dash},
                    hovertemplate="step %{x}<br>" + metric + " %{y:.4f}<extra></extra>",
                ),
                1,
                1,
            )
        acc = part[part["metric"] == "accuracy: running statistics"]
        fig.add_trace(
            go.Scatter(
                x=acc["step"],
                y=acc["value"],
                mode="lines+markers",
                legendgroup=str(momentum),
                name=f"momentum {momentum}: accuracy",
                line={"color": shade},
                hovertemplate="step %{x}<br>accuracy %{y:.4f}<extra></extra>",
            ),
            1,
            2,
        )
    fig.update_xaxes(type="log", title_text="training step")
    fig.update_yaxes(type="log", title_text="relative distance", row=1, col=1)
    fig.update_yaxes(title_text="test accuracy", row=1, col=2)
    return _layout(fig, "Running statistics during training (hover for values)")


def distribution_shift(df: pd.DataFrame):
    """Test accuracy against the test images' contrast, one series per network.

    Args:
        df: :func:`bnlib.experiments.algorithm.distribution_shift` output.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (network, part) in enumerate(df.groupby("network", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=part["contrast"],
                y=part["accuracy"],
                mode="lines+markers",
                name=network,
                line={"color": color(network, i)},
                hovertemplate="contrast %{x}<br>accuracy %{y:.4f}<extra>" + network + "</extra>",
            )
        )
    fig.update_xaxes(
        title_text="contrast of the test images (1 = as in training)", autorange="reversed"
    )
    fig.update_yaxes(title_text="test accuracy", range=[0, 1])
    return _layout(fig, "Eval-mode BN under a distribution shift")


def _slider(fig, steps: list[dict], prefix: str, pad: int = 50, **placement) -> None:
    """Put one slider under ``fig`` over ``steps`` (plotly slider steps), its current
    value shown after ``prefix``, starting at the first step; ``placement`` (``x``,
    ``len``, in plot fractions) goes to the slider."""
    fig.update_layout(
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": prefix},
                "pad": {"t": pad},
                "steps": steps,
                **placement,
            }
        ]
    )


def _legend_above(fig, *, height: int, top: int, y: float):
    """The legend above the plot, in rows (at the side it would not fit a text column):
    the figure ``height`` and top margin ``top`` in pixels, the legend's bottom at ``y``
    (in plot fractions). Returns ``fig``."""
    fig.update_layout(
        height=height,
        margin={"t": top},
        legend={"orientation": "h", "yanchor": "bottom", "y": y, "x": 0},
    )
    return fig


def _visibility_steps(labels: list[str], owner: list[int]) -> list[dict]:
    """Slider steps that each show only the traces of one view: step ``n`` (labelled
    ``labels[n]``) makes visible the traces whose ``owner`` is ``n``."""
    return [
        {"label": label, "method": "update", "args": [{"visible": [o == n for o in owner]}]}
        for n, label in enumerate(labels)
    ]


def batch_noise_slider(df: pd.DataFrame, bins: int = 60):
    r"""One image's normalized value :math:`\hat x` across random batches, minus its
    value under the population statistics, with a slider over the batch size.

    Args:
        df: :func:`bnlib.experiments.algorithm.batch_statistics_noise` output.
        bins: histogram bins, shared by all batch sizes so the widths can be compared.
    """
    import plotly.graph_objects as go

    deviation = df["x_hat"] - df["x_hat_population"]
    d = df.assign(deviation=deviation)
    sizes = sorted(d["batch_size"].unique())
    edges = np.linspace(
        *np.quantile(d.loc[d["batch_size"] == sizes[0], "deviation"], [0.005, 0.995]), bins + 1
    )
    fig = go.Figure()
    for i, size in enumerate(sizes):
        values = d.loc[d["batch_size"] == size, "deviation"].to_numpy()
        counts, _ = np.histogram(values, edges)
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts / counts.sum(),
                visible=i == 0,
                name=f"batch size {size}",
                marker={"color": SEQUENCE[0]},
                hovertemplate="deviation %{x:.3f}<br>fraction %{y:.3f}<extra></extra>",
            )
        )
    steps = []
    for i, size in enumerate(sizes):
        spread = d.loc[d["batch_size"] == size, "deviation"].std()
        steps.append(
            {
                "label": str(size),
                "method": "update",
                "args": [
                    {"visible": [j == i for j in range(len(sizes))]},
                    {"title": f"batch size {size}: spread of x_hat across batches {spread:.3f}"},
                ],
            }
        )
    first = d.loc[d["batch_size"] == sizes[0], "deviation"].std()
    _slider(fig, steps, "batch size: ", pad=40)
    fig.update_layout(bargap=0.02)
    fig.update_xaxes(
        title_text="x_hat in a random batch minus x_hat with the population statistics",
        range=[edges[0], edges[-1]],
    )
    fig.update_yaxes(title_text="fraction of batches")
    fig = _layout(fig, f"batch size {sizes[0]}: spread of x_hat across batches {first:.3f}")
    fig.update_layout(showlegend=False)
    return fig


def percentiles_slider(df: pd.DataFrame):
    """The 15th, 50th and 85th percentiles of a sigmoid's input over training, with and
    without BN, with a slider over the units measured (first seed).

    Args:
        df: :func:`bnlib.experiments.covariate_shift.ioffe_figure1` output.
    """
    import plotly.graph_objects as go

    seed = df["seed"].min()
    d = df[(df["seed"] == seed) & df["metric"].isin(["p15", "p50", "p85"])]
    channels = sorted(int(c) for c in d["channel"].dropna().unique())
    norms = list(dict.fromkeys(d["norm"]))
    fig = go.Figure()
    for i, channel in enumerate(channels):
        for j, norm in enumerate(norms):
            # the static figure's line styles: p85 dashed, p50 solid, p15 dotted
            for metric, dash in (("p85", "dash"), ("p50", "solid"), ("p15", "dot")):
                line = d[(d["channel"] == channel) & (d["norm"] == norm) & (d["metric"] == metric)]
                fig.add_trace(
                    go.Scatter(
                        x=line["step"],
                        y=line["value"],
                        mode="lines",
                        visible=i == 0,
                        name=f"{norm}: {metric}",
                        legendgroup=norm,
                        line={"color": color(norm, j), "dash": dash},
                        hovertemplate="step %{x}<br>"
                        + metric
                        + " %{y:.3f}<extra>"
                        + norm
                        + "</extra>",
                    )
                )
    per = len(norms) * 3
    steps = [
        {
            "label": str(channel),
            "method": "update",
            "args": [
                {"visible": [k // per == i for k in range(len(fig.data))]},
                {"title": f"input to sigmoid {channel} of the layer: 15th, 50th, 85th percentiles"},
            ],
        }
        for i, channel in enumerate(channels)
    ]
    _slider(fig, steps, "unit: ", pad=40)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="input to the sigmoid")
    return _layout(
        fig, f"input to sigmoid {channels[0]} of the layer: 15th, 50th, 85th percentiles"
    )


def relative_loss_menu(df: pd.DataFrame, seed: int = 0):
    """Relative loss of one gradient step against its size, with a slider over the
    networks (initialization and depth); one line per normalization and mini-batch (none
    for a mini-batch whose loss before the step is not finite).

    Args:
        df: :func:`bnlib.experiments.large_steps.relative_loss` output.
        seed: which seed's networks.
    """
    import plotly.graph_objects as go

    from bnlib.figures.large_steps import BATCH_STYLES, CEILING, INIT_LABELS, NORM_LABELS
    from bnlib.step import DIVERGENCE_RATIO

    d = df[df["seed"] == seed]
    networks = [key for key, _ in d.groupby(["init", "depth"])]
    dashes = {"-": "solid", "--": "dash", ":": "dot"}
    fig = go.Figure()
    owner = []
    for n, (init, depth) in enumerate(networks):
        part = d[(d["init"] == init) & (d["depth"] == depth)]
        for (norm, batch), line in part.groupby(["norm", "batch"]):
            if not np.isfinite(line["loss_before"]).any():
                continue  # no loss before the step: nothing to draw against the step size
            label = NORM_LABELS[norm]
            y = line["relative_loss"].clip(upper=CEILING).fillna(CEILING)
            fig.add_trace(
                go.Scatter(
                    x=line["step_size"],
                    y=y,
                    mode="lines+markers",
                    visible=n == 0,
                    name=f"{label}, mini-batch {batch}",
                    line={"color": PALETTE[label], "dash": dashes[BATCH_STYLES.get(batch, "-")]},
                    marker={"size": 5},
                    hovertemplate=f"{label}, mini-batch {batch}<br>step size %{{x:.2g}}"
                    "<br>relative loss %{y:.3g}<extra></extra>",
                )
            )
            owner.append(n)
    fig.add_hline(y=DIVERGENCE_RATIO, line={"color": "black", "dash": "dashdot", "width": 1})

    def title(init, depth):
        return f"ResNet-{depth}, {INIT_LABELS[init]} initialization"

    steps = [
        {
            "label": f"{INIT_LABELS[init].split(':')[0]}, {depth} layers",
            "method": "update",
            "args": [{"visible": [o == n for o in owner]}, {"title": title(init, depth)}],
        }
        for n, (init, depth) in enumerate(networks)
    ]
    _slider(fig, steps, "network: ")
    fig.update_xaxes(type="log", title_text="step size")
    fig.update_yaxes(type="log", title_text="loss after / loss before", range=[-1.5, 12.5])
    fig = _layout(fig, title(*networks[0]))
    fig.update_layout(height=480)
    return fig


def accuracy_sweep(df: pd.DataFrame):
    """Final test and training accuracy against the learning rate, with and without BN,
    with a slider over the seeds (and their mean); diverged runs are marked at the bottom
    with the step at which they diverged.

    Args:
        df: :func:`bnlib.experiments.learning_rate.lr_sweep` output.
    """
    import plotly.graph_objects as go

    from bnlib.figures.large_steps import NORM_LABELS

    final = df[df["step"] == df["step"].max()]
    seeds = sorted(final["seed"].unique())
    views = [("mean over seeds", final), *((f"seed {s}", final[final["seed"] == s]) for s in seeds)]
    fig = go.Figure()
    owner = []
    for n, (_, part) in enumerate(views):
        for norm, runs in part.groupby("norm"):
            label = NORM_LABELS[norm]
            ok = runs[~runs["diverged"]].groupby("lr")[["test_accuracy", "train_accuracy"]].mean()
            for column, dash, split in (
                ("test_accuracy", "solid", "test"),
                ("train_accuracy", "dash", "training"),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=ok.index,
                        y=ok[column],
                        mode="lines+markers",
                        visible=n == 0,
                        name=f"{label}, {split}",
                        legendgroup=f"{label}, {split}",
                        line={"color": PALETTE[label], "dash": dash},
                        hovertemplate=f"{label}, {split}<br>learning rate %{{x:.2g}}"
                        "<br>accuracy %{y:.4f}<extra></extra>",
                    )
                )
                owner.append(n)
            lost = runs[runs["diverged"]].groupby("lr")["diverged_at"].min()
            fig.add_trace(
                go.Scatter(
                    x=lost.index,
                    y=[0.03] * len(lost),
                    mode="markers",
                    visible=n == 0,
                    name=f"{label}, diverged",
                    marker={"color": PALETTE[label], "symbol": "x", "size": 10},
                    customdata=lost.to_numpy(),
                    hovertemplate=f"{label} diverged<br>learning rate %{{x:.2g}}"
                    "<br>at step %{customdata}<extra></extra>",
                )
            )
            owner.append(n)
    # inset from both ends: the end labels, centred on their ticks, would otherwise run
    # past a narrow page's edge
    _slider(
        fig, _visibility_steps([label for label, _ in views], owner), "runs: ", x=0.06, len=0.88
    )
    low, high = np.log10(df["lr"].min()), np.log10(df["lr"].max())
    fig.update_xaxes(
        type="log",
        title_text="learning rate (before the drop)",
        exponentformat="power",
        range=[low - 0.15, high + 0.15],  # room for the markers at both ends
    )
    fig.update_yaxes(title_text="final accuracy", range=[0, 1])
    fig = _layout(fig, "final accuracy against the learning rate")
    fig = _legend_above(fig, height=600, top=180, y=1.02)
    # three entries per row (one row would run past a narrow page), under their title
    fig.update_layout(
        legend={"entrywidth": 0.33, "entrywidthmode": "fraction", "title": {"side": "top"}},
        title={"y": 0.99, "yanchor": "top"},  # the figure's title above the legend
    )
    return fig


def spectrum_slider(networks: pd.DataFrame, products: pd.DataFrame | None = None):
    """Histograms of fresh networks' Jacobian singular values, linear and ReLU networks
    side by side, without and with BN, with a slider over the number of layers the
    Jacobian spans (and the Gaussian product of as many matrices, when given).

    Values are binned on a log scale, 8 bins per decade, up to the decade that holds the
    largest value (at least 100); values below 1e-4 (ReLU's inactive units give exact
    zeros) are counted in the leftmost bin.

    Args:
        networks: :func:`bnlib.experiments.initialization.network_spectra` output.
        products: :func:`bnlib.experiments.initialization.gaussian_products` output.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from bnlib.figures.large_steps import NORM_LABELS

    largest = float(networks["value"].max())
    if products is not None:
        largest = max(largest, float(products["value"].max()))
    top = max(2.0, float(np.ceil(np.log10(largest))))
    floor = -4.0
    edges = np.linspace(floor, top, int(8 * (top - floor)) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    acts = [a for a in ("linear", "relu") if a in set(networks["activation"])]
    depths = sorted(networks["depth"].unique())
    fig = make_subplots(
        rows=1, cols=len(acts), shared_yaxes=True, subplot_titles=[f"{a} network" for a in acts]
    )
    owner = []

    def add(values, name, color, col, n, dash="solid"):
        logged = np.log10(np.clip(np.asarray(values, dtype=float), 10**floor, None))
        counts, _ = np.histogram(np.clip(logged, edges[0], edges[-1]), edges)
        fig.add_trace(
            go.Scatter(
                x=centers,
                y=counts / max(counts.sum(), 1),
                mode="lines",
                line={"shape": "hvh", "color": color, "dash": dash, "width": 2},
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                visible=n == 0,
                hovertemplate=f"{name}<br>10^%{{x:.2f}}<br>share %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        owner.append(n)

    for n, depth in enumerate(depths):
        for col, act in enumerate(acts, start=1):
            for norm in ("none", "torch"):
                part = networks[
                    (networks["depth"] == depth)
                    & (networks["activation"] == act)
                    & (networks["norm"] == norm)
                ]
                if len(part):
                    label = NORM_LABELS[norm]
                    add(part["value"], label, PALETTE[label], col, n)
            if products is not None and depth in set(products["depth"]):
                values = products.loc[products["depth"] == depth, "value"]
                add(values, "Gaussian product", "#555555", col, n, dash="dot")
    _slider(fig, _visibility_steps([str(d) for d in depths], owner), "layers spanned: ")
    fig.update_xaxes(title_text="log10 singular value", range=[edges[0], edges[-1]])
    fig.update_yaxes(title_text="share of singular values", row=1, col=1)
    fig = _layout(fig, "singular values of the Jacobian across L layers")
    return _legend_above(fig, height=500, top=110, y=1.08)


def landscape_slider(df: pd.DataFrame):
    """The loss and the gradient along the gradient direction, at one training step at a
    time (a slider over the measured steps), with and without BN: Santurkar et al.'s
    measurement before it is summarized.

    Left: the loss after moving by each step size, over the loss before; right: the
    change of the gradient over the gradient's norm. Both against the step size as a
    multiple of the training learning rate.

    Args:
        df: :func:`bnlib.experiments.landscape.landscape` output (one network).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from bnlib.figures.landscape import NORM_LABELS

    steps = sorted(df["step"].unique())
    norms = list(dict.fromkeys(df["norm"]))
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["loss after / loss before", "gradient change / gradient norm"],
    )
    owner = []
    for n, step in enumerate(steps):
        for norm in norms:
            part = df[(df["step"] == step) & (df["norm"] == norm)].sort_values("factor")
            label = NORM_LABELS.get(norm, norm)
            ratios = (part["loss"] / part["loss_start"], part["grad_change"] / part["grad_norm"])
            for col, y in enumerate(ratios, start=1):
                fig.add_trace(
                    go.Scatter(
                        x=part["factor"],
                        y=y,
                        mode="lines+markers",
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                        visible=n == 0,
                        line={"color": color(label), "width": 2},
                        hovertemplate=f"{label}<br>step size %{{x:.3g}} x lr<br>"
                        "%{y:.3g}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
                owner.append(n)
    _slider(fig, _visibility_steps([str(s) for s in steps], owner), "training step: ")
    fig.update_xaxes(type="log", title_text="step size / learning rate")
    fig.update_yaxes(type="log")
    fig = _layout(fig, f"{df['network'].iloc[0]}: along the gradient at one training step")
    return _legend_above(fig, height=480, top=110, y=1.08)


def small_batch_sweep(df: pd.DataFrame):
    """Test error against the batch size for BN, LayerNorm, GroupNorm and no
    normalization, with a slider over the base learning rate: each normalization's best
    on the validation split, or one base learning rate of the sweep for all. Seed means;
    hover shows the learning rate each point was trained at.

    Args:
        df: :func:`bnlib.experiments.factors.small_batches` output.
    """
    import plotly.graph_objects as go

    from bnlib.figures.factors import NORM_LABELS, best_learning_rates

    best = best_learning_rates(df, ["batch_size"])
    mean = df.groupby(["norm", "batch_size", "base_lr", "lr"])["test_accuracy"].mean().reset_index()
    views = [("best", best)]
    views += [(f"{b:g}", mean[mean["base_lr"] == b]) for b in sorted(df["base_lr"].unique())]
    fig = go.Figure()
    owner = []
    for n, (_, part) in enumerate(views):
        for norm in [k for k in NORM_LABELS if k in set(part["norm"])]:
            label = NORM_LABELS[norm]
            line = part[part["norm"] == norm].sort_values("batch_size")
            fig.add_trace(
                go.Scatter(
                    x=line["batch_size"],
                    y=100 * (1 - line["test_accuracy"]),
                    customdata=line["lr"],
                    mode="lines+markers",
                    visible=n == 0,
                    name=label,
                    line={"color": PALETTE[label]},
                    hovertemplate=f"{label}<br>batch %{{x}}<br>test error %{{y:.1f}}%"
                    "<br>learning rate %{customdata:.3g}<extra></extra>",
                )
            )
            owner.append(n)
    _slider(fig, _visibility_steps([label for label, _ in views], owner), "base learning rate: ")
    sizes = sorted(df["batch_size"].unique())
    fig.update_xaxes(
        type="log", title_text="batch size", tickvals=sizes, ticktext=[str(b) for b in sizes]
    )
    fig.update_yaxes(title_text="test error (%)", rangemode="tozero")
    fig = _layout(fig, "small batches: test error against the batch size")
    return _legend_above(fig, height=520, top=110, y=1.02)
