"""Explorers of the chapter "What else changes BN's effect"."""

from __future__ import annotations

from bnlib.widgets.base import Slicer, require_result


def factor_explorer(frame) -> Slicer:
    """Explorer of the chapter "What else changes BN's effect", Part 1: pick a setting of
    the factor study (:func:`bnlib.experiments.factors.factor_study`: one factor changed
    from the baseline) and see its runs at once, re-sliced from the precomputed sweep
    (:func:`bnlib.figures.factors.factor_curves`): accuracy against the learning rate, and
    the training curves at each network's best learning rate."""
    import ipywidgets as w

    from bnlib.figures import factors as figures

    require_result(frame, "factor_explorer", "factor_study", [*figures.FACTORS, "lr"])
    options = []
    for factor, title in figures.FACTORS.items():
        values = figures.factor_values(frame, factor)[factor].unique()
        for value in sorted(values, key=figures.factor_sort_key(factor)):
            options.append(
                (f"{title}: {figures.factor_value_label(factor, value)}", (factor, value))
            )
    baseline = next(v for label, v in options if v == ("activation", "sigmoid"))
    controls = {
        "setting": w.Dropdown(
            options=options,
            value=baseline,
            description="setting",
            style={"description_width": "80px"},
            layout=w.Layout(width="380px"),
        )
    }
    return Slicer(
        "the factor study, one setting at a time",
        controls,
        lambda setting: figures.factor_curves(frame, *setting),
        chapter="what_else",
    )


def small_batch_explorer(frame) -> Slicer:
    """Explorer of the chapter "What else changes BN's effect", Part 2: the small-batch
    sweep (:func:`bnlib.experiments.factors.small_batches`) re-sliced at once: pick the
    base learning rate (or each normalization's best on the validation split) and the
    normalizations shown (:func:`bnlib.figures.factors.small_batches`)."""
    import ipywidgets as w

    from bnlib.figures import factors as figures

    require_result(frame, "small_batch_explorer", "small_batches", ["base_lr", "norm"])
    style = {"description_width": "120px"}
    rates = sorted(float(v) for v in frame["base_lr"].unique())
    controls = {
        "base_lr": w.Dropdown(
            options=[("best on validation", -1.0), *((f"{r:g}", r) for r in rates)],
            value=-1.0,
            description="base learning rate",
            style=style,
        ),
        "norms": w.SelectMultiple(
            options=[
                (label, norm)
                for norm, label in figures.NORM_LABELS.items()
                if norm in set(frame["norm"])
            ],
            value=tuple(n for n in figures.NORM_LABELS if n in set(frame["norm"])),
            description="normalizations",
            style=style,
        ),
    }

    def draw(base_lr, norms):
        part = frame[frame["norm"].isin(norms)]
        if part.empty:
            raise ValueError("choose at least one normalization")
        return figures.small_batches(part, None if base_lr < 0 else base_lr)

    return Slicer("the small-batch sweep", controls, draw, chapter="what_else")
