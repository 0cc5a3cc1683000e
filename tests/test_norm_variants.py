"""BN's variants and alternatives (bnlib.norm_variants), checked in float64."""

import pytest
import torch
from torch import nn

from bnlib.norm_variants import (
    BatchRenorm,
    ExampleWeightedBatchNorm,
    GhostBatchNorm,
    ghost_from,
    group_norm,
    renorm_from,
    swap_batch_norms,
)


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1


def test_renorm_is_bn_before_the_limits_relax():
    x = _x(16, 6, 5, 5)
    bn = nn.BatchNorm2d(6).double()
    renorm = renorm_from(bn, relax_from=5, r_max_at=10, d_max_at=10).double()
    assert renorm.limits() == (1.0, 0.0)
    torch.testing.assert_close(renorm(x), bn(x))
    assert renorm.weight is bn.weight and renorm.bias is bn.bias


def test_renorm_limits_follow_the_schedule():
    layer = BatchRenorm(3, relax_from=10, r_max_at=30, d_max_at=20)
    for step, expected in [(0, (1, 0)), (10, (1, 0)), (20, (2, 5)), (30, (3, 5)), (99, (3, 5))]:
        layer.num_batches_tracked.fill_(step)
        assert layer.limits() == pytest.approx(expected)


def test_renorm_training_equals_inference_when_unclipped():
    """With the running statistics equal to the batch's, r = 1 and d = 0: training
    computes exactly what eval mode computes (the point of renormalization)."""
    x = _x(8, 4)
    layer = BatchRenorm(4, relax_from=0, r_max_at=1, d_max_at=1, momentum=0.0).double()
    layer.num_batches_tracked.fill_(5)  # limits fully relaxed
    layer.running_mean.copy_(x.mean(0))
    layer.running_std.copy_((x.var(0, unbiased=False) + layer.eps).sqrt())
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    trained = layer(x)
    layer.eval()
    torch.testing.assert_close(trained, layer(x))


def test_renorm_corrections_are_clipped_and_constant_for_the_gradient():
    x = _x(32, 3).requires_grad_()
    layer = BatchRenorm(3, relax_from=0, r_max_at=1, d_max_at=1, r_max=2, d_max=0.5).double()
    layer.num_batches_tracked.fill_(1)
    layer.running_mean.fill_(100.0)  # far below... the batch: d clipped to -0.5
    layer.running_std.fill_(1e-3)  # far smaller than the batch's: r clipped to 2
    y = layer(x)
    mean, std = x.mean(0), (x.var(0, unbiased=False) + layer.eps).sqrt()
    x_hat = (x - mean) / std
    torch.testing.assert_close(y, x_hat * 2 - 0.5)
    (g,) = torch.autograd.grad((y * _x(32, 3, seed=1)).sum(), x)
    (g_bn,) = torch.autograd.grad((x_hat * 2 * _x(32, 3, seed=1)).sum(), x)
    torch.testing.assert_close(g, g_bn)


def test_renorm_running_statistics_update():
    x = _x(64, 2)
    layer = BatchRenorm(2, momentum=0.5).double()
    layer(x)
    torch.testing.assert_close(layer.running_mean, 0.5 * x.mean(0))
    std = (x.var(0, unbiased=False) + layer.eps).sqrt()
    torch.testing.assert_close(layer.running_std, 0.5 + 0.5 * std)
    assert int(layer.num_batches_tracked) == 1


def test_ghost_batches_are_normalized_separately():
    x = _x(10, 3, 4, 4)
    ghost = ghost_from(nn.BatchNorm2d(3).double(), ghost_size=4).double()
    expected = torch.cat(
        [nn.functional.batch_norm(c, None, None, training=True) for c in x.split(4)]
    )
    torch.testing.assert_close(ghost(x), expected)
    # three ghost batches, three updates of the running mean (momentum 0.1)
    mean = torch.zeros(3, dtype=torch.float64)
    for c in x.split(4):
        mean = 0.9 * mean + 0.1 * c.mean((0, 2, 3))
    torch.testing.assert_close(ghost.running_mean, mean)


def test_ghost_of_the_whole_batch_is_bn_and_eval_is_bn_eval():
    x = _x(8, 5)
    bn = nn.BatchNorm1d(5).double()
    ghost = GhostBatchNorm(5, ghost_size=8).double()
    torch.testing.assert_close(ghost(x), bn(x))
    ghost.eval(), bn.eval()
    torch.testing.assert_close(ghost(x), bn(x))


def test_ghost_in_the_stacked_fully_connected_layout_splits_the_last_axis():
    x = _x(12, 6)  # (N, C)
    ghost = GhostBatchNorm(6, ghost_size=4).double()
    stacked = ghost(x.t().unsqueeze(0))  # (1, C, N): the batch is the last axis
    ghost2 = GhostBatchNorm(6, ghost_size=4).double()
    torch.testing.assert_close(stacked[0].t(), ghost2(x))


def test_group_norm_shares_parameters_and_keeps_stacked_models_apart():
    members, channels = 3, 8
    bn = nn.BatchNorm2d(members * channels).double()
    layer = group_norm(bn, groups=2, members=members).double()
    assert layer.weight is bn.weight and layer.num_groups == members * 2
    x = _x(5, members * channels, 3, 3)
    out = layer(x)
    for k in range(members):
        part = x[:, k * channels : (k + 1) * channels]
        torch.testing.assert_close(
            out[:, k * channels : (k + 1) * channels], nn.functional.group_norm(part, 2)
        )
    layer_norm = group_norm(nn.BatchNorm2d(channels).double(), groups=1)
    y = layer_norm(x[:, :channels])
    flat = x[:, :channels].flatten(1)
    expected = (flat - flat.mean(1, keepdim=True)) / (
        flat.var(1, unbiased=False, keepdim=True) + 1e-5
    ).sqrt()
    torch.testing.assert_close(y.flatten(1), expected)
    with pytest.raises(ValueError, match="divide"):
        group_norm(nn.BatchNorm2d(6), groups=4)


@pytest.mark.parametrize("shape", [(1, 4, 5, 5), (1, 4)])
def test_example_weighted_bn_is_bn_of_the_example_with_a_population_batch(shape):
    """Population statistics equal to those of B - 1 real examples: normalizing one
    example with them included is train-mode BN over the example and those examples."""
    b = 6
    others = _x(b - 1, *shape[1:], seed=1)
    example = _x(*shape, seed=2)
    bn = nn.BatchNorm2d(4) if len(shape) == 4 else nn.BatchNorm1d(4)
    bn = bn.double()
    dims = (0, 2, 3) if len(shape) == 4 else (0,)
    with torch.no_grad():
        bn.running_mean.copy_(others.mean(dims))
        bn.running_var.copy_(others.var(dims, unbiased=False))
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    weighted = ExampleWeightedBatchNorm(bn, batch_size=b)(example)
    batch = torch.cat([example, others])
    expected = nn.functional.batch_norm(batch, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    torch.testing.assert_close(weighted, expected[:1])


def test_example_weighted_bn_of_a_large_batch_is_eval_bn():
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x = _x(3, 4, 5, 5)
    far = ExampleWeightedBatchNorm(bn, batch_size=10**9)(x)
    torch.testing.assert_close(far, bn(x), rtol=1e-6, atol=1e-6)


def test_swap_keeps_the_optimizer_training_the_new_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert swap_batch_norms(model, lambda bn: group_norm(bn, 2)) == 1
    assert isinstance(model[1], nn.GroupNorm)
    before = model[1].weight.detach().clone()
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(model[1].weight, before)
    with pytest.raises(ValueError, match="no BN layer"):
        swap_batch_norms(model, lambda bn: bn)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="r_max"):
        BatchRenorm(3, r_max=0.5)
    with pytest.raises(ValueError, match="relax_from"):
        BatchRenorm(3, relax_from=10, r_max_at=5, d_max_at=20)
    with pytest.raises(ValueError, match="ghost_size"):
        GhostBatchNorm(3, ghost_size=1)
    with pytest.raises(ValueError, match="input"):
        BatchRenorm(3)(torch.zeros(3))
