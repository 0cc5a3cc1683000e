"""bnlib.experiments.algorithm and bnlib.figures.algorithm, at a small scale.

The experiments' claims are tested on what they return, and each figure function is
drawn from real experiment output.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bnlib.experiments import algorithm as experiments
from bnlib.figures import algorithm as figures


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_transform_stages_normalize_each_unit(layer):
    df = experiments.transform_stages(layer=layer, gamma=0.5, beta=2.0, batch_size=32)
    stats = df.groupby(["stage", "unit"])["value"].agg(["mean", "std"])
    # values are a subsample for conv, so the moments are close, not exact
    tol = 1e-6 if layer == "linear" else 0.1
    assert np.allclose(stats.loc["x_hat", "mean"], 0, atol=tol)
    assert np.allclose(stats.loc["x_hat", "std"], 1, atol=0.05)
    assert np.allclose(stats.loc["y", "mean"], 2.0, atol=tol)
    assert df["unit"].nunique() >= 2
    figures.transform_stages(df)


def test_gradient_check_passes():
    df = experiments.gradient_check(shapes=((2, 3), (4, 3, 1, 1)))
    assert df["passed"].all()
    # gradcheck passes or fails: no error of 0.0 that would read as a measurement
    assert df.loc[df["quantity"] == "gradcheck", "max_abs_error"].isna().all()
    assert {"gradcheck", "grad x", "running var"} <= set(df["quantity"])
    assert figures.gradient_check_summary(df)["all_passed"].all()


def test_running_statistics_converge_with_exponential_average():
    """After 60 steps with momentum 0.1 the running means are close to the current
    network's population means (far closer than after the first update), and eval mode
    with them gives about the population statistics' accuracy."""
    df = experiments.running_statistics(
        steps=60, momenta=(0.1,), points=4, population_examples=1200
    )
    table = df.pivot_table(index="step", columns="metric", values="value")
    err = table["mean error"]
    assert err[1] > 1.0  # one update from (0, 1): still far from the population's
    assert err[60] < 0.25 and err[60] < err[1] / 4
    end = table.loc[60]
    assert end["accuracy: running statistics"] == pytest.approx(
        end["accuracy: population statistics"], abs=0.05
    )
    figures.running_statistics(df)


def test_distribution_shift_reestimation_restores_accuracy():
    df = experiments.distribution_shift(contrasts=(1.0, 0.3), steps=150)
    acc = df.pivot(index="contrast", columns="network", values="accuracy")
    assert acc.loc[0.3, "BN: re-estimated statistics"] > acc.loc[0.3, "BN: training statistics"]
    assert acc.loc[0.3, "BN: re-estimated statistics"] == pytest.approx(
        acc.loc[1.0, "BN: re-estimated statistics"], abs=0.01
    )
    figures.distribution_shift(df)


def test_bias_drifts_only_when_the_gradient_ignores_the_mean():
    df = experiments.bias_blowup(steps=100, points=5)
    last = df[df["step"] == 100].set_index(["gradient", "metric"])["value"]
    first = df[df["step"] == 0].set_index(["gradient", "metric"])["value"]
    assert last["through the mean", "bias norm"] == pytest.approx(
        first["through the mean", "bias norm"], rel=1e-6
    )
    assert last["ignores the mean", "bias norm"] > 5 * first["ignores the mean", "bias norm"]
    for gradient in ("through the mean", "ignores the mean"):
        assert last[gradient, "probe loss"] == pytest.approx(
            first[gradient, "probe loss"], abs=1e-4
        )
    figures.bias_blowup(df)


def test_batch_mean_noise_follows_the_law_of_a_fixed_example_in_every_batch():
    """One fixed example in every batch leaves m - 1 random values: the batch mean's
    spread is sqrt(m - 1) / m (0.5 at m = 2), not 1 / sqrt(m) (0.71)."""
    df = experiments.batch_statistics_noise(batch_sizes=(2, 4, 64), draws=400, units=20)
    spread = df.groupby(["batch_size", "unit"])["mean_error"].std().groupby("batch_size").median()
    for m in (2, 4, 64):
        assert spread[m] == pytest.approx((m - 1) ** 0.5 / m, rel=0.08)
    assert spread[2] < 0.9 / 2**0.5
    figures.batch_statistics_noise(df)


def test_identity_is_exact_with_population_statistics_only():
    df = experiments.identity_recovery(batch_size=60, batches=5)
    worst = df.groupby("mode")["max_error"].max()
    assert worst["eval: population statistics"] < 1e-12
    assert df[df["mode"] == "train: batch statistics"]["max_error"].min() > 0.1


def test_running_statistics_rejects_a_momentum_outside_0_1():
    """The experiment sets each layer's momentum after building the model: the check
    must hold for assignment too, not only for the constructor."""
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*got 2\.0"):
        experiments.running_statistics(steps=2, momenta=(2.0,), points=2)


@pytest.mark.parametrize("probe_examples", [0, -3])
def test_bias_blowup_refuses_a_probe_it_cannot_take(probe_examples):
    """Issue 32's kind of case: a negative count sliced from the end of the data."""
    with pytest.raises(
        ValueError, match=f"probe_examples must be in 1..60000, got {probe_examples}"
    ):
        experiments.bias_blowup(steps=1, probe_examples=probe_examples)
