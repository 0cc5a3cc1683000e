"""Explorers of the chapter "Internal covariate shift"."""

from __future__ import annotations

from bnlib.widgets.base import Explorer, learning_rate_slider


def covariate_shift_explorer() -> Explorer:
    """Explorer for "does BN keep a sigmoid's input distribution still?" in the chapter
    "Internal covariate shift".

    Re-runs :func:`bnlib.experiments.covariate_shift.ioffe_figure1` for one network (the
    reader's activation, BN on or off, learning rate) and draws the percentiles of the
    chosen unit's input in the chosen hidden layer, with the test accuracy (about 10 s on
    a 2-core CPU at the defaults).
    """
    import ipywidgets as w

    from bnlib.experiments.covariate_shift import ioffe_figure1
    from bnlib.figures.covariate_shift import percentiles_over_training
    from bnlib.setups import IOFFE_MLP

    style = {"description_width": "110px"}
    controls = {
        "activation": w.Dropdown(
            options=["sigmoid", "tanh", "relu"],
            value="sigmoid",
            description="activation",
            style=style,
        ),
        "bn": w.Checkbox(value=True, description="batch normalization"),
        "layer": w.Dropdown(options=[1, 2, 3], value=3, description="hidden layer", style=style),
        "unit": w.IntSlider(value=0, min=0, max=99, description="unit", style=style),
        "lr": learning_rate_slider(w, style),
        "steps": w.IntSlider(
            value=1000, min=100, max=3000, step=100, description="steps", style=style
        ),
    }

    def compute(activation, bn, layer, unit, lr, steps):
        width = IOFFE_MLP["hidden"][layer - 1] if 1 <= layer <= len(IOFFE_MLP["hidden"]) else 0
        if not 0 <= unit < width:
            raise ValueError(
                f"hidden layer {layer} has units 0 to {width - 1}, not {unit}"
                if width
                else f"the network has hidden layers 1 to {len(IOFFE_MLP['hidden'])}, not {layer}"
            )
        df = ioffe_figure1(
            steps=steps,
            seeds=(0,),
            lr=lr,
            activation=activation,
            units=(unit,),
            norms=("bnlib",) if bn else ("none",),
            layer=layer,
            points=12,
        )
        return percentiles_over_training(df)

    return Explorer(
        "a sigmoid's input over training: activation, BN, layer, unit, learning rate",
        controls,
        compute,
        chapter="covariate_shift",
    )


#: Step sizes the large-steps explorer offers: a 1-2-5 grid from 1e-5 to 1.
