"""bnlib.normalizers: l_p normalization and swapping it in for BN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlib.models import VGG
from bnlib.norm import swap_batch_norms
from bnlib.normalizers import LP_NORMS, LpNorm


@pytest.mark.parametrize("p", list(LP_NORMS.values()))
def test_lp_norm_centres_each_channel_and_fixes_the_layers_average_lp_norm(p):
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.randn(16, 3, 4, 4, generator=gen, dtype=torch.float64)
        * torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
        + 3.0
    )
    layer = LpNorm(3, p, eps=0.0).double()
    y = layer(x).detach()
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64))
    d = 3 * 4 * 4
    per_example = torch.linalg.vector_norm(y.flatten(1), ord=p, dim=1)
    scale = 1.0 if math.isinf(p) else d ** (1 / p)
    assert float(per_example.mean() / scale) == pytest.approx(1.0, rel=1e-12)
    # one scale for the whole layer: the channels keep their relative sizes (unlike BN)
    stds = y.std((0, 2, 3))
    assert float(stds[1] / stds[2]) == pytest.approx(
        float(x.std((0, 2, 3))[1] / x.std((0, 2, 3))[2])
    )


def test_lp_norm_uses_its_running_statistics_in_eval_mode():
    gen = torch.Generator().manual_seed(0)
    layer = LpNorm(4, 1.0, momentum=1.0).double()
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64) + 2.0
    train_out = layer(x)
    layer.eval()
    torch.testing.assert_close(layer(x), train_out)  # momentum 1: the last batch's statistics
    one = layer(x[:1])  # a single example: no batch statistics needed
    torch.testing.assert_close(one, train_out[:1])


def test_lp_norm_rejects_bad_p_and_bad_input():
    with pytest.raises(ValueError, match="p must be 1, 2 or math.inf"):
        LpNorm(3, 3.0)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\)"):
        LpNorm(3, 1.0)(torch.randn(4, 5))


def test_swap_batch_norms_puts_lp_norms_in_every_bn_layer_and_refuses_a_model_without_one():
    model = VGG(widths=(4, 8), convs=1, norm="torch")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert swap_batch_norms(model, lambda bn: LpNorm(bn.num_features, 2.0)) == 2
    lps = [m for m in model.modules() if isinstance(m, LpNorm)]
    assert [m.num_features for m in lps] == [m.num_features for m in bns] and len(lps) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    with pytest.raises(ValueError, match="no BN layer"):
        swap_batch_norms(VGG(widths=(4,), convs=1, norm="none"), lambda bn: LpNorm(4, 1.0))
