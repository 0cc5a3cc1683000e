"""Explorers of the chapter "The BN algorithm"."""

from __future__ import annotations

from bnlib.widgets.base import Explorer, learning_rate_slider


def running_statistics_explorer() -> Explorer:
    """Explorer for "how good are the running averages?" in the chapter "The BN algorithm".

    Re-runs :func:`bnlib.experiments.algorithm.running_statistics` for one momentum with
    the reader's batch size, learning rate, activation and number of steps (a few
    seconds on a 2-core CPU at the defaults, at most about 30 s) and draws
    :func:`bnlib.figures.algorithm.running_statistics`.
    """
    import ipywidgets as w

    from bnlib.experiments.algorithm import running_statistics
    from bnlib.figures import algorithm as figures

    style = {"description_width": "110px"}
    controls = {
        "momentum": w.Dropdown(
            options=[
                ("0.3", 0.3),
                ("0.1 (PyTorch)", 0.1),
                ("0.01", 0.01),
                ("None (cumulative)", None),
            ],
            value=0.1,
            description="momentum",
            style=style,
        ),
        "batch_size": w.Dropdown(
            options=[4, 8, 16, 32, 60, 128], value=60, description="batch size", style=style
        ),
        "lr": learning_rate_slider(w, style),
        "activation": w.Dropdown(
            options=["sigmoid", "tanh", "relu"],
            value="sigmoid",
            description="activation",
            style=style,
        ),
        "steps": w.IntSlider(
            value=300, min=50, max=1000, step=50, description="steps", style=style
        ),
    }

    def compute(momentum, batch_size, lr, activation, steps):
        df = running_statistics(
            steps=steps,
            momenta=(momentum,),
            batch_size=batch_size,
            lr=lr,
            activation=activation,
            points=10,
            population_examples=5000,
        )
        return figures.running_statistics(df)

    return Explorer(
        "running averages: momentum, batch size, learning rate",
        controls,
        compute,
        chapter="bn_algorithm",
    )
