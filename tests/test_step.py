"""bnlib.step: one gradient step, measured on real networks and real data (float64)."""

from __future__ import annotations

import pytest
import torch

from bnlib import data, models
from bnlib.step import channel_statistics, gradient, moved, output_gradients, relative_losses


@pytest.fixture(scope="module")
def batch():
    split = data.load("fashion-mnist", "train")
    return split.x[:32].double(), split.y[:32]


def _resnet(norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.ResNet(depth=8, norm=norm, init="he", gain=2**0.5).double()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("norm", ["none", "torch"])
def test_probes_leave_parameters_buffers_and_mode_exactly_as_they_were(batch, norm):
    model = _resnet(norm).eval()
    before = _state(model)
    relative_losses(model, *batch, [1e-3, 1.0, 1e3])
    channel_statistics(model, batch[0], {"stem": model.stem_act})
    output_gradients(model, *batch)
    after = _state(model)
    assert not model.training
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats too


def test_moved_goes_a_fraction_of_the_step_and_comes_back(batch):
    model = _resnet("torch")
    _, g = gradient(model, *batch)
    start = [p.detach().clone() for p in model.parameters()]
    with moved(model, g, 0.0):
        assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))
    with moved(model, g, -0.5):
        for p, s, d in zip(model.parameters(), start, g):
            torch.testing.assert_close(p.detach(), s - 0.5 * d)
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))


def test_relative_loss_of_a_tiny_step_follows_the_first_order_term(batch):
    """L(theta - eta g) / L(theta) = 1 - eta |g|^2 / L + O(eta^2)."""
    model = _resnet("torch")
    loss, g = gradient(model, *batch)
    squared = sum(float((d * d).sum()) for d in g)
    eta = 1e-6
    before, (ratio,) = relative_losses(model, *batch, [eta])
    assert before == pytest.approx(loss)
    assert (1 - ratio) / eta == pytest.approx(squared / loss, rel=1e-3)


def test_a_huge_step_diverges_without_bn(batch):
    _, ratios = relative_losses(_resnet("none"), *batch, [1e-6, 1e3])
    assert ratios[0] == pytest.approx(1, abs=1e-3) and ratios[1] > 1e3


def test_channel_statistics_match_a_direct_computation(batch):
    model = _resnet("none")
    stats = channel_statistics(model, batch[0], {"first block": model.blocks[0]})
    with torch.no_grad():
        out = model.blocks[0](model.stem_act(model.stem_norm(model.stem(batch[0]))))
    means, variances = stats["first block"]
    torch.testing.assert_close(means, out.mean((0, 2, 3)))
    torch.testing.assert_close(variances, out.var((0, 2, 3), unbiased=False))


def test_output_gradients_are_softmax_minus_onehot(batch):
    model = _resnet("torch")
    grads = output_gradients(model, *batch)
    assert grads.shape == (32, 10)
    torch.testing.assert_close(grads.sum(1), torch.zeros(32, dtype=torch.float64))
    assert (grads[torch.arange(32), batch[1]] < 0).all()


def test_step_sizes_must_be_positive(batch):
    with pytest.raises(ValueError, match="step sizes must be > 0"):
        relative_losses(_resnet("none"), *batch, [0.1, 0.0])
