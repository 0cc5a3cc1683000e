"""bnlib.landscape: the probe along the gradient, BN's scale invariance and the
effective learning rate, on real tensors (float64 where exactness is checked)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlib.landscape import along_gradient, effective_lr, loss_and_gradient, unit_weight_norms
from bnlib.models import MLP, StackedLinear, stack_members
from bnlib.norm import BatchNorm


def _bn_mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return MLP(in_features=12, hidden=(16, 16), classes=4, activation="relu", norm="bnlib").to(
        dtype
    )


def _batch(dtype=torch.float64, n=32):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 12, generator=gen, dtype=dtype), torch.randint(0, 4, (n,), generator=gen)


def test_along_gradient_leaves_parameters_statistics_gradients_and_mode_exactly_as_they_were():
    model = _bn_mlp()
    x, y = _batch()
    model(x).sum().backward()  # a gradient already there must survive
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    along_gradient(model, x, y, [0.1, 1.0, 10.0])
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


def test_along_gradient_measures_the_loss_and_gradient_at_the_moved_point():
    model = _bn_mlp()
    x, y = _batch()
    loss, g = loss_and_gradient(model, x, y, nn.functional.cross_entropy)
    eta = 0.3
    (row,) = along_gradient(model, x, y, [eta])
    moved = _bn_mlp()
    with torch.no_grad():
        for p, d in zip(moved.parameters(), g):
            p -= eta * d
    loss_moved, g_moved = loss_and_gradient(moved, x, y, nn.functional.cross_entropy)
    g_norm = math.sqrt(sum(float(d.square().sum()) for d in g))
    change = math.sqrt(sum(float((a - b).square().sum()) for a, b in zip(g_moved, g)))
    assert row["loss_start"] == pytest.approx(loss, rel=1e-12)
    assert row["loss"] == pytest.approx(loss_moved, rel=1e-12)
    assert row["grad_norm"] == pytest.approx(g_norm, rel=1e-12)
    assert row["grad_change"] == pytest.approx(change, rel=1e-10)
    assert row["beta"] == pytest.approx(change / (eta * g_norm), rel=1e-10)


def test_a_tiny_step_changes_the_gradient_by_about_the_hessian_times_the_step():
    # beta is a finite-difference curvature: for a tiny step it tends to |H g| / |g|
    model = _bn_mlp()
    x, y = _batch()
    (a,) = along_gradient(model, x, y, [1e-6])
    (b,) = along_gradient(model, x, y, [2e-6])
    assert a["beta"] == pytest.approx(b["beta"], rel=1e-3)
    assert a["loss"] < a["loss_start"]  # a tiny step along -g lowers the loss


def test_along_gradient_rejects_non_positive_step_sizes():
    model = _bn_mlp()
    x, y = _batch()
    with pytest.raises(ValueError, match="step sizes must be > 0"):
        along_gradient(model, x, y, [0.1, 0.0])


def test_bn_is_invariant_to_the_weights_scale_and_their_gradient_scales_as_1_over_a():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(64, 30, generator=gen, dtype=torch.float64)
    w = torch.randn(8, 30, generator=gen, dtype=torch.float64)
    r = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    bn = BatchNorm(8, eps=0.0, dtype=torch.float64)
    outputs, grads = {}, {}
    for a in (1.0, 0.01, 100.0):
        weight = (a * w).requires_grad_()
        out = bn(u @ weight.T)
        (grads[a],) = torch.autograd.grad((out * r).sum(), weight)
        outputs[a] = out.detach()
    for a in (0.01, 100.0):
        torch.testing.assert_close(outputs[a], outputs[1.0], rtol=0, atol=1e-12)
        torch.testing.assert_close(a * grads[a], grads[1.0], rtol=1e-10, atol=1e-14)


def test_the_gradient_of_a_unit_followed_by_bn_is_orthogonal_to_its_weights():
    model = _bn_mlp()
    for bn in model.norms:
        bn.eps = 0.0  # exact invariance (BN's epsilon breaks it by about eps / variance)
    x, y = _batch()
    _, g = loss_and_gradient(model, x, y, nn.functional.cross_entropy)
    names = [n for n, _ in model.named_parameters()]
    for name, p, d in zip(names, model.parameters(), g):
        if name.startswith("linears."):  # every hidden unit is followed by BN
            cosines = (p.detach() * d).sum(1) / (p.detach().norm(dim=1) * d.norm(dim=1))
            assert cosines.abs().max() < 1e-10, name
        if name == "head.weight":  # the head is not followed by BN: no such orthogonality
            assert ((p * d).sum(1).abs() > 1e-6).any()


def test_plain_sgd_makes_the_weight_norm_grow_by_the_step_squared():
    # ||w - eta g||^2 = ||w||^2 + eta^2 ||g||^2 when g is orthogonal to w
    model = _bn_mlp()
    for bn in model.norms:
        bn.eps = 0.0
    x, y = _batch()
    _, g = loss_and_gradient(model, x, y, nn.functional.cross_entropy)
    w, d, eta = model.linears[0].weight.detach(), g[0], 0.5
    after = (w - eta * d).norm(dim=1).square()
    torch.testing.assert_close(after, w.norm(dim=1).square() + eta**2 * d.norm(dim=1).square())


def test_unit_weight_norms_of_a_single_and_a_stacked_layer_agree():
    torch.manual_seed(0)
    singles = [nn.Linear(5, 3) for _ in range(2)]
    stacked = StackedLinear(2, 5, 3)
    with torch.no_grad():
        stacked.weight.copy_(torch.stack([s.weight for s in singles]))
    got = unit_weight_norms(stacked, members=2)
    assert got.shape == (2, 3)
    for k, s in enumerate(singles):
        torch.testing.assert_close(got[k], s.weight.double().norm(dim=1))
        torch.testing.assert_close(unit_weight_norms(s)[0], s.weight.double().norm(dim=1))
    conv = nn.Conv2d(2, 4, 3)
    assert unit_weight_norms(conv).shape == (1, 4)
    mlp = stack_members([MLP(in_features=5, hidden=(3,), norm="torch") for _ in range(2)])
    assert unit_weight_norms(mlp.linears[0], members=2).shape == (2, 3)


def test_effective_lr_is_the_learning_rate_over_the_squared_norm():
    norms = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(effective_lr(0.1, norms), torch.tensor([0.4, 0.1, 0.025]).double())
