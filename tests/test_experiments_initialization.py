"""bnlib.experiments.initialization at a small scale, on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bnlib.experiments import initialization as init


def test_majority_fraction_on_constructed_predictions():
    assert init.majority_fraction(torch.tensor([3, 3, 3, 3])) == 1.0
    assert init.majority_fraction(torch.tensor([0, 1, 2, 3])) == 0.25
    assert init.majority_fraction(torch.tensor([5, 1, 5, 2, 5])) == 0.6
    with pytest.raises(ValueError, match="at least one input"):
        init.majority_fraction(torch.tensor([], dtype=torch.int64))


def test_output_collapse_deep_plain_net_gives_every_input_one_class():
    df = init.output_collapse(
        mlp_depths=(50,), residual_depths=(), resnet_depths=(), inits=("he",), images=200
    )
    by_norm = df.set_index("norm")
    assert by_norm.loc["none", "majority"] > 0.9
    assert by_norm.loc["torch", "majority"] < 0.6
    assert np.allclose(df["ratio"], df["input_spread"] / df["class_offset"])


def test_bn_gradient_grows_backwards_at_yangs_rate():
    """Yang et al.: in a deep ReLU MLP with BN the squared gradient norm grows by about
    pi / (pi - 1) per layer going backwards; without BN (He init) it stays flat."""
    df = init.gradient_explosion(depths=(20,), width=256, architectures=("mlp",), device="cpu")
    factors = {}
    for norm, part in df.groupby("norm"):
        log_sq = np.log(part.sort_values("layer")["grad_sq"].to_numpy())
        slope = np.polyfit(np.arange(len(log_sq))[1:-1], log_sq[1:-1], 1)[0]
        factors[norm] = math.exp(-slope)
    assert factors["torch"] == pytest.approx(math.pi / (math.pi - 1), rel=0.05)
    assert 0.8 < factors["none"] < 1.15


def test_bn_makes_the_activation_scale_the_same_for_every_initialization():
    """BN(aWu) = BN(Wu): with BN, He and He x 1.2 give the same activations (up to BN's
    epsilon); without BN the larger gain grows with depth."""
    df = init.init_schemes(depth=10, width=64, schemes=("he", "he x 1.2"), batch_size=64)
    rms = df.pivot_table(index=["norm", "layer"], columns="scheme", values="rms")
    bn = rms.loc["torch"]
    np.testing.assert_allclose(bn["he"], bn["he x 1.2"], rtol=1e-4)
    plain = rms.loc["none"]
    assert plain.loc[10, "he x 1.2"] > 3 * plain.loc[10, "he"]


def test_residual_stream_grows_exponentially_without_bn_and_linearly_with_it():
    df = init.residual_variance(blocks=12, width=128, batch_size=128)
    stream = df.pivot_table(index="block", columns="norm", values="stream")
    ratio = stream["none"].iloc[-1] / stream["none"].iloc[-2]
    assert 1.6 < ratio < 2.5  # about doubling per block
    increments = stream["torch"].diff().dropna()
    assert increments.min() > 0.3 and increments.max() < 1.2  # about one branch each
    assert df.loc[df["block"] == 0, "branch"].isna().all()


def test_spectra_rows_and_a_linear_net_matches_the_gaussian_product():
    """A linear MLP with N(0, 1/fan-in) weights is a Gaussian product: at one layer its
    Jacobian's largest singular value is near the quarter circle's edge 2."""
    df = init.network_spectra(
        depths=(1,), width=200, activations=("linear",), norms=("none",), examples=2
    )
    assert set(df.columns) >= {"seed", "activation", "norm", "depth", "example", "index"}
    assert len(df) == 2 * 200
    assert df["value"].max() == pytest.approx(2.0, rel=0.1)


def test_jacobians_over_training_smoke_and_layers():
    df = init.jacobians_over_training(
        activations=("sigmoid",), norms=("torch",), checkpoints=(0, 3), examples=2, device="cpu"
    )
    assert sorted(df["jacobian"].unique()) == ["end to end", "layer 2", "layer 3"]
    assert sorted(df["step"].unique()) == [0, 3]
    assert len(df) == 2 * 3 * 2 * 100
    assert not df["diverged"].any()


def test_jacobians_over_training_gain_scales_the_unnormalized_network_only():
    common = {"activations": ("sigmoid",), "checkpoints": (0,), "examples": 4, "device": "cpu"}

    def rms(frame):
        layer = frame[frame["jacobian"] == "layer 2"]
        return float((layer["value"] ** 2).mean() ** 0.5)

    plain = {g: init.jacobians_over_training(norms=("none",), gain=g, **common) for g in (1, 4)}
    assert rms(plain[4]) > 2 * rms(plain[1])  # the sigmoid net's layers shrink less
    default = init.jacobians_over_training(norms=("none",), **common)
    assert default["value"].equals(plain[1]["value"])  # sigmoid's default gain is 1
    bn = {g: init.jacobians_over_training(norms=("torch",), gain=g, **common) for g in (1, 4)}
    assert rms(bn[4]) == pytest.approx(rms(bn[1]), rel=1e-3)  # BN(aWu) = BN(Wu)


def test_the_jacobian_controls_are_the_same_experiment_with_other_settings():
    from bnlib import experiments

    main = experiments.get("jacobians_over_training")
    for name, changed in [
        ("jacobians_relu_small_lr", {"activations": ["relu"], "lr": 0.064}),
        ("jacobians_sigmoid_gain", {"activations": ["sigmoid"], "norms": ["none"], "gain": 4.0}),
    ]:
        control = experiments.get(name)
        assert control.function is main.function
        assert experiments.code_hash(name) == experiments.code_hash(main.name)
        for profile in ("smoke", "quick", "full"):
            assert control.profiles[profile] == {**main.profiles[profile], **changed}


def test_skipinit_sweep_rows_and_diverged_runs_have_no_accuracy():
    df = init.skipinit_sweep(
        variants=("none", "skipinit"), lr_range=(0.01, 1e4), lr_count=2, steps=30, blocks=2
    )
    assert len(df) == 4
    big = df[df["lr"] > 1]
    assert big.loc[big["variant"] == "none", "diverged"].all()
    assert df.loc[df["diverged"], "test_accuracy"].isna().all()
    assert df.loc[~df["diverged"], "test_accuracy"].between(0, 1).all()
    with pytest.raises(ValueError, match="unknown variant"):
        init.skipinit_sweep(variants=("fixup",), lr_count=1, steps=1)


def test_depth_trainability_rows():
    df = init.depth_trainability(depths=(2,), lr_count=2, steps=5, width=16)
    assert len(df) == 4 and set(df["norm"]) == {"none", "torch"}


@pytest.mark.parametrize("residual", [False, True])
def test_fresh_network_measures_one_network(residual):
    df = init.fresh_network(depth=6, width=16, residual=residual, examples=2, images=50)
    counts = df["quantity"].value_counts()
    assert counts["majority"] == 1 and counts["singular value"] == 2 * 16
    assert counts["rms"] == (4 if residual else 6)
    with pytest.raises(ValueError, match="too shallow"):
        init.fresh_network(depth=1)
    with pytest.raises(ValueError, match="unknown initialization"):
        init.fresh_network(init="he x 1.2")


def test_fixup_sweep_rows_match_the_skipinit_sweep():
    from bnlib.experiments.initialization import fixup_sweep, skipinit_sweep

    fixup = fixup_sweep(lr_count=2, steps=5, blocks=2, width=16, device="cpu")
    skip = skipinit_sweep(lr_count=2, steps=5, blocks=2, width=16, device="cpu")
    assert list(fixup.columns) == list(skip.columns)
    assert set(fixup["variant"]) == {"fixup"} and len(fixup) == 2
    assert fixup["lr"].tolist() == sorted(set(skip["lr"]))
