"""Explorers of the chapter "Why BN tolerates large steps"."""

from __future__ import annotations

from bnlib.widgets.base import Explorer


def landscape_explorer() -> Explorer:
    """Explorer for the chapter "Why BN tolerates large steps".

    Trains the deep ReLU MLP of the chapter "Large learning rates" on Fashion-MNIST with
    the reader's learning rate, weight decay and normalization
    (:func:`bnlib.experiments.landscape.landscape`, ``network="mlp"``), and draws the
    weight norm and effective learning rate over training and the loss along the
    gradient at the start, middle or end of training (a few seconds on a 2-core CPU).
    """
    import ipywidgets as w

    from bnlib.experiments.landscape import landscape
    from bnlib.figures import landscape as figures

    style = {"description_width": "110px"}
    controls = {
        "bn": w.Checkbox(value=True, description="batch normalization"),
        "lr": w.SelectionSlider(
            options=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
            value=0.1,
            description="learning rate",
            style=style,
        ),
        "weight_decay": w.Dropdown(
            options=[0.0, 1e-4, 1e-3, 1e-2], value=0.0, description="weight decay", style=style
        ),
        "steps": w.Dropdown(options=[200, 500, 1000], value=500, description="steps", style=style),
        "at": w.Dropdown(
            options=["start", "middle", "end"], value="middle", description="probe at", style=style
        ),
    }

    def compute(bn, lr, weight_decay, steps, at):
        frame = landscape(
            network="mlp",
            norms=("bn",) if bn else ("none",),
            steps=steps,
            lr=lr,
            weight_decay=weight_decay,
            points=11,
        )
        measured = sorted(frame["step"].unique())
        at_step = {"start": measured[0], "middle": measured[len(measured) // 2]}.get(
            at, measured[-1]
        )
        return figures.explorer_view(frame, lr, at_step)

    return Explorer(
        "training a deep MLP: learning rate, weight decay, BN",
        controls,
        compute,
        chapter="why_large_steps",
    )
