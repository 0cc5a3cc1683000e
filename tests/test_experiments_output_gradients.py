"""bnlib.experiments.output_gradients on real data: the final layer's gradient of fresh
MLPs, image by image."""

from __future__ import annotations

import numpy as np
import pytest

from bnlib.experiments.output_gradients import mlp_output_gradients
from bnlib.figures import initialization as figures
from bnlib.figures.large_steps import predicted_shares, softmax_spread


def test_output_gradients_are_softmax_minus_onehot_and_collapse_without_bn():
    df = mlp_output_gradients(depths=(50,), images=64, seeds=(0,), device="cpu")
    assert len(df) == 2 * 64 * 10
    rows = df.groupby(["norm", "image"])
    # softmax minus one-hot: each image's row sums to 0, and only its label's entry is < 0
    assert np.allclose(rows["value"].sum(), 0.0, atol=1e-9)
    negative = df[df["value"] < 0]
    assert (negative["class"] == negative["label"]).all()
    assert df["value"].between(-1, 1).all()
    shares = predicted_shares(df).set_index("norm")["share"]
    assert shares["none"] > 0.9  # the deep unnormalized MLP gives nearly every image one class
    assert shares["torch"] < 0.6


def test_unknown_init_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown init 'kaiming'.*choose one of"):
        mlp_output_gradients(init="kaiming", depths=(2,), images=4, device="cpu")


def test_heatmap_figure_draws_one_panel_per_depth_and_norm():
    df = mlp_output_gradients(depths=(2, 5), images=16, seeds=(0,), device="cpu")
    fig = figures.mlp_output_gradients(df)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 4
    assert titled[0].startswith("2 layers, no BN\nmost frequent class ")


def test_softmax_spread_is_zero_when_every_image_gets_the_same_probabilities():
    df = mlp_output_gradients(depths=(3,), images=8, seeds=(0,), device="cpu")
    same = df.copy()
    # replace each row by (fixed probabilities) - onehot: the spread must vanish
    same["value"] = 0.1 - (same["class"] == same["label"])
    assert np.allclose(softmax_spread(same)["spread"], 0.0)
    assert (softmax_spread(df)["spread"] > 0).all()
