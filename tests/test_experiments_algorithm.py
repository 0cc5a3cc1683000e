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
    assert {"gradcheck", "grad x", "running var"} <= set(df["quantity"])
    assert figures.gradient_check_summary(df)["all_passed"].all()


def test_running_statistics_converge_with_exponential_average():
    df = experiments.running_statistics(
        steps=60, momenta=(0.1,), points=4, population_examples=1200
    )
    err = df[df["metric"] == "mean error"].set_index("step")["value"]
    assert err.iloc[-1] < err.iloc[0]
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


def test_batch_mean_noise_follows_inverse_square_root():
    df = experiments.batch_statistics_noise(batch_sizes=(4, 64), draws=100, units=20)
    spread = df.groupby(["batch_size", "unit"])["mean_error"].std().groupby("batch_size").median()
    assert spread[4] / spread[64] == pytest.approx(4.0, rel=0.25)
    figures.batch_statistics_noise(df)


def test_running_statistics_rejects_a_momentum_outside_0_1():
    """The experiment sets each layer's momentum after building the model: the check
    must hold for assignment too, not only for the constructor."""
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*got 2\.0"):
        experiments.running_statistics(steps=2, momenta=(2.0,), points=2)
