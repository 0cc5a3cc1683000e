"""The chapter "Why BN tolerates large steps"'s experiments, at a tiny scale on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnlib.experiments import landscape as exp

TINY_VGG = {"widths": (4, 8), "convs": 1, "batch_size": 16}


def test_landscape_rows_cover_every_norm_step_and_step_size():
    df = exp.landscape(network="vgg", steps=4, points=3, count=3, **TINY_VGG)
    assert set(df["norm"]) == {"none", "bn"}
    assert sorted(df["step"].unique()) == [0, 2, 4]
    assert len(df) == 2 * 3 * 3
    np.testing.assert_allclose(sorted(df["factor"].unique()), np.geomspace(0.5, 4.0, 3))
    assert (df["loss_start"] > 0).all() and (df["grad_norm"] > 0).all()
    assert df["test_accuracy"].between(0, 1).all()


@pytest.mark.parametrize("norm", ["none", "bn", "l2"])
def test_probing_leaves_the_trained_network_exactly_as_training_alone_would(norm):
    import torch

    from bnlib.landscape import along_gradient

    trained = []
    for probing in (False, True):
        torch.manual_seed(0)
        model = exp.build_network("vgg", norm, widths=(4, 8), convs=1)
        batches, loss_fn, _ = exp._problem("vgg", 0, 0, 0, 16, 4, "cpu")
        exp._train_probing(
            model,
            batches,
            steps=4,
            lr=0.1,
            weight_decay=0.0,
            loss_fn=loss_fn,
            log_at={0, 1, 2, 3, 4} if probing else set(),
            probe=lambda m, x, y, f=loss_fn: along_gradient(m, x, y, [0.1, 1.0], f),
            desc="",
        )
        trained.append(model.state_dict())
    for key, value in trained[0].items():
        assert torch.equal(value, trained[1][key]), key


def test_the_deep_linear_network_is_santurkars():
    model = exp.build_network("linear", "none")
    weights = list(model.parameters())  # no biases, not even the output layer's
    assert len(weights) == 25 and all(w.shape == (10, 10) for w in weights)
    df = exp.landscape(network="linear", lr=1e-6, factors=(0.01, 30.0), steps=2, points=2, count=2)
    assert df["test_accuracy"].isna().all()
    assert df["step_size"].min() == pytest.approx(1e-8)


def test_build_network_swaps_in_lp_norms_and_rejects_unknown_names():
    from bnlib.normalizers import LpNorm

    model = exp.build_network("vgg", "linf", widths=(4,), convs=1)
    assert [m.p for m in model.modules() if isinstance(m, LpNorm)] == [math.inf]
    with pytest.raises(ValueError, match="unknown normalization 'group'"):
        exp.build_network("vgg", "group")
    with pytest.raises(ValueError, match="unknown network 'resnet'"):
        exp.build_network("resnet", "bn")


def test_lp_normalization_summarizes_every_relu_input_per_channel():
    df = exp.lp_normalization(
        norms=("bn", "l1"), steps=2, points=2, widths=(4, 8), convs=1, batch_size=16
    )
    assert set(df["norm"]) == {"bn", "l1"}
    assert df["train_accuracy"].between(0, 1).all() and df["test_accuracy"].between(0, 1).all()
    per_layer = df.groupby(["norm", "step", "layer"])["channel"].nunique()
    assert per_layer.xs(0, level="layer").eq(4).all() and per_layer.xs(1, level="layer").eq(8).all()
    bn_start = df[(df["norm"] == "bn") & (df["step"] == 0)]
    # BN with gamma 1, beta 0 at the start: each channel's mean 0 and std about 1
    assert bn_start["mean"].abs().max() < 1e-5
    assert bn_start["std"].between(0.99, 1.01).all()


def test_scale_invariance_holds_to_round_off_without_epsilon_and_breaks_with_it_at_small_scales():
    df = exp.scale_invariance(scales=(0.01, 100.0), eps_values=(0.0, 1e-5))
    exact = df[df["eps"] == 0]
    assert exact["output_change"].max() < 1e-12
    assert (exact["gradient_ratio"] - 1).abs().max() < 1e-12
    assert exact["gradient_error"].max() < 1e-12  # a * grad(aW) = grad(W) as vectors
    assert exact["cosine"].max() < 1e-12
    with_eps = df[(df["eps"] > 0) & (df["scale"] == 0.01)]
    assert with_eps["output_change"].iloc[0] > 1e-3  # eps matters once a^2 var ~ eps


def test_effective_lr_starts_at_the_learning_rate_over_the_he_norm():
    df = exp.effective_lr(lr_range=(0.01, 0.1), lr_count=2, weight_decays=(0.0,), steps=3, points=2)
    start = df[df["step"] == 0]
    assert set(start["layer"]) == set(range(8))
    # He with gain sqrt(2) on a fan-in of n: a unit's norm is about sqrt(2); 784 inputs first
    assert start["weight_norm"].between(1.3, 1.5).all()
    np.testing.assert_allclose(start["effective_lr"], start["lr"] / start["weight_norm"] ** 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"), ({"weight_decay": -1.0}, "weight_decay")],
)
def test_landscape_refuses_a_bad_rate_before_training(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        exp.landscape(network="mlp", norms=("bn",), steps=2, points=2, count=2, **kwargs)
    with pytest.raises((TypeError, ValueError), match="lr"):
        exp.lp_normalization(norms=("bn",), steps=2, points=2, lr=-0.1)
