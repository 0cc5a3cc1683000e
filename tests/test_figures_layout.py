"""Layout of the matplotlib figures: legends off the data and inside the figure, no step 0
on a log step axis. Drawn from real experiment output at a tiny scale."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from bnlib.experiments import algorithm as alg_experiments
from bnlib.experiments import covariate_shift as cs_experiments
from bnlib.experiments import large_steps as ls_experiments
from bnlib.figures import algorithm as alg_figures
from bnlib.figures import covariate_shift as cs_figures
from bnlib.figures import large_steps as ls_figures
from bnlib.figures.style import set_style


@pytest.fixture(autouse=True)
def _style_and_close():
    set_style()
    yield
    plt.close("all")


def _assert_legends_below_the_data(fig):
    """No legend inside an axes; every figure legend clear of the panels and whole."""
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert fig.legends
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    page = fig.bbox
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, "legend clipped"
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over a panel"


def test_sigmoid_saturation_legend_is_below_the_panel():
    _assert_legends_below_the_data(
        cs_figures.sigmoid_saturation(cs_experiments.sigmoid_saturation())
    )


def test_batch_statistics_noise_legend_is_below_the_panel():
    df = alg_experiments.batch_statistics_noise(batch_sizes=(2, 16), draws=10, units=5)
    _assert_legends_below_the_data(alg_figures.batch_statistics_noise(df))


def test_percentiles_over_training_legend_is_below_the_panels():
    df = cs_experiments.ioffe_figure1(
        steps=10, seeds=(0,), points=3, units=(0,), probe_examples=100, norms=("bnlib",)
    )
    _assert_legends_below_the_data(cs_figures.percentiles_over_training(df))


def test_noisy_bn_draws_no_step_0_on_a_log_axis():
    df = cs_experiments.noisy_bn(steps=10, seeds=(0,), lrs=(0.1,), points=3, units=(0,))
    assert (df["step"] == 0).any()  # the data has it; the figure must leave it out
    fig = cs_figures.noisy_bn(df)
    for ax in fig.axes:
        if ax.get_xscale() == "log":
            for line in ax.get_lines():
                assert (line.get_xdata() > 0).all()


def test_large_steps_legends_are_below_the_panels():
    relative = ls_experiments.relative_loss(
        depths=(8,), step_count=3, batches=(1,), batch_size=16, device="cpu"
    )
    _assert_legends_below_the_data(ls_figures.relative_loss(relative))
    growth = ls_experiments.activation_growth(depth=14, batch_size=16, device="cpu")
    _assert_legends_below_the_data(ls_figures.activation_growth(growth))


def test_learning_rate_sweep_legends_are_below_the_panels(small_sweep):
    from bnlib.figures import learning_rate as lr_figures

    assert small_sweep["diverged"].any()  # the figures must draw diverged runs too
    _assert_legends_below_the_data(lr_figures.accuracy_vs_lr(small_sweep))
    _assert_legends_below_the_data(lr_figures.training_curves(small_sweep))
    _assert_legends_below_the_data(lr_figures.one_learning_rate(small_sweep, 1e4, seed=1))


def test_gradient_noise_figures_legends_are_below_the_panels():
    from bnlib.experiments import gradient_noise as gn
    from bnlib.figures import learning_rate as lr_figures

    small = {"hidden": [16]}
    noise = gn.gradient_noise(
        batch_sizes=(4, 16), draws=3, checkpoints=(0, 2), config=small, device="cpu"
    )
    _assert_legends_below_the_data(lr_figures.gradient_noise(noise))
    sweep = gn.lr_batch_sweep(
        batch_sizes=(600, 1200),
        lr_range=(0.01, 1e4),
        lr_count=2,
        epochs=0.02,
        config=small,
        device="cpu",
    )
    _assert_legends_below_the_data(lr_figures.lr_batch_sweep(sweep))


def test_frozen_statistics_figure_draws_three_lines_with_the_legend_below():
    from bnlib.experiments import gradient_noise as gn
    from bnlib.experiments.noise_controls import frozen_statistics_noise
    from bnlib.figures import learning_rate as lr_figures

    config = {"batch_sizes": (4, 16), "draws": 3, "checkpoints": (0, 2)}
    noise = gn.gradient_noise(**config, device="cpu")
    frozen = frozen_statistics_noise(**config, population=64, device="cpu")
    fig = lr_figures.frozen_statistics_noise(noise, frozen)
    _assert_legends_below_the_data(fig)
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 3]
    assert fig.axes[0].get_lines()[2].get_linestyle() == "--"


def test_training_curves_pick_the_nearest_learning_rates(small_sweep):
    from bnlib.figures import learning_rate as lr_figures

    assert sorted(set(small_sweep["lr"])) == pytest.approx([0.01, 10, 1e4])
    assert lr_figures.nearest_lr(small_sweep["lr"], 0.2) == pytest.approx(0.01)
    fig = lr_figures.training_curves(small_sweep, runs=[("torch", 3.0)])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "BN, lr 10"


def test_initialization_figures_legends_are_below_the_panels():
    from bnlib.experiments import initialization as init
    from bnlib.figures import initialization as init_figures

    small = {"width": 32, "batch_size": 32}
    collapse = init.output_collapse(
        mlp_depths=(2, 4), residual_depths=(4,), resnet_depths=(8,), images=32
    )
    products = init.gaussian_products(n=40, depths=(1, 3, 5), draws=1)
    networks = init.network_spectra(depths=(1, 3), width=16, examples=2, batch_size=32)
    jacobians = init.jacobians_over_training(checkpoints=(0, 3), examples=2)
    explosion = init.gradient_explosion(depths=(4, 8), **small)
    schemes = init.init_schemes(depth=4, **small)
    stream = init.residual_variance(blocks=4, **small)
    sweep = init.skipinit_sweep(lr_range=(0.01, 1e4), lr_count=2, steps=5, blocks=2, width=16)
    assert sweep["diverged"].any()  # the figure must draw diverged runs too
    depth = init.depth_trainability(depths=(2, 3), lr_count=2, steps=5, width=16)
    for fig in (
        init_figures.output_collapse(collapse),
        init_figures.gaussian_products(products),
        init_figures.spectrum_statistics(products, networks),
        init_figures.jacobians_over_training(jacobians),
        init_figures.gradient_explosion(explosion),
        init_figures.depth_trainability(depth),
        init_figures.init_schemes(schemes),
        init_figures.residual_variance(stream),
        init_figures.skipinit_sweep(sweep),
    ):
        _assert_legends_below_the_data(fig)
    controls = {
        "ReLU at lr 0.064": init.jacobians_over_training(
            activations=("relu",), lr=0.064, checkpoints=(0, 3), examples=2
        ),
        "sigmoid with gain 4": init.jacobians_over_training(
            activations=("sigmoid",), norms=("none",), gain=4.0, checkpoints=(0, 3), examples=2
        ),
    }
    fig = init_figures.jacobians_over_training(jacobians, controls=controls)
    _assert_legends_below_the_data(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[2:5] == ["the runs above", "ReLU at lr 0.064", "sigmoid with gain 4"]
    assert [line.get_linestyle() for line in fig.axes[0].get_lines()[:1]] == ["-"]
    deep = init.network_spectra(depths=(1, 40), width=16, examples=2, batch_size=32)
    fig = init_figures.spectrum_statistics(products, deep)  # deeper than the products
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert init_figures.spectrum_statistics(products, networks).axes[0].get_xscale() == "linear"
    one = init_figures.fresh_network(init.fresh_network(depth=4, width=16, examples=2))
    assert "majority class" in one.get_suptitle()


def test_landscape_figures_legends_are_below_the_panels():
    from bnlib.experiments import landscape as exp
    from bnlib.figures import landscape as figures

    tiny = {"widths": (4, 8), "convs": 1, "batch_size": 16}
    vgg = exp.landscape(network="vgg", steps=4, points=3, count=3, **tiny)
    lp = exp.lp_normalization(norms=("none", "bn", "l1"), steps=2, points=2, **tiny)
    effective = exp.effective_lr(lr_range=(0.01, 10.0), lr_count=3, steps=3, points=2)
    for fig in (
        figures.landscape_over_training(vgg),
        figures.lp_normalization(lp),
        figures.effective_lr(effective),
    ):
        _assert_legends_below_the_data(fig)
    bn = vgg[vgg["norm"] == "bn"]
    view = figures.explorer_view(bn, lr=0.1, at_step=2)
    assert view.axes[2].get_title() == "along the gradient, step 2"


def test_what_else_figures_legends_are_below_the_panels():
    from bnlib import experiments
    from bnlib.figures import factors as figures

    experiments.load_all()

    def smoke(name):
        experiment = experiments.get(name)
        return experiment.function(**experiment.profiles["smoke"])

    study = smoke("factor_study")
    for fig in (
        figures.factor_effects(study),
        figures.factor_curves(study, "activation", "relu"),
        figures.layer_diagnostics(smoke("layer_diagnostics")),
        figures.class_mismatch(smoke("class_mismatch")),
        figures.small_batches(smoke("small_batches")),
        figures.batch_renorm(smoke("batch_renorm")),
        figures.ghost_batch_norm(smoke("ghost_batch_norm")),
        figures.inference_pitfalls(smoke("inference_pitfalls")),
        figures.dropout(smoke("dropout")),
    ):
        _assert_legends_below_the_data(fig)
    only = figures.bn_only(smoke("bn_only"))
    assert len(only.axes[0].patches) == 4  # one bar per training mode


def _tick_labels_overlap(ax) -> bool:
    """Whether two of the y axis's visible tick labels overlap on the canvas."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    low, high = sorted(ax.get_ylim())
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    boxes = [
        t.label1.get_window_extent(renderer)
        for t in ticks
        if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high
    ]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.parametrize("span", [(1.5, 80.0), (0.15, 3.0), (2.0, 20.0)])
def test_decade_labels_keep_a_log_axis_of_one_or_two_decades_legible(span):
    from bnlib.figures.style import decade_labels

    _, ax = plt.subplots(figsize=(7.5, 2.4))  # at 16-point labels matplotlib's own collide
    ax.plot([0, 1], list(span))
    ax.set_yscale("log")
    decade_labels(ax)
    assert not _tick_labels_overlap(ax)
    shown = {t.label1.get_text() for t in ax.yaxis.get_minor_ticks() + ax.yaxis.get_major_ticks()}
    assert {"2", "5", "10"} & shown  # plain numbers at 1, 2 and 5 times a power of ten
