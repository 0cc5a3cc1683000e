"""Explorers of the chapter "Random initialization"."""

from __future__ import annotations

from bnlib.widgets.base import Slicer


def initialization_explorer() -> Slicer:
    """Explorer of the chapter "Random initialization": one fresh network, re-measured
    at every change of its depth, width, initialization, gain, BN, residual blocks or
    activation (:func:`bnlib.experiments.initialization.fresh_network`, no training: a
    second or two on a CPU). The figure
    (:func:`bnlib.figures.initialization.fresh_network`) shows the activations' size
    against depth, the singular values of the Jacobian across the hidden layers, and the
    share of test images given the most frequent class."""
    import ipywidgets as w

    from bnlib.experiments.initialization import fresh_network
    from bnlib.figures import initialization as figures

    style = {"description_width": "110px"}
    controls = {
        "depth": w.SelectionSlider(
            options=[4, 6, 10, 20, 30, 50, 100], value=20, description="depth", style=style
        ),
        "width": w.Dropdown(options=[64, 128, 256], value=128, description="width", style=style),
        "init": w.Dropdown(
            options=[
                ("PyTorch default", "default"),
                ("Xavier/Glorot", "xavier"),
                ("He", "he"),
                ("orthogonal", "orthogonal"),
            ],
            value="he",
            description="initialization",
            style=style,
        ),
        "gain_factor": w.SelectionSlider(
            options=[0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0],
            value=1.0,
            description="gain x",
            style=style,
        ),
        "bn": w.Checkbox(value=False, description="batch normalization"),
        "residual": w.Checkbox(value=False, description="residual blocks"),
        "activation": w.Dropdown(
            options=["relu", "tanh", "sigmoid", "linear"],
            value="relu",
            description="activation",
            style=style,
        ),
    }

    def draw(depth, width, init, gain_factor, bn, residual, activation):
        frame = fresh_network(
            depth=depth,
            width=width,
            init=init,
            gain_factor=gain_factor,
            norm="torch" if bn else "none",
            residual=residual,
            activation=activation,
        )
        kind = f"{depth // 2} residual blocks" if residual else f"{depth} layers"
        title = f"{kind}, {activation}, {'BN' if bn else 'no BN'}"
        return figures.fresh_network(frame, title)

    return Slicer(
        "one fresh network: depth, width, initialization, gain, BN, residual, activation",
        controls,
        draw,
        chapter="random_initialization",
        what="In a running kernel every change re-measures a fresh network at once (no training)",
    )
