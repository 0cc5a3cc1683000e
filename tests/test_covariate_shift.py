"""The chapter "Internal covariate shift": ICS measurement, percentiles, noise injection."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from bnlib import data, probes
from bnlib.engine import Member, StackedRun
from bnlib.experiments import covariate_shift as experiments
from bnlib.figures import covariate_shift as figures
from bnlib.figures import interactive
from bnlib.norm import DistributionNoise, replayed_noise


def test_ics_on_a_two_layer_linear_net_matches_the_hand_computation():
    """f(x) = w2 * w1 * x with scalars, loss (f - y)^2 / 2 on one example.

    dL/dw2 = r * w1 * x with r = w2 w1 x - y. After layer 1's step
    w1' = w1 - lr * r * w2 * x, layer 2's gradient is G' = r' * w1' * x with
    r' = w2 w1' x - y. Layer 1 has no layer before it: its G' = G.
    """
    w1, w2, x, y, lr = 0.5, 2.0, 3.0, 1.0, 0.1
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(w1)
        model[1].weight.fill_(w2)
    r = w2 * w1 * x - y
    g2 = r * w1 * x
    w1_new = w1 - lr * r * w2 * x
    g2_new = (w2 * w1_new * x - y) * w1_new * x

    def loss(out, target):
        return 0.5 * (out - target).square().sum()

    rows = probes.internal_covariate_shift(
        model,
        [model[0], model[1]],
        torch.tensor([[x]], dtype=torch.float64),
        torch.tensor([[y]], dtype=torch.float64),
        lr,
        loss,
    )
    assert rows[0]["ics"] == pytest.approx(0.0, abs=1e-12)
    assert rows[0]["cosine"] == pytest.approx(1.0)
    assert rows[1]["ics"] == pytest.approx(abs(g2 - g2_new))
    assert rows[1]["grad_norm"] == pytest.approx(abs(g2))
    assert rows[1]["cosine"] == pytest.approx(1.0 if g2 * g2_new > 0 else -1.0)
    assert model[0].weight.item() == w1 and model[1].weight.item() == w2  # unchanged


def test_ics_updates_every_parameter_of_the_earlier_layers():
    """G' follows Santurkar et al.'s definition: the earlier layers' biases (and BN's gamma
    and beta) take their update too, not only their weights."""
    w1, b1, w2, x, y, lr = 0.5, 0.3, 2.0, 3.0, 1.0, 0.1
    first = nn.Linear(1, 1).double()
    second = nn.Linear(1, 1, bias=False).double()
    model = nn.Sequential(first, second)
    with torch.no_grad():
        first.weight.fill_(w1)
        first.bias.fill_(b1)
        second.weight.fill_(w2)
    r = w2 * (w1 * x + b1) - y
    h_new = (w1 - lr * r * w2 * x) * x + (b1 - lr * r * w2)
    g2, g2_new = r * (w1 * x + b1), (w2 * h_new - y) * h_new

    def loss(out, target):
        return 0.5 * (out - target).square().sum()

    rows = probes.internal_covariate_shift(
        model,
        [first, second],
        torch.tensor([[x]], dtype=torch.float64),
        torch.tensor([[y]], dtype=torch.float64),
        lr,
        loss,
    )
    assert rows[1]["grad_norm"] == pytest.approx(abs(g2), rel=1e-12)
    assert rows[1]["ics"] == pytest.approx(abs(g2 - g2_new), rel=1e-12)
    assert first.bias.item() == b1 and first.weight.item() == w1  # restored


def test_percentile_probe_reports_the_percentiles_of_the_layer_input():
    x, y = data.load("mnist", "test")
    run = StackedRun(
        "mlp",
        {"activation": "sigmoid", "norm": "none"},
        [Member(lr=0.1)],
        data.Split(x[:1000], y[:1000]),
        batch_size=50,
    )
    rows = probes.activation_stats(
        x[:500], ["norms.2"], percentiles=(15, 50, 85), per_channel=True, units=[7]
    )(run, 0)
    got = {r["metric"]: r["value"] for r in rows}
    model = run.model
    h = x[:500].flatten(1)
    with torch.no_grad():
        for linear, act in zip(model.linears[:2], model.activations[:2]):
            h = act(linear(h))
        pre = model.linears[2](h)[:, 7]
    for p in (15, 50, 85):
        assert got[f"p{p}"] == pytest.approx(torch.quantile(pre, p / 100).item(), abs=1e-5)


def test_noise_injection_statistics():
    torch.manual_seed(0)
    noise = DistributionNoise(shift=(-0.5, 0.5), scale=(1.0, 1.25), jitter=0.0)
    a = torch.ones(256, 2000)  # a = 1 everywhere: the output is s_c + mu_c per channel
    out = noise(a)
    per_channel = out[0]
    assert torch.allclose(out, per_channel.expand_as(out))  # no jitter: same per example
    assert per_channel.min() >= 0.5 - 1e-6 and per_channel.max() <= 1.75 + 1e-6
    assert per_channel.mean().item() == pytest.approx(0.0 + 1.125, abs=0.03)
    zeros = noise(torch.zeros(4, 2000))[0]  # a = 0: the shift alone, U(-0.5, 0.5)
    assert zeros.abs().max() <= 0.5 and zeros.std().item() == pytest.approx(1 / 12**0.5, rel=0.1)
    assert not torch.equal(noise(a), noise(a))  # drawn anew at every step
    assert torch.equal(noise.eval()(a), a)  # identity at inference
    with pytest.raises(ValueError, match="bad noise ranges"):
        DistributionNoise(scale=(2.0, 1.0))


def test_noise_follows_santurkar_algorithm_1():
    """Per example: m ~ U(mu - 0.1, mu + 0.1) and s ~ N(sigma, 0.1^2) around the step's
    per-unit mu ~ U(-0.5, 0.5) and sigma ~ U(1, 1.25); a <- s a + m."""
    torch.manual_seed(0)
    noise = DistributionNoise(jitter=0.1).double()
    noise(torch.zeros(1, 4, dtype=torch.float64))  # one training step draws mu, sigma
    mu, sigma = noise._unit_draws
    assert (mu.abs() <= 0.5).all() and ((sigma >= 1) & (sigma <= 1.25)).all()
    with replayed_noise(noise):
        m = noise(torch.zeros(200_000, 4, dtype=torch.float64))  # a = 0: m alone
        s_plus_m = noise(torch.ones(200_000, 4, dtype=torch.float64))  # a = 1: s + m
    assert torch.equal(noise._unit_draws[0], mu)  # replay reuses the step's draws
    assert ((m - mu).abs() <= 0.1).all()  # uniform within +-0.1 of mu
    assert (m - mu).abs().max().item() == pytest.approx(0.1, abs=1e-3)
    assert (m - mu).std(0).mean().item() == pytest.approx(0.1 / 3**0.5, rel=0.02)
    assert s_plus_m.mean(0).tolist() == pytest.approx((sigma + mu).tolist(), abs=2e-3)
    # var(s + m) = 0.1^2 (s) + 0.1^2 / 3 (m)
    assert s_plus_m.var(0).mean().item() == pytest.approx(0.01 + 0.01 / 3, rel=0.03)
    fresh = noise(torch.zeros(1, 4, dtype=torch.float64))  # without replay: a new step
    assert not torch.equal(noise._unit_draws[0], mu) and fresh.shape == (1, 4)


def test_experiments_return_tidy_data_at_a_small_scale():
    sat = experiments.sigmoid_saturation(shifts=(0.0, 4.0))
    expected = sat.groupby("shift")["expected_grad"].first()
    assert expected[0.0] > expected[4.0] and expected[0.0] < 0.25
    fig1 = experiments.ioffe_figure1(
        steps=30, seeds=(0, 1), points=3, units=(0,), probe_examples=200
    )
    assert set(fig1["norm"]) == {"no BN", "BN"} and set(fig1["seed"]) == {0, 1}
    assert {"test accuracy", "test accuracy (batch statistics)", "p15", "p85"} <= set(
        fig1["metric"]
    )
    ics = experiments.ics_over_training(mlp_steps=10, linear_steps=10, points=2, depth=5)
    assert set(ics["network"]) == {"MLP", "deep linear"}
    assert ics.groupby("network")["layer"].nunique().to_dict() == {"MLP": 4, "deep linear": 5}
    noisy = experiments.noisy_bn(steps=20, points=2, units=(0,))
    assert set(noisy["variant"]) == set(experiments.NOISY_VARIANTS)
    # every figure draws from this real data
    figures.sigmoid_saturation(sat)
    figures.ioffe_figure1(fig1)
    figures.ics(ics, "MLP")
    figures.ics(ics, "deep linear")
    figures.noisy_bn(noisy)
    figures.percentiles_over_training(fig1[fig1["norm"] == "BN"])
    slider = interactive.percentiles_slider(
        experiments.ioffe_figure1(steps=10, seeds=(0,), points=2, units=(3, 8), probe_examples=100)
    )
    assert [step.label for step in slider.layout.sliders[0].steps] == ["3", "8"]
    plt.close("all")


def test_ioffe_figure1_rejects_a_layer_that_does_not_exist():
    with pytest.raises(ValueError, match="layer must be 1..3"):
        experiments.ioffe_figure1(steps=1, layer=4)


@pytest.mark.slow
def test_covariate_shift_explorer_runs():
    from matplotlib.figure import Figure

    from bnlib.widgets import covariate_shift_explorer

    explorer = covariate_shift_explorer()
    results = []
    compute = explorer.compute
    explorer.compute = lambda **values: results.append(compute(**values)) or results[-1]
    explorer.controls["steps"].value = 100
    explorer.controls["bn"].value = False
    explorer.controls["layer"].value = 1
    explorer.build()
    explorer.run()
    assert explorer.status.value == "" and isinstance(results[0], Figure)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"units": (100,)}, ValueError, r"units\[0\] must be in 0..99 \(a hidden layer has 100"),
        ({"units": (3, -1)}, ValueError, r"units\[1\] must be in 0..99"),
        ({"probe_examples": -3}, ValueError, "probe_examples must be in 2..60000, got -3"),
        ({"probe_examples": 0}, ValueError, "probe_examples must be in 2..60000, got 0"),
    ],
)
def test_ioffe_figure1_refuses_units_and_probes_it_cannot_measure(kwargs, error, message):
    """Issue 32's cases: unit 100 was an IndexError, unit -1 silently probed unit 99, and
    probe_examples=-3 probed 59,997 images (0 gave NaN)."""
    with pytest.raises(error, match=message):
        experiments.ioffe_figure1(steps=1, seeds=(0,), points=2, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"std": -1}, "std must be > 0, got -1"),
        ({"std": 0}, "std must be > 0, got 0"),
        ({"points": 1}, "points must be >= 2, got 1"),
    ],
)
def test_sigmoid_saturation_refuses_a_spread_or_grid_it_cannot_draw(kwargs, message):
    """Issue 32's case: negative densities (std=-1) and all NaN (std=0) were stored."""
    with pytest.raises(ValueError, match=message):
        experiments.sigmoid_saturation(**kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": -0.5}, {"lr": float("nan")}, {"linear_lr": 0.0}])
def test_ics_over_training_refuses_a_bad_rate_before_training(kwargs):
    from bnlib.experiments.covariate_shift import ics_over_training

    with pytest.raises((TypeError, ValueError), match="lr"):
        ics_over_training(mlp_steps=2, linear_steps=2, points=2, **kwargs)
