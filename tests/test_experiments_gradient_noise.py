"""bnlib.experiments.gradient_noise at a small scale, on real data."""

from __future__ import annotations

import pytest
import torch

from bnlib import data
from bnlib.experiments.gradient_noise import gradient_noise, lr_batch_sweep, noise_rows
from bnlib.models import build_model

SMALL = {"hidden": [32, 32]}


def test_without_bn_the_gradient_variance_falls_as_one_over_the_batch_size():
    """For an average of per-example gradients the variance is C / |B| (up to the finite-
    population factor): |B| * variance is flat in |B|, within the sampling error of 64
    draws."""
    df = gradient_noise(
        batch_sizes=(4, 64),
        draws=64,
        checkpoints=(0,),
        norms=("none",),
        config=SMALL,
        device="cpu",
    )
    scaled = df.set_index("batch_size")["scaled_variance"]
    assert 0.7 < scaled[64] / scaled[4] < 1.4
    assert (df["variance"] > 0).all() and (df["mean_gradient_sq"] > 0).all()


def test_with_bn_small_batches_are_noisier_than_one_over_the_batch_size():
    """BN's batch statistics add noise of their own, largest at small batches."""
    df = gradient_noise(
        batch_sizes=(4, 256),
        draws=32,
        checkpoints=(0,),
        norms=("torch",),
        config=SMALL,
        device="cpu",
    )
    scaled = df.set_index("batch_size")["scaled_variance"]
    assert scaled[4] > 1.5 * scaled[256]


def test_measuring_the_noise_leaves_the_model_unchanged():
    train = data.load("mnist", "train", "cpu")
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(16,), norm="torch", activation="relu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = noise_rows(
        0,
        model,
        float("nan"),
        data=train,
        batch_sizes=(8,),
        draws=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(rows) == 1 and rows[0]["variance"] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradient_noise_checks_its_arguments():
    with pytest.raises(ValueError, match="draws must be >= 2"):
        gradient_noise(draws=1, device="cpu")
    with pytest.raises(ValueError, match="batch size must be in 1..60000"):
        gradient_noise(batch_sizes=(0,), device="cpu")


def test_lr_batch_sweep_gives_every_batch_size_the_same_epochs():
    df = lr_batch_sweep(
        batch_sizes=(300, 1200),
        lr_range=(0.01, 0.1),
        lr_count=2,
        epochs=0.05,
        norms=("none",),
        config=SMALL,
        device="cpu",
    )
    steps = df.groupby("batch_size")["steps"].first()
    assert steps[300] == 10 and steps[1200] == 2  # 0.05 * 60000 examples each
    assert (df["lr_per_example"] == df["lr"] / df["batch_size"]).all()
    assert len(df) == 4 and df["test_accuracy"].between(0, 1).all()
    with pytest.raises(ValueError, match="epochs must be > 0"):
        lr_batch_sweep(epochs=0, device="cpu")


def test_the_noise_is_registered_after_training_at_three_learning_rates():
    from bnlib import experiments

    main = experiments.get("gradient_noise")
    for name, changed in [
        ("gradient_noise_small_lr", {"lr": 0.001}),
        ("gradient_noise_large_lr", {"lr": 0.1, "norms": ["torch"]}),
    ]:
        control = experiments.get(name)
        assert control.function is main.function
        assert experiments.code_hash(name) == experiments.code_hash("gradient_noise")
        for profile in ("smoke", "quick", "full"):
            assert control.profiles[profile] == {**main.profiles[profile], **changed}


def test_noise_terms_and_the_figure_over_learning_rates():
    from bnlib.figures import learning_rate as lr_figures

    small = {"batch_sizes": [8, 32], "draws": 3, "checkpoints": [0, 2], "device": "cpu"}
    frames = {
        0.001: gradient_noise(lr=0.001, **small),
        0.1: gradient_noise(lr=0.1, norms=["torch"], **small),
    }
    terms = lr_figures.noise_terms(frames, batch_size=32).set_index(["norm", "lr", "step"])
    assert len(terms) == 3 * 2  # (none, 0.001), (torch, 0.001), (torch, 0.1) x 2 steps
    row = terms.loc[("torch", 0.1, 2)]
    assert row["noise"] == pytest.approx(0.01 * row["variance"])
    assert row["scaled_variance"] == pytest.approx(32 * row["variance"])
    # at initialization the two runs are the same network
    assert terms.loc[("torch", 0.1, 0), "variance"] == pytest.approx(
        terms.loc[("torch", 0.001, 0), "variance"]
    )
    with pytest.raises(ValueError, match="no measurement at batch size 64"):
        lr_figures.noise_terms(frames, batch_size=64)
    fig = lr_figures.noise_at_learning_rates(frames)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["no BN, lr 0.001", "BN, lr 0.001", "BN, lr 0.1"]
