"""bnlib.experiments.large_steps at a small scale, on real data, and its figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bnlib.experiments import large_steps as ex
from bnlib.figures import interactive
from bnlib.figures import large_steps as figures
from bnlib.setups import RESNET_INITS


@pytest.fixture(scope="module")
def relative():
    return ex.relative_loss(
        depths=(8, 14),
        step_count=5,
        batches=(1, 2),
        batch_size=16,
        inits=("he", "he-fan-in"),
        device="cpu",
    )


def test_relative_loss_rows_and_divergence(relative):
    assert len(relative) == 2 * 2 * 2 * 2 * 5  # inits x norms x depths x batches x steps
    assert set(relative["batch"]) == {1, 2}
    assert relative["loss_before"].between(0.5, 20).all()  # cross-entropy of 10 classes, early
    diverged = ~(relative["relative_loss"] <= 1e3)
    assert (relative["diverged"] == diverged).all()
    tiny = relative[relative["step_size"] == relative["step_size"].min()]
    assert (tiny["relative_loss"].between(0.5, 1.5)).all()  # a 1e-5 step barely moves
    bn = relative[relative["norm"] == "torch"]
    assert not bn["diverged"].any()


def test_stable_step_sizes_stop_at_the_first_divergence():
    frame = pd.DataFrame(
        {
            "init": "he",
            "norm": "none",
            "depth": 8,
            "batch": 1,
            "seed": 0,
            "step_size": [1e-3, 1e-2, 1e-1, 1.0],
            "loss_before": 2.3,
            "relative_loss": [0.9, 5e3, 0.5, 1e9],
            "diverged": [False, True, False, True],
        }
    )
    (row,) = figures.stable_step_sizes(frame).to_dict("records")
    assert row["largest_stable"] == 1e-3 and not row["grid_end"]
    frame["diverged"] = False
    (row,) = figures.stable_step_sizes(frame).to_dict("records")
    assert row["largest_stable"] == 1.0 and row["grid_end"]


def test_activations_grow_with_depth_without_bn_at_he_initialization():
    growth = ex.activation_growth(depth=26, batch_size=32, device="cpu")
    assert set(growth["init"]) == set(RESNET_INITS)
    curve = growth[(growth["norm"] == "none") & (growth["init"] == "he")].set_index("layer")
    assert list(curve.index) == list(range(3, 27, 2))  # one row per block
    assert curve["std"].iloc[-1] > 10 * curve["std"].iloc[0]
    bn = growth[growth["norm"] == "torch"]
    assert bn["std"].between(0.3, 10).all()


def test_activations_along_step_start_at_the_unmoved_network_and_refuse_a_tame_grid():
    along = ex.activations_along_step(depth=14, batch_size=16, fractions=3, init="he-fan-in")
    assert sorted(along["fraction"].unique()) == [0.0, 0.5, 1.0]
    assert along.groupby("norm")["layer"].nunique().eq(3).all()
    assert along["step_size"].nunique() == 1
    with pytest.raises(ValueError, match="widen step_range"):
        ex.activations_along_step(depth=8, batch_size=16, fractions=2, step_range=(1e-9, 1e-8))


def test_activations_along_a_given_step_size_move_only_the_networks_asked_for():
    along = ex.activations_along_step(
        depth=14, batch_size=16, fractions=2, init="he", norms=("torch",), step_size=0.5
    )
    assert set(along["norm"]) == {"torch"}
    assert set(along["step_size"]) == {0.5}
    start = along[along["fraction"] == 0.0].sort_values(["layer", "channel"])
    end = along[along["fraction"] == 1.0].sort_values(["layer", "channel"])
    assert not np.allclose(start["mean"].to_numpy(), end["mean"].to_numpy())
    with pytest.raises(ValueError, match="step_size must be positive"):
        ex.activations_along_step(depth=8, batch_size=16, fractions=2, step_size=0.0)


def test_gradients_at_init_rows_and_shares():
    grads = ex.gradients_at_init(depths=(8,), images=20, device="cpu")
    out = grads[grads["quantity"] == "output"]
    assert len(out) == 2 * 20 * 10
    sums = out.groupby(["norm", "image"])["value"].sum()
    assert np.allclose(sums, 0, atol=1e-6)  # softmax minus one-hot sums to zero
    shares = figures.predicted_shares(grads)
    assert shares["share"].between(0.1, 1.0).all() and len(shares) == 2
    weights = grads[grads["quantity"] == "weight"]
    assert len(weights) == 2 * 32 * 16 * 9  # ResNet-8 middle block: its 3x3 conv 16 -> 32


def test_unknown_initialization_is_refused():
    with pytest.raises(ValueError, match="unknown initialization 'xavier'"):
        ex.activation_growth(depth=8, inits=("xavier",), batch_size=8, device="cpu")


def test_relative_loss_menu_has_one_slider_step_per_network(relative):
    fig = interactive.relative_loss_menu(relative)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == 4  # 2 initializations x 2 depths
    assert sum(t.visible for t in fig.data) == 4  # first network: 2 norms x 2 batches
    assert all(sum(s.args[0]["visible"]) == 4 for s in steps)


def test_change_along_step_puts_both_networks_on_one_symmetric_scale():
    along = ex.activations_along_step(depth=14, batch_size=16, fractions=3, init="he-fan-in")
    fig = figures.change_along_step(along)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 6  # two networks x three blocks
    limits = {im.get_clim() for im in images}
    assert len(limits) == 1 and next(iter(limits))[0] == -next(iter(limits))[1]
    # at 0% of the step every channel is its own reference: the first column is 0
    for im in images:
        assert np.allclose(np.asarray(im.get_array())[:, 0], 0.0)


def test_init_ablation_varies_one_detail_at_a_time_and_fan_in_starts_worse():
    d = ex.init_ablation(depth=14, batch_size=32, step_count=3, device="cpu")
    recipes = ["fan", "classifier", "shortcut", "conv_bias"]
    assert len(d) == 16 * 3 and d.groupby(recipes).ngroups == 16
    assert (d.groupby(recipes)["loss_before"].nunique() == 1).all()  # one loss per network
    assert (d["diverged"] == ~(d["relative_loss"] <= 1e3)).all()
    start = d.groupby(recipes)["loss_before"].first()
    # the stem's fan-in is 9 against a fan-out of 144: 16 times the variance
    assert start.xs("out").median() < start.xs("in").median()


def test_gradient_alignment_measures_how_the_examples_gradients_add_up():
    d = ex.gradient_alignment(depths=(8,), images=6, seeds=(0, 1), device="cpu")
    assert len(d) == 2 * 2 and set(d["norm"]) == {"none", "torch"}
    assert d["mean_cosine"].between(-1, 1).all()
    # the batch gradient is the examples' mean: never longer than their mean length
    assert (d["addition"] <= 1 + 1e-9).all() and (d["addition"] > 0).all()
    ratio = d["batch_gradient_norm"] / d["example_gradient_norm"]
    assert np.allclose(ratio, d["addition"])
    assert (d["zero_gradients"] >= 0).all()
