"""bnlib.spectra: random matrix theory against simulation, and networks' Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bnlib import spectra
from bnlib.models import MLP


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_largest_singular_value_of_a_gaussian_product_is_near_the_theoretical_edge(depth):
    """At N = 500 the largest singular value is within 5% of sqrt((L+1)^(L+1) / L^L)."""
    values = spectra.gaussian_product_singular_values(500, depth, draws=2, seed=0)
    assert values.shape == (2, 500)
    assert np.all(np.diff(values, axis=1) <= 0), "each row is sorted in descending order"
    edge = spectra.product_edge(depth)
    assert abs(values.max(axis=1) / edge - 1).max() < 0.05


def test_one_gaussian_matrix_follows_the_quarter_circle_law():
    """At N = 500 (4 draws) the empirical distribution is within 0.02 (Kolmogorov
    distance) of the quarter-circle law, and its mean square is 1 within 1%."""
    values = np.sort(spectra.gaussian_product_singular_values(500, 1, draws=4).ravel())
    empirical = np.arange(1, len(values) + 1) / len(values)
    assert np.abs(empirical - spectra.quarter_circle_cdf(values)).max() < 0.02
    assert abs((values**2).mean() - 1) < 0.01
    summary = spectra.singular_value_summary(values)
    assert summary["fraction_small"] == pytest.approx(spectra.quarter_circle_cdf(0.1), abs=0.01)


def test_quarter_circle_density_integrates_to_its_cdf():
    s = np.linspace(0, 2, 20_001)
    integral = np.trapezoid(spectra.quarter_circle_density(s), s)
    assert integral == pytest.approx(1.0, abs=1e-6)
    assert spectra.quarter_circle_cdf(2.0) == pytest.approx(1.0)
    assert spectra.quarter_circle_density(-0.1) == 0 and spectra.quarter_circle_density(2.1) == 0


def test_product_edge_values_and_bad_input():
    assert [round(spectra.product_edge(d), 2) for d in (1, 3, 5)] == [2.0, 3.08, 3.86]
    with pytest.raises(ValueError, match="depth"):
        spectra.product_edge(0)
    with pytest.raises(ValueError, match="n must be a whole number"):
        spectra.gaussian_product_singular_values(0, 1)


def test_the_product_extends_by_one_matrix_per_depth_with_the_same_seed():
    """The same seed draws the same first matrices: L = 2 is W2 W1 with the W1 of L = 1."""
    generator = torch.Generator().manual_seed(3)
    w1 = torch.randn(20, 20, generator=generator, dtype=torch.float64) / math.sqrt(20)
    w2 = torch.randn(20, 20, generator=generator, dtype=torch.float64) / math.sqrt(20)
    expected = torch.linalg.svdvals(w2 @ w1).numpy()
    np.testing.assert_allclose(spectra.gaussian_product_singular_values(20, 2, seed=3)[0], expected)


def _net(norm: str) -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=(12, 12, 12), activation="tanh", norm=norm, init="he").double()


@pytest.mark.parametrize("norm", ["none", "torch", "bnlib"])
def test_hidden_jacobians_match_autograd(norm):
    """The vmapped Jacobian of hidden layers 1..2 equals torch.autograd's, example by
    example, with BN's statistics those of the batch (in float64)."""
    model = _net(norm)
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    with spectra.frozen_batch_statistics(model, x):
        h = spectra.hidden_states(model, x)
        jac = spectra.hidden_jacobians(model, h[1], 1, 3)

        def layers(one):
            out = one.unsqueeze(0)
            for i in (1, 2):
                out = model.activations[i](model.norms[i](model.linears[i](out)))
            return out.squeeze(0)

        for e in (0, 7):
            reference = torch.autograd.functional.jacobian(layers, h[1][e])
            torch.testing.assert_close(jac[e], reference, rtol=1e-10, atol=1e-12)
    assert jac.shape == (16, 12, 12)


def test_frozen_batch_statistics_reproduce_train_mode_and_restore_the_model():
    model = _net("torch")
    x = torch.randn(32, 1, 28, 28, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        train_mode = model.train()(x)
    model.load_state_dict(before)
    with spectra.frozen_batch_statistics(model, x):
        assert not model.training
        with torch.no_grad():
            frozen = model(x)
            one = model(x[:1])  # no longer depends on the rest of the batch
    torch.testing.assert_close(frozen, train_mode, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(one, frozen[:1], rtol=1e-10, atol=1e-12)
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_hidden_jacobians_refuse_train_mode_with_bn_and_bad_layers():
    model = _net("torch").train()
    h = torch.randn(4, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="mixes the examples"):
        spectra.hidden_jacobians(model, h, 1, 2)
    with pytest.raises(ValueError, match="0 <= start < stop"):
        spectra.hidden_jacobians(model.eval(), h, 2, 2)


def test_layer_jacobians_of_residual_blocks_match_autograd():
    from bnlib.residual import ResidualMLP

    torch.manual_seed(0)
    model = ResidualMLP(width=10, blocks=2, norm="torch").double()
    x = torch.randn(16, 784, dtype=torch.float64)
    with spectra.frozen_batch_statistics(model, x):
        with torch.no_grad():
            h = model.stem(x)
        jac = spectra.layer_jacobians(model, list(model.blocks), h[:3])

        def blocks(one):
            return model.blocks[1](model.blocks[0](one.unsqueeze(0))).squeeze(0)

        reference = torch.autograd.functional.jacobian(blocks, h[2])
    torch.testing.assert_close(jac[2], reference, rtol=1e-10, atol=1e-12)
