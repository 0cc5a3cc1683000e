"""Explorers of the chapter "Large learning rates"."""

from __future__ import annotations

from bnlib.widgets.base import Explorer, Slicer, require_result


def lr_sweep_slicer(frame) -> Slicer:
    """Re-slices a learning-rate sweep (:func:`bnlib.experiments.learning_rate.lr_sweep`)
    in the chapter "Large learning rates": pick a learning rate of the sweep and a seed
    (or their mean); the figure (:func:`bnlib.figures.learning_rate.one_learning_rate`)
    marks it on the accuracy curves and shows its runs with and without BN over
    training."""
    import ipywidgets as w

    from bnlib.figures import learning_rate as figures

    require_result(frame, "lr_sweep_slicer", "lr_sweep", ["lr", "seed"])
    style = {"description_width": "110px"}
    lrs = sorted(frame["lr"].unique())
    seeds = sorted(frame["seed"].unique())
    controls = {
        "lr": w.SelectionSlider(
            options=[(f"{v:.2g}", float(v)) for v in lrs],
            value=figures.nearest_lr(lrs, 0.1),
            description="learning rate",
            style=style,
        ),
        "seed": w.Dropdown(
            # not None: an ipywidgets dropdown reads the value None as "nothing selected"
            options=[("mean over seeds", -1), *((f"seed {s}", int(s)) for s in seeds)],
            value=-1,
            description="runs",
            style=style,
        ),
    }
    return Slicer(
        "the learning-rate sweep, one learning rate at a time",
        controls,
        lambda lr, seed: figures.one_learning_rate(frame, lr, None if seed == -1 else seed),
        chapter="large_learning_rates",
    )


#: Learning rates an explorer offers: a 1-2-5 grid, so that the default (0.5) is one of
#: them. (A log slider on a 0.25 grid has no 0.5: the browser would snap it to 0.562 and
#: the first Run would not draw the figure shown.)


STEP_SIZES = tuple(round(m * 10.0**e, 12) for e in range(-5, 0) for m in (1, 2, 5)) + (1.0,)


def large_steps_explorer() -> Explorer:
    """Explorer for "one gradient step" in the chapter "Large learning rates".

    For a fresh ResNet of the reader's depth, initialization and normalization it
    measures, without any training, the relative loss of one gradient step against its
    size (:func:`bnlib.experiments.large_steps.relative_loss`, first mini-batch) and the
    size of the activations at every block
    (:func:`bnlib.experiments.large_steps.activation_growth`), and marks the chosen step
    size (a few seconds for ResNet-20, about 15 s for ResNet-110 on a 2-core CPU).
    """
    import ipywidgets as w

    from bnlib.experiments.large_steps import activation_growth, relative_loss
    from bnlib.figures import large_steps as figures
    from bnlib.setups import RESNET_INITS

    style = {"description_width": "110px"}
    controls = {
        "bn": w.Checkbox(value=False, description="batch normalization"),
        "depth": w.Dropdown(options=[20, 56, 110], value=56, description="depth", style=style),
        "init": w.Dropdown(
            options=[(figures.INIT_LABELS[k], k) for k in RESNET_INITS],
            value="he",
            description="initialization",
            style=style,
        ),
        "step_size": w.SelectionSlider(
            options=STEP_SIZES, value=1e-3, description="step size", style=style
        ),
    }

    def compute(bn, depth, init, step_size):
        norms = ("torch",) if bn else ("none",)
        relative = relative_loss(
            depths=(depth,), norms=norms, inits=(init,), batches=(1,), step_count=13
        )
        growth = activation_growth(depth=depth, norms=norms, inits=(init,))
        return figures.one_network(relative, growth, step_size)

    return Explorer(
        "one gradient step at initialization: BN, depth, initialization, step size",
        controls,
        compute,
        chapter="large_learning_rates",
    )
