"""bnlib.figures.interactive: kernel-free plotly figures from real experiment data."""

from __future__ import annotations

import pandas as pd
import pytest

from bnlib.experiments import algorithm as experiments
from bnlib.figures import interactive


@pytest.fixture(scope="module")
def noise():
    return experiments.batch_statistics_noise(batch_sizes=(4, 16, 64), draws=50, units=10)


def test_batch_noise_slider_has_one_step_per_batch_size(noise):
    fig = interactive.batch_noise_slider(noise)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["4", "16", "64"]
    assert [t.visible for t in fig.data] == [True, False, False]
    assert steps[2].args[0]["visible"] == [False, False, True]
    spreads = [float(s.args[1]["title"].rsplit(" ", 1)[1]) for s in steps]
    assert spreads[0] > spreads[1] > spreads[2]  # the noise shrinks with the batch size


def test_distribution_shift_and_running_statistics_have_a_series_each():
    shift = experiments.distribution_shift(contrasts=(1.0, 0.5), steps=50)
    fig = interactive.distribution_shift(shift)
    assert {t.name for t in fig.data} == set(shift["network"])
    running = experiments.running_statistics(
        steps=20, momenta=(0.1, None), points=3, population_examples=600
    )
    fig = interactive.running_statistics(running)
    assert len(fig.data) == 2 * 3  # per momentum: mean error, var error, accuracy


def test_show_is_offline_html_in_the_book_and_the_figure_elsewhere(noise, monkeypatch):
    fig = interactive.batch_noise_slider(noise)
    monkeypatch.delenv("BNLIB_BOOK_BUILD", raising=False)
    assert interactive.show(fig) is fig
    monkeypatch.setenv("BNLIB_BOOK_BUILD", "1")
    html = interactive.show(fig).data
    assert "bnlib-interactive" in html and "mathjax_ignore" in html
    assert "Plotly.newPlot" in html
    assert "<script src" not in html and "cdn" not in html.lower()


def test_accuracy_sweep_has_a_slider_step_per_seed_and_the_mean(small_sweep):
    fig = interactive.accuracy_sweep(small_sweep)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["mean over seeds", "seed 0", "seed 1"]
    shown = [t for t in fig.data if t.visible]
    assert {t.name for t in shown} >= {"no BN, test", "BN, training", "no BN, diverged"}
    lost = next(t for t in shown if t.name == "no BN, diverged")
    assert 1e4 in list(lost.x) and 0.01 not in list(lost.x)
    assert all(v > 0 for v in lost.customdata)


def test_spectrum_slider_has_a_step_per_depth_and_a_histogram_per_network():
    from bnlib.experiments import initialization as init

    networks = init.network_spectra(depths=(1, 3), width=16, examples=2, batch_size=32)
    products = init.gaussian_products(n=16, depths=(1, 3), draws=1)
    fig = interactive.spectrum_slider(networks, products)
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["1", "3"]
    # per depth: no BN and BN for the linear and the ReLU network, the product in each panel
    assert len(fig.data) == 2 * (2 * 2 + 2)
    visible = slider.steps[1].args[0]["visible"]
    assert sum(visible) == 6 and not any(t.visible for t in fig.data[6:])
    for trace in fig.data:
        assert abs(sum(trace.y) - 1) < 1e-9  # shares of the singular values
    assert fig.layout.xaxis.range[1] == 2  # no value beyond 100


def test_spectrum_slider_bins_reach_the_largest_value():
    frame = pd.DataFrame(
        {"activation": "relu", "norm": "torch", "depth": 50, "value": [0.0, 1.0, 3e5]}
    )
    fig = interactive.spectrum_slider(frame)
    assert fig.layout.xaxis.range[1] == 6  # 3e5 lies in the last decade, not piled at 100
    (trace,) = fig.data
    assert trace.y[-1] == 0 and max(trace.y) == pytest.approx(1 / 3)


def test_landscape_slider_has_a_step_per_training_step_and_two_panels_per_norm():
    from bnlib.experiments import landscape as exp

    df = exp.landscape(
        network="vgg", steps=4, points=3, count=3, widths=(4,), convs=1, batch_size=16
    )
    fig = interactive.landscape_slider(df)
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["0", "2", "4"]
    assert len(fig.data) == 3 * 2 * 2  # steps x norms x (loss, gradient) panels
    visible = slider.steps[2].args[0]["visible"]
    assert sum(visible) == 4 and all(visible[8:])
    first = fig.data[0]  # no BN, step 0: loss after over loss before at the 3 step sizes
    part = df[(df["step"] == 0) & (df["norm"] == "none")].sort_values("factor")
    assert list(first.y) == pytest.approx(list(part["loss"] / part["loss_start"]))


def test_small_batch_sweep_has_a_view_per_base_learning_rate_and_a_line_per_norm():
    from bnlib.experiments import factors

    df = factors.small_batches(
        batch_sizes=[4, 16],
        norms=["bn", "group"],
        base_lrs=[0.02, 0.05],
        examples=32,
        validation=200,
        test_examples=200,
    )
    fig = interactive.small_batch_sweep(df)
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["best", "0.02", "0.05"]
    assert len(fig.data) == 3 * 2
    assert [t.visible for t in fig.data] == [True, True, False, False, False, False]
    fixed = fig.data[4]  # base learning rate 0.05, BN
    part = df[(df["norm"] == "bn") & (df["base_lr"] == 0.05)].sort_values("batch_size")
    assert list(fixed.y) == pytest.approx(list(100 * (1 - part["test_accuracy"])))
    assert list(fixed.customdata) == pytest.approx(list(part["lr"]))
